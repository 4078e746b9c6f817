"""Each machine's adaptive-threshold state, kept in Kafka so a rebuilt streamer resumes it.

A machine's threshold depends on a day or more of its scores, far more than a rebuild
replays. So the streamer writes the state (the decayed histogram and its time) to a state
topic every ``checkpoint_minutes`` of the machine's rows, keyed by machine, on the
partition of the machine's rows, in the same transaction as the batch's alerts and
offsets. A rebuild reads the partition's newest state of each machine that lies before
the committed offset, and replays the rows from there: each machine ends with exactly the
state an uninterrupted streamer has.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import orjson

from streamer.calibrate import Calibration, CalibrationState
from streamer.episodes import EpisodeState

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Checkpoint:
    """A machine's state as of its input row at ``offset`` (that row included), at
    ``ts_ms``: its adaptive threshold's histogram, and its episode with the threshold its
    latest scored row met (None in records written before they were kept)."""

    machine: str
    offset: int
    version: str
    state: CalibrationState
    ts_ms: int = -1
    episode: EpisodeState | None = None
    threshold: float = math.nan


def encode(checkpoint: Checkpoint) -> bytes:
    """The state record's value."""
    return orjson.dumps(
        {
            "machine_id": checkpoint.machine,
            "offset": checkpoint.offset,
            "model_version": checkpoint.version,
            "minutes": checkpoint.state.last_minutes,
            "counts": checkpoint.state.counts,
            "ts": checkpoint.ts_ms,
            "episode": None if checkpoint.episode is None else _episode(checkpoint.episode),
            "threshold": None if math.isnan(checkpoint.threshold) else checkpoint.threshold,
        },
        option=orjson.OPT_SERIALIZE_NUMPY,
    )


def decode(value: bytes | None) -> Checkpoint | None:
    """A state record, or None for one this code cannot read (it is then ignored)."""
    try:
        data = orjson.loads(value or b"")
        counts = np.asarray(data["counts"], dtype=np.float64)
        episode = data.get("episode")
        threshold = data.get("threshold")
        checkpoint = Checkpoint(
            str(data["machine_id"]),
            int(data["offset"]),
            str(data["model_version"]),
            CalibrationState(counts, float(data["minutes"])),
            int(data.get("ts", -1)),
            None if episode is None else EpisodeState(**episode),
            math.nan if threshold is None else float(threshold),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
    if counts.ndim != 1 or not (np.isfinite(counts).all() and (counts >= 0).all()):
        return None
    if not math.isfinite(checkpoint.state.last_minutes):
        return None
    return checkpoint


def _episode(episode: EpisodeState) -> dict[str, object]:
    return {
        "started_ms": episode.started_ms,
        "below": episode.below,
        "events": episode.events,
        "severity": episode.severity,
        "peak": episode.peak,
    }


def newest(
    values: Iterable[bytes | None],
    before: int,
    version: str,
    calibration: Calibration,
    since_minutes: float,
) -> dict[str, Checkpoint]:
    """Per machine, the newest usable state: of this model version and histogram size,
    for a row before offset ``before`` (later ones belong to uncommitted batches), and
    not older than ``since_minutes`` (a bound on how far back a rebuild reads; whether the
    machine was idle is decided by its windows at its next row, as an uninterrupted
    streamer decides it)."""
    out: dict[str, Checkpoint] = {}
    skipped = 0
    for value in values:
        checkpoint = decode(value)
        if checkpoint is None:
            skipped += 1
            continue
        usable = (
            checkpoint.version == version
            and checkpoint.offset < before
            and checkpoint.state.counts.shape == (calibration.bins,)
            and checkpoint.state.last_minutes >= since_minutes
        )
        if not usable:
            continue
        held = out.get(checkpoint.machine)
        if held is None or checkpoint.offset > held.offset:
            out[checkpoint.machine] = checkpoint
    if skipped:
        log.warning("ignored %d unreadable records on the state topic", skipped)
    return out
