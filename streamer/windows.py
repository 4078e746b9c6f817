"""Segments of contiguous operation and the LSTM windows built inside them."""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def segment_ids(
    times_min: np.ndarray, groups: np.ndarray, events: np.ndarray, max_gap_minutes: float
) -> np.ndarray:
    """Number the stretches of uninterrupted operation.

    A new segment starts at a new machine, after a gap longer than ``max_gap_minutes``,
    and on the row after a break: a window never spans a restart of the process.
    """
    n = len(times_min)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    boundary = np.zeros(n, dtype=bool)
    boundary[0] = True
    boundary[1:] = (
        (groups[1:] != groups[:-1])
        | (np.diff(times_min) > max_gap_minutes)
        | np.asarray(events[:-1]).astype(bool)
    )
    return np.cumsum(boundary) - 1


def make_windows(
    rows: np.ndarray, segments: np.ndarray, lookback: int
) -> tuple[np.ndarray, np.ndarray]:
    """Build the windows ``rows[i - lookback + 1 .. i]`` for every row ``i`` that has them.

    Sample ``k`` ends at (and carries the label of) row ``ends[k]``, which is its last
    time step; rows without ``lookback - 1`` predecessors in their segment get no window.
    Returns ``(windows, ends)`` with windows shaped (samples, lookback, features).
    """
    n, width = rows.shape
    if lookback < 1:
        raise ValueError("lookback must be at least 1")
    if n < lookback:
        return np.zeros((0, lookback, width), dtype=rows.dtype), np.zeros(0, dtype=np.int64)
    ends = np.arange(lookback - 1, n)
    ends = ends[segments[ends] == segments[ends - lookback + 1]]
    view = sliding_window_view(rows, (lookback, width))[:, 0]
    return np.ascontiguousarray(view[ends - lookback + 1]), ends
