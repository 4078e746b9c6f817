"""The registry's decision log: every move of ``CURRENT``, why, and the figures behind it."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from collections.abc import Mapping
from typing import Any

from streamer.bundle import MANIFEST_FILE, Registry
from streamer.errors import BundleError

log = logging.getLogger(__name__)

DECISIONS_FILE = "decisions.jsonl"
MOVED = ("first", "promoted", "forced", "rolled back")


def append_decision(registry: Registry, record: Mapping[str, Any]) -> dict[str, Any]:
    """Add one JSON line to the log, synced; one short append write is atomic on POSIX."""
    line = {"at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), **record}
    data = (json.dumps(line, separators=(",", ":")) + "\n").encode("utf-8")
    registry.root.mkdir(parents=True, exist_ok=True)
    fd = os.open(registry.root / DECISIONS_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    return line


def read_decisions(registry: Registry) -> list[dict[str, Any]]:
    """Every recorded decision, oldest first; a torn last line (a crash mid-write) is skipped."""
    path = registry.root / DECISIONS_FILE
    if not path.is_file():
        return []
    out = []
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            out.append(json.loads(text))
        except json.JSONDecodeError:
            log.warning("%s line %d is not JSON; skipped", path, number)
    return out


def move_current(registry: Registry, record: Mapping[str, Any]) -> dict[str, Any]:
    """Point ``CURRENT`` at ``record['current']`` when the outcome moves it, then log it."""
    if record["outcome"] in MOVED:
        registry.set_current(str(record["current"]))
    return append_decision(registry, record)


def record_promotion(
    registry: Registry, version: str, verdict: Mapping[str, Any] | None, force: bool
) -> dict[str, Any] | None:
    """Move ``CURRENT`` as the guard's verdict (or ``--force``) says and log it; None when no
    promotion was asked and the registry already has a current model."""
    previous = registry.current()
    if verdict is None:
        if previous is not None:
            return None
        verdict = {"accepted": True, "reason": "the registry has no current model"}
    fields = dict(verdict)
    accepted = bool(fields.pop("accepted"))
    if previous is None:
        outcome = "first"
    elif accepted:
        outcome = "promoted"
    else:
        outcome = "forced" if force else "refused"
    if outcome == "forced":
        log.warning(
            "promoting %s by --force although the guard refused it: %s", version, fields["reason"]
        )
    elif outcome == "refused":
        log.warning(
            "candidate %s refused, %s stays current: %s", version, previous, fields["reason"]
        )
    record = {
        "action": "promote",
        "outcome": outcome,
        "candidate": version,
        "previous": previous,
        "current": previous if outcome == "refused" else version,
        "forced": force,
        "guard_accepted": accepted,
        **fields,
    }
    return move_current(registry, record)


def rollback_target(registry: Registry, decisions: list[dict[str, Any]]) -> str:
    """The newest earlier current version that was not rolled away from and still exists."""
    current = registry.current()
    versions = set(registry.versions())
    rejected: set[str] = set()
    # Newest first: a version counts as rejected once a later rollback moved away from it.
    for record in reversed(decisions):
        version = record.get("current")
        moved = record.get("outcome") in MOVED
        if moved and version not in (current, None, *rejected) and version in versions:
            return str(version)
        if record.get("outcome") == "rolled back":
            rejected.add(str(record.get("previous")))
    raise BundleError(
        f"registry {registry.root}: no earlier current version to roll back to from "
        f"{current}; name one with --to"
    )


def rollback(registry: Registry, to: str | None = None) -> dict[str, Any]:
    """Make an earlier version current again (the previous one, or ``to``) and log it."""
    current = registry.current()
    target = to or rollback_target(registry, read_decisions(registry))
    if target not in registry.versions():
        raise BundleError(f"registry {registry.root} has no complete version {target!r}")
    if target == current:
        raise BundleError(f"{target} is already the current version")
    record = {
        "action": "rollback",
        "outcome": "rolled back",
        "candidate": target,
        "previous": current,
        "current": target,
        "forced": False,
        "reason": "named with --to" if to else "the previous current version",
    }
    log.warning("rolling back from %s to %s", current, target)
    return move_current(registry, record)


def manifest_of(registry: Registry, version: str) -> dict[str, Any]:
    """A version's manifest; a clear error for an unknown or unreadable one."""
    path = registry.root / version / MANIFEST_FILE
    try:
        manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise BundleError(f"registry {registry.root} has no version {version!r}") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path}: unreadable manifest ({exc})") from exc
    return manifest
