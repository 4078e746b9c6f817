"""Alert episodes: consecutive alert rows, with hysteresis, form one episode."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class EpisodePolicy:
    """An episode closes after ``clear_rows`` consecutive rows below the threshold."""

    clear_rows: int = 3

    def __post_init__(self) -> None:
        if self.clear_rows < 1:
            raise ValueError("clear_rows must be at least 1")


def episode_starts(alerts: np.ndarray, segments: np.ndarray, policy: EpisodePolicy) -> np.ndarray:
    """Indices of the rows that open an episode, given per-row alert flags.

    Rows are one machine's scored rows in time order (or several machines' rows, each
    machine in its own segments). A segment boundary (a restart, a gap, a break) closes
    any open episode. An alert row opens an episode unless another alert row of the same
    segment lies within the previous ``clear_rows`` rows.
    """
    alerts = np.asarray(alerts, dtype=bool)
    n = alerts.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    index = np.arange(n)
    seg_start = np.ones(n, dtype=bool)
    seg_start[1:] = segments[1:] != segments[:-1]
    first_of_segment = np.maximum.accumulate(np.where(seg_start, index, 0))
    # Index of the latest alert at or before each row, then shifted to "strictly before".
    latest = np.maximum.accumulate(np.where(alerts, index, -1))
    previous = np.full(n, -1)
    previous[1:] = latest[:-1]
    previous[previous < first_of_segment] = -1
    opens = alerts & ((previous < 0) | (index - previous > policy.clear_rows))
    return np.flatnonzero(opens)
