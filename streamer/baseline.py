"""Causal re-centring of each machine's rows on its own recent past.

The process drifts over days, so a scaler fitted once goes stale; a row minus the
exponentially weighted mean of the same machine's earlier rows does not. The state per
machine is one vector of sums, one weight and one time, so the streamer can keep it for
every machine, and :func:`recentre_table` gives the trainer exactly what
:func:`recentre_step` gives the streamer row by row.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from streamer.decay import decay_factor, decayed_blocks, forgets, run_starts


@dataclass(frozen=True)
class Baseline:
    """An exponentially weighted mean of the machine's earlier rows, time constant ``minutes``."""

    minutes: float = 60.0

    def __post_init__(self) -> None:
        if not self.minutes > 0:
            raise ValueError(f"the baseline time constant must be positive, not {self.minutes}")

    def to_dict(self) -> dict[str, Any]:
        """Manifest form."""
        return {"kind": "ewm", "minutes": self.minutes}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Baseline:
        """Inverse of :meth:`to_dict`."""
        if data.get("kind", "ewm") != "ewm":
            raise ValueError(f"unknown baseline kind {data.get('kind')!r}")
        return cls(minutes=float(data["minutes"]))


@dataclass(frozen=True, slots=True)
class BaselineState:
    """One machine's past: decayed sum of rows, decayed count, time of the latest row."""

    sums: np.ndarray
    weight: float = 0.0
    last_minutes: float = math.nan

    @classmethod
    def empty(cls, width: int) -> BaselineState:
        """A machine with no past."""
        return cls(np.zeros(width, dtype=np.float64))


def recentre_step(
    baseline: Baseline, state: BaselineState, row: np.ndarray, minutes: float, reset: bool = False
) -> tuple[BaselineState, np.ndarray]:
    """The row minus the mean of the machine's earlier rows (zeros with no past), and the
    state after the row. ``reset`` (or a very long gap) forgets the past first."""
    elapsed = minutes - state.last_minutes
    if reset or state.weight == 0.0 or forgets(elapsed, baseline.minutes):
        sums, weight = np.zeros_like(state.sums), 0.0
    else:
        keep = decay_factor(elapsed, baseline.minutes)
        sums, weight = state.sums * keep, state.weight * keep
    x = np.asarray(row, dtype=np.float64)
    residual = x - sums / weight if weight > 0 else np.zeros_like(x)
    return BaselineState(sums + x, weight + 1.0, minutes), residual.astype(np.float32)


def recentre_table(
    baseline: Baseline,
    rows: np.ndarray,
    minutes: np.ndarray,
    groups: np.ndarray,
    resets: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`recentre_step` over every row of a table (a machine's rows contiguous, in
    time order); returns the re-centred rows and the weight of the past behind each."""
    n, width = rows.shape
    starts = run_starts(minutes, groups, baseline.minutes, resets)
    ones = np.ones((n, 1))
    out = np.zeros((n, width), dtype=np.float32)
    weights = np.zeros(n)
    blocks = decayed_blocks(
        minutes, starts, baseline.minutes, lambda lo, hi: np.hstack([rows[lo:hi], ones[lo:hi]])
    )
    for lo, hi, before in blocks:
        weight = before[:, -1]
        has_past = weight > 0
        mean = before[:, :-1] / np.where(has_past, weight, 1.0)[:, None]
        out[lo:hi] = np.where(has_past[:, None], rows[lo:hi] - mean, 0.0)
        weights[lo:hi] = weight
    return out, weights
