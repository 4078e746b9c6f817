"""``python -m trainer registry``: list versions and their figures, show one, roll back."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from streamer.bundle import Registry
from streamer.cliutil import EnvFlags
from streamer.errors import BundleError
from trainer.exits import EPILOG, OK
from trainer.registry import manifest_of, read_decisions, rollback

_COLUMNS = (
    ("", "current", 1),
    ("VERSION", "version", 30),
    ("CREATED", "created", 16),
    ("MODEL", "model", 5),
    ("RECALL", "event_recall", 6),
    ("FA/DAY", "false_alarm_episodes_per_day", 6),
    ("ROC AUC", "roc_auc", 7),
    ("TRAINED ON", "data", 23),
    ("DECISION", "decision", 0),
)


def add_registry_command(commands: Any, environ: Mapping[str, str], prefix: str) -> None:
    """The ``registry`` subcommand with its ``list``, ``show`` and ``rollback`` actions."""
    parser = commands.add_parser(
        "registry",
        help="list bundle versions and which is current, show one, or roll back",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    flags = EnvFlags(parser, environ, prefix)
    flags.add("--registry", type=Path, default=Path("registry"), help="registry folder")
    flags.add("--json", action="store_true", help="print JSON instead of text")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("list", help="every version with its test figures; * marks the current")
    show = actions.add_parser("show", help="one version's figures and the decisions about it")
    show.add_argument("version", help="version name (a folder of the registry)")
    back = actions.add_parser(
        "rollback",
        help="make the previous current version current again (from decisions.jsonl)",
    )
    back.add_argument("--to", help="make this version current instead")


def run_registry(args: argparse.Namespace) -> int:
    """Carry out one registry action and print its result."""
    registry = Registry(args.registry)
    if args.action == "list":
        rows = version_rows(registry)
        print(json.dumps(rows) if args.json else _table(rows, registry))
    elif args.action == "show":
        decisions = [d for d in read_decisions(registry) if args.version in _named(d)]
        manifest = manifest_of(registry, args.version)
        shown = {"manifest": manifest, "decisions": decisions}
        print(json.dumps(shown) if args.json else _show(manifest, decisions))
    else:
        record = rollback(registry, args.to)
        print(
            json.dumps(record)
            if args.json
            else f"CURRENT: {record['previous']} -> {record['current']}"
        )
    return OK


def version_rows(registry: Registry) -> list[dict[str, Any]]:
    """One row per version: when, what, its test figures, and the last decision about it."""
    current = registry.current()
    last: dict[str, str] = {}
    for record in read_decisions(registry):
        last[str(record.get("candidate"))] = str(record.get("outcome"))
    rows = []
    for version in registry.versions():
        row: dict[str, Any] = {"current": version == current, "version": version}
        try:
            manifest = manifest_of(registry, version)
        except BundleError as exc:
            rows.append({**row, "error": str(exc)})
            continue
        test = manifest.get("metrics", {}).get("test", {})
        data = manifest.get("data", {})
        row.update(
            created=str(manifest.get("created_at", ""))[:16].replace("T", " "),
            model=manifest.get("model", {}).get("kind"),
            **{k: test.get(k) for k in ("event_recall", "false_alarm_episodes_per_day", "roc_auc")},
            data=f"{str(data.get('from', ''))[:10]}..{str(data.get('to', ''))[:10]}",
            decision=last.get(version, ""),
        )
        rows.append(row)
    return rows


def _named(record: Mapping[str, Any]) -> tuple[Any, ...]:
    return record.get("candidate"), record.get("previous"), record.get("current")


def _cell(value: Any) -> str:
    if value is True:
        return "*"
    if value is None or value is False:
        return "" if value is False else "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _table(rows: list[dict[str, Any]], registry: Registry) -> str:
    if not rows:
        return f"registry {registry.root} holds no versions"
    lines = [" ".join(title.ljust(width) for title, _, width in _COLUMNS).rstrip()]
    for row in rows:
        if "error" in row:
            lines.append(f"{_cell(row['current'])} {row['version']}  {row['error']}")
            continue
        cells = (_cell(row.get(key)).ljust(width) for _, key, width in _COLUMNS)
        lines.append(" ".join(cells).rstrip())
    return "\n".join(lines)


def _threshold(section: Mapping[str, Any]) -> str:
    adaptive = section.get("adaptive")
    if isinstance(adaptive, Mapping):
        return (
            f"adaptive per machine, rate {adaptive.get('rate')} over {adaptive.get('minutes')} "
            f"minutes (fallback {section.get('value')})"
        )
    return str(section.get("value"))


def _show(manifest: Mapping[str, Any], decisions: list[dict[str, Any]]) -> str:
    test = manifest.get("metrics", {}).get("test", {})
    data = manifest.get("data", {})
    lines = [
        f"version:   {manifest.get('version')} ({manifest.get('model', {}).get('kind')}), "
        f"created {manifest.get('created_at')}",
        f"data:      {data.get('rows')} rows, {data.get('machines')} machine(s), "
        f"{data.get('from')} to {data.get('to')}, {data.get('breaks')} breaks",
        f"test:      {test.get('breaks_warned')} of {test.get('breaks')} breaks warned, "
        f"{test.get('false_alarm_episodes_per_day')} false alarms/day, "
        f"ROC AUC {test.get('roc_auc')}",
        f"threshold: {_threshold(manifest.get('threshold', {}))}",
    ]
    for record in decisions:
        lines.append(
            f"{record.get('at')}  {record.get('outcome')}: {record.get('previous')} -> "
            f"{record.get('current')} ({record.get('reason')})"
        )
    return "\n".join(lines)
