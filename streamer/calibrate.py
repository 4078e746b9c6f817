"""A per-machine threshold that follows the machine's own recent scores.

A fixed threshold chosen on validation days does not hold on later days: scores drift.
Here each machine's threshold is the score its own recent rows exceeded at a target
``rate``, read from a histogram of its past scores that forgets with time constant
``minutes``. A day holds too few rows to read a rate of one in a thousand directly, so
``stretch`` can extrapolate instead: the threshold is the median plus ``stretch`` times
the distance from the median to the score exceeded at ``rate`` (1 reads it directly).
The state is one vector of bin counts and one time per machine, whatever the sampling
rate; :func:`thresholds_table` gives exactly what :func:`calibrate_step`
gives row by row.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streamer.decay import FORGET, decay_factor, decayed_blocks, forgets, run_starts


@dataclass(frozen=True)
class Calibration:
    """Target alert ``rate`` (stretched) over a trailing period; ``fallback`` while the
    machine's history is short."""

    edges: np.ndarray
    rate: float
    minutes: float = 1440.0
    stretch: float = 1.0
    min_weight: float = 180.0
    fallback: float = math.inf
    prior: np.ndarray | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not 0.0 < self.rate < 1.0:
            raise ValueError(f"the target alert rate must lie in (0, 1), not {self.rate}")
        if self.edges.ndim != 1 or self.edges.size < 2 or np.any(np.diff(self.edges) <= 0):
            raise ValueError("histogram edges must be at least two increasing numbers")

    @property
    def bins(self) -> int:
        """Number of histogram bins."""
        return int(self.edges.size - 1)

    def bin_of(self, scores: np.ndarray) -> np.ndarray:
        """Bin of each score; scores outside the edges land in the end bins."""
        found = np.searchsorted(self.edges, scores, side="right") - 1
        return np.clip(found, 0, self.bins - 1)

    def start_counts(self) -> np.ndarray:
        """Counts a machine starts with: the prior, or none."""
        if self.prior is None:
            return np.zeros(self.bins)
        return np.asarray(self.prior, dtype=np.float64).copy()

    def to_dict(self) -> dict[str, Any]:
        """Manifest form."""
        return {
            "edges": self.edges.tolist(),
            "rate": self.rate,
            "minutes": self.minutes,
            "stretch": self.stretch,
            "min_weight": self.min_weight,
            "fallback": self.fallback if math.isfinite(self.fallback) else None,
            "prior": None if self.prior is None else np.asarray(self.prior).tolist(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Calibration:
        """Inverse of :meth:`to_dict`."""
        prior = data.get("prior")
        fallback = data.get("fallback")
        return cls(
            edges=np.asarray(data["edges"], dtype=np.float64),
            rate=float(data["rate"]),
            minutes=float(data["minutes"]),
            stretch=float(data.get("stretch", 1.0)),
            min_weight=float(data["min_weight"]),
            fallback=math.inf if fallback is None else float(fallback),
            prior=None if prior is None else np.asarray(prior, dtype=np.float64),
        )


@dataclass(frozen=True, slots=True)
class CalibrationState:
    """One machine's decayed histogram of past scores and the time of its latest score."""

    counts: np.ndarray
    last_minutes: float = math.nan

    @classmethod
    def empty(cls, calibration: Calibration) -> CalibrationState:
        """A machine with no scores yet."""
        return cls(calibration.start_counts())


def threshold_of(calibration: Calibration, counts: np.ndarray) -> np.ndarray:
    """Thresholds from histogram counts (one row of counts per threshold)."""
    counts = np.atleast_2d(counts)
    total = counts.sum(axis=1)
    value = upper_quantile(calibration.edges, counts, calibration.rate)
    if calibration.stretch != 1.0:
        median = upper_quantile(calibration.edges, counts, 0.5)
        value = median + calibration.stretch * (value - median)
    return np.where(total >= calibration.min_weight, value, calibration.fallback)


def upper_quantile(edges: np.ndarray, counts: np.ndarray, share: float) -> np.ndarray:
    """The score exceeded by ``share`` of the counted mass, interpolated within a bin."""
    bins = edges.size - 1
    tail = share * counts.sum(axis=1)
    # above[:, b] is the mass in bins b and higher; the last column is the empty top.
    above = np.zeros((len(counts), bins + 1))
    above[:, :-1] = np.cumsum(counts[:, ::-1], axis=1)[:, ::-1]
    rows = np.arange(len(counts))
    b = np.maximum((above[:, :-1] >= tail[:, None]).sum(axis=1) - 1, 0)
    inside = counts[rows, b]
    part = np.clip((tail - above[rows, b + 1]) / np.where(inside > 0, inside, 1.0), 0.0, 1.0)
    return edges[b + 1] - part * (edges[b + 1] - edges[b])


def calibrate_step(
    calibration: Calibration, state: CalibrationState, score: float, minutes: float
) -> tuple[CalibrationState, float]:
    """The threshold for this row (from the machine's earlier scores only) and the state
    with this score added."""
    elapsed = minutes - state.last_minutes
    if math.isnan(elapsed):
        counts = state.counts
    elif forgets(elapsed, calibration.minutes):
        counts = calibration.start_counts()
    else:
        counts = state.counts * decay_factor(elapsed, calibration.minutes)
    threshold = float(threshold_of(calibration, counts)[0])
    counts = counts.copy()
    counts[calibration.bin_of(np.asarray([score]))[0]] += 1.0
    return CalibrationState(counts, minutes), threshold


def calibrate_many(
    calibration: Calibration,
    states: MutableMapping[str, CalibrationState],
    keys: Sequence[str],
    scores: np.ndarray,
    minutes: np.ndarray,
) -> np.ndarray:
    """:func:`calibrate_step` for each row in order (row ``i`` of machine ``keys[i]``),
    updating ``states``; a machine without a state starts from the prior.

    The rows are taken in rounds, the k-th row of every machine in round k, so a batch
    of many machines costs a few array operations rather than one call per row; each
    machine's counts are read once before the batch and written once after it. A NaN
    score gets a threshold but leaves its machine's state as it was, as in
    :func:`thresholds_table`.
    """
    out = np.empty(len(keys))
    if not len(keys):
        return out
    code_of: dict[str, int] = {}
    codes = np.fromiter((code_of.setdefault(k, len(code_of)) for k in keys), np.int64, len(keys))
    names = list(code_of)
    held = [states.get(name) for name in names]
    start = calibration.start_counts()
    counts = np.stack([start if s is None else s.counts for s in held])
    last = np.array([math.nan if s is None else s.last_minutes for s in held])
    # Each row's rank among its machine's rows: its round.
    order = np.argsort(codes, kind="stable")
    first = np.ones(len(keys), bool)
    first[1:] = codes[order][1:] != codes[order][:-1]
    rank = np.empty(len(keys), np.int64)
    rank[order] = np.arange(len(keys)) - np.maximum.accumulate(
        np.where(first, np.arange(len(keys)), 0)
    )
    tau = calibration.minutes
    changed = np.zeros(len(names), bool)
    for k in range(int(rank.max()) + 1):
        idx = np.flatnonzero(rank == k)
        machine = codes[idx]
        elapsed = minutes[idx] - last[machine]
        known = ~np.isnan(elapsed)
        factor = np.ones(len(idx))
        factor[known] = np.exp(-np.maximum(elapsed[known], 0.0) / tau)
        now = counts[machine] * factor[:, None]
        now[known & (elapsed > FORGET * tau)] = start
        out[idx] = threshold_of(calibration, now)
        row_scores = scores[idx]
        keep = np.flatnonzero(~np.isnan(row_scores))
        now[keep, calibration.bin_of(row_scores[keep])] += 1.0
        counts[machine[keep]] = now[keep]
        last[machine[keep]] = minutes[idx[keep]]
        changed[machine[keep]] = True
    # Copies, so that no machine's state keeps the whole batch's array alive.
    for m in np.flatnonzero(changed).tolist():
        states[names[m]] = CalibrationState(counts[m].copy(), float(last[m]))
    return out


def thresholds_table(
    calibration: Calibration, scores: np.ndarray, minutes: np.ndarray, groups: np.ndarray
) -> np.ndarray:
    """:func:`calibrate_step` over every row of a table (a machine's rows contiguous, in
    time order); NaN scores are skipped and get a NaN threshold."""
    out = np.full(len(scores), np.nan)
    idx = np.flatnonzero(np.isfinite(scores))
    bins = calibration.bin_of(scores[idx])
    starts = run_starts(minutes[idx], groups[idx], calibration.minutes)
    eye = np.eye(calibration.bins)
    blocks = decayed_blocks(
        minutes[idx],
        starts,
        calibration.minutes,
        lambda lo, hi: eye[bins[lo:hi]],
        initial=calibration.start_counts(),
    )
    for lo, hi, before in blocks:
        out[idx[lo:hi]] = threshold_of(calibration, before)
    return out


def tail_edges(reference: np.ndarray, count: int = 96, extra: int = 32) -> np.ndarray:
    """Bin edges from reference scores, dense in their upper tail and growing past their
    maximum, so a threshold can be read finely where alerts happen, even after drift."""
    ref = np.sort(np.asarray(reference, dtype=np.float64)[np.isfinite(reference)])
    if ref.size < 10:
        raise ValueError(f"need at least 10 reference scores for histogram edges, not {ref.size}")
    surprise = np.linspace(0.0, math.log(ref.size), count)
    inner = np.unique(np.quantile(ref, 1.0 - np.exp(-surprise)))
    spread = max(inner[-1] - np.median(ref), 1e-12)
    grow = inner[-1] + spread * np.geomspace(0.05, 1e4, extra)
    below = inner[0] - spread
    return np.concatenate([[below], inner, grow])


def reference_prior(edges: np.ndarray, reference: np.ndarray, weight: float) -> np.ndarray:
    """Counts a new machine starts with: the reference scores' histogram scaled to
    ``weight`` rows, so it has a threshold from its first row and then makes it its own."""
    ref = np.asarray(reference, dtype=np.float64)
    ref = ref[np.isfinite(ref)]
    bins = np.clip(np.searchsorted(edges, ref, side="right") - 1, 0, edges.size - 2)
    counts = np.bincount(bins, minlength=edges.size - 1).astype(np.float64)
    return counts * (weight / max(ref.size, 1))
