"""Labels for learning to warn ahead: curve shift of break rows, and event onsets."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LABEL_MODES = ("event", "interval")


@dataclass(frozen=True)
class Horizon:
    """How far ahead of a break rows are labelled positive: minutes, or else rows."""

    minutes: float | None = 4.0
    rows: int | None = None

    def __post_init__(self) -> None:
        if (self.minutes is None) == (self.rows is None):
            raise ValueError("give the horizon in minutes or in rows, not both")


def curve_shift(
    events: np.ndarray, times_min: np.ndarray, groups: np.ndarray, horizon: Horizon
) -> tuple[np.ndarray, np.ndarray]:
    """Label the rows leading up to each event row positive and drop the event row itself.

    ``events`` marks break rows; ``times_min`` are minutes, sorted within each group;
    ``groups`` holds a machine code per row (rows of one machine are contiguous).
    Returns ``(labels, keep)``: the shifted 0/1 labels and the mask of rows to keep.
    With a horizon in minutes, rows in ``[t_break - minutes, t_break)`` are positive;
    with rows, the ``rows`` rows before the break in the same machine are.
    """
    events = np.asarray(events).astype(bool)
    labels = np.zeros(events.shape[0], dtype=np.int8)
    first = _group_starts(groups)
    for n in np.flatnonzero(events):
        g0 = first[n]
        if horizon.rows is not None:
            start = max(g0, n - horizon.rows)
        else:
            assert horizon.minutes is not None
            cutoff = times_min[n] - horizon.minutes
            start = g0 + int(np.searchsorted(times_min[g0:n], cutoff, side="left"))
        span = np.arange(start, n)
        labels[span[times_min[span] < times_min[n]]] = 1
    keep = ~events
    # A row that is itself a break is never a precursor label.
    labels[events] = 0
    return labels, keep


def _group_starts(groups: np.ndarray) -> np.ndarray:
    """Index of the first row of each row's group (groups are contiguous)."""
    index = np.arange(len(groups))
    new_group = np.ones(len(groups), dtype=bool)
    new_group[1:] = groups[1:] != groups[:-1]
    return np.maximum.accumulate(np.where(new_group, index, 0))


def interval_labels(anomalous: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For data whose label marks anomalous intervals: rows are kept and labelled as given."""
    flags = np.asarray(anomalous).astype(bool)
    return flags.astype(np.int8), np.ones(flags.shape[0], dtype=bool)


def event_onsets(flags: np.ndarray, groups: np.ndarray, mode: str) -> np.ndarray:
    """Indices of the rows where events happen: break rows, or the first row of each interval."""
    flags = np.asarray(flags).astype(bool)
    if mode == "event":
        return np.flatnonzero(flags)
    previous = np.concatenate([[False], flags[:-1]])
    new_group = np.concatenate([[True], groups[1:] != groups[:-1]])
    return np.flatnonzero(flags & (~previous | new_group))
