"""Exponentially decayed sums over irregular times, for a whole table at once.

A machine's state is a sum of its past rows, each weighted by ``exp(-age / tau)``. Row by
row that is one multiply and one add; over a table it is a cumulative sum of rows
weighted by ``exp(t / tau)``, cut into chunks so the weights stay finite.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator

import numpy as np

FORGET = 20.0  # after a gap of this many time constants the past weighs under e^-20: drop it
_SPAN = 30.0  # time constants per chunk, so exp() stays far from overflow


def decay_factor(elapsed_minutes: float, tau: float) -> float:
    """The weight left on the past after ``elapsed_minutes``."""
    return math.exp(-max(elapsed_minutes, 0.0) / tau)


def forgets(elapsed_minutes: float, tau: float) -> bool:
    """Whether a gap is so long that the past is dropped rather than decayed."""
    return elapsed_minutes > FORGET * tau


def run_starts(
    times: np.ndarray, groups: np.ndarray, tau: float, resets: np.ndarray | None = None
) -> np.ndarray:
    """Rows that start afresh: a machine's first row, a forgetting gap, or a given reset."""
    n = len(times)
    starts = np.ones(n, dtype=bool)
    if n > 1:
        starts[1:] = (groups[1:] != groups[:-1]) | (np.diff(times) > FORGET * tau)
    if resets is not None:
        starts |= np.asarray(resets, dtype=bool)
    return starts


def decayed_blocks(
    times: np.ndarray,
    starts: np.ndarray,
    tau: float,
    values: Callable[[int, int], np.ndarray],
    initial: np.ndarray | None = None,
    max_rows: int = 8192,
) -> Iterator[tuple[int, int, np.ndarray]]:
    """Yield ``(lo, hi, before)``: for rows ``lo..hi-1``, the decayed sum of the earlier
    rows of their run (``values(lo, hi)`` gives the rows to sum), as of each row's time.

    A run starts at each ``starts`` row with ``initial`` (or zeros) as its past.
    """
    bounds = [*np.flatnonzero(starts).tolist(), len(times)]
    for first, end in itertools.pairwise(bounds):
        carry: np.ndarray | None = None if initial is None else initial.astype(np.float64)
        ref = float(times[first])
        lo = first
        while lo < end:
            base = float(times[lo])
            hi = int(np.searchsorted(times[lo:end], base + _SPAN * tau, side="right")) + lo
            hi = min(max(hi, lo + 1), lo + max_rows)
            rel = (times[lo:hi] - base) / tau
            block = np.asarray(values(lo, hi), dtype=np.float64) * np.exp(rel)[:, None]
            total = np.cumsum(block, axis=0)
            before = np.empty_like(total)
            before[0] = 0.0
            before[1:] = total[:-1]
            if carry is not None:
                prior = carry * math.exp(-(base - ref) / tau)
                before += prior
                total[-1] += prior
            yield lo, hi, before * np.exp(-rel)[:, None]
            carry, ref, lo = total[-1], base, hi
