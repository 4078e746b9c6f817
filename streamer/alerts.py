"""Alert messages for the ``breaks`` topic: deterministic ids and the contract's fields."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from streamer.episodes import Transition

TOP_SENSORS = 3
# The keys DESIGN.md's alert contract requires of every alert message.
CONTRACT_FIELDS = frozenset(
    (
        "alert_id",
        "episode_id",
        "status",
        "machine_id",
        "ts",
        "emitted_at",
        "score",
        "threshold",
        "severity",
        "top_sensors",
        "model_version",
        "horizon_minutes",
    )
)


def describe(alert: dict[str, Any]) -> str:
    """An alert in one line, as an operator reads it."""
    head = (
        f"[{alert['status'].upper():8}] {alert['machine_id']} at {alert['ts']}: "
        f"{alert['severity']}, score {alert['score']:.3g} / threshold {alert['threshold']:.3g}"
    )
    if alert["status"] == "resolved":
        return f"{head} - episode over ({alert.get('reason', '')})"
    sensors = ", ".join(
        f"{s['sensor']} {s['observed']:.3g} (expected {s['expected']:.3g})"
        for s in alert.get("top_sensors", [])
    )
    low, high = alert.get("warning_window_minutes") or (0.0, alert["horizon_minutes"])
    return f"{head} - sheet break likely in the next {low:g}-{high:g} min; {sensors}"


def episode_id(machine_id: str, started_ms: int) -> str:
    """Same machine and start time, same episode id: replays and retries agree."""
    return hashlib.sha256(f"{machine_id}|{started_ms}".encode()).hexdigest()[:20]


def alert_id(machine_id: str, transition: Transition) -> str:
    """Deterministic id of one published episode event; the consumers' dedup key."""
    text = f"{machine_id}|{transition.started_ms}|{transition.status}|{transition.sequence}"
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def iso(ms: int) -> str:
    """RFC 3339 text in UTC with milliseconds."""
    stamp = dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def top_sensors(
    errors: np.ndarray,
    observed: np.ndarray,
    expected: np.ndarray,
    names: Sequence[str],
    count: int = TOP_SENSORS,
) -> list[dict[str, Any]]:
    """The sensors with the largest share of the squared error, observed against expected."""
    total = float(errors.sum()) or 1.0
    order = np.argsort(errors)[::-1][:count]
    return [
        {
            "sensor": names[i],
            "share": round(float(errors[i]) / total, 4),
            "observed": round(float(observed[i]), 6),
            "expected": round(float(expected[i]), 6),
        }
        for i in order
    ]


def alert_message(
    machine_id: str,
    transition: Transition,
    row_ms: int,
    emitted_ms: int,
    score: float,
    threshold: float,
    sensors: list[dict[str, Any]],
    model_version: str,
    horizon_minutes: float,
    warning_minutes: tuple[float, float] = (2.0, 20.0),
) -> dict[str, Any]:
    """The alert value: the contract's fields, the episode's reason, and the lead window the
    model was judged on (``horizon_minutes`` is only how far ahead its labels reached)."""
    message = {
        "alert_id": alert_id(machine_id, transition),
        "episode_id": episode_id(machine_id, transition.started_ms),
        "status": transition.status,
        "machine_id": machine_id,
        "ts": iso(row_ms),
        "episode_started_at": iso(transition.started_ms),
        "emitted_at": iso(emitted_ms),
        "score": round(float(score), 6),
        "peak_score": round(float(transition.peak), 6),
        "threshold": round(float(threshold), 6),
        "severity": transition.severity,
        "top_sensors": sensors,
        "model_version": model_version,
        "horizon_minutes": horizon_minutes,
        "warning_window_minutes": list(warning_minutes),
    }
    if transition.reason:
        message["reason"] = transition.reason
    return message
