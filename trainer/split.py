"""Train, validation and test sets: the articles' random split, or split by time."""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import train_test_split

TRAIN, VALIDATION, TEST = 0, 1, 2
PROTOCOLS = ("chronological", "random")


def random_split(
    count: int, test_fraction: float = 0.2, val_fraction: float = 0.2, seed: int = 123
) -> np.ndarray:
    """The articles' protocol: samples drawn at random (overlapping windows leak; see README)."""
    index = np.arange(count)
    rest, test = train_test_split(index, test_size=test_fraction, random_state=seed)
    train, val = train_test_split(rest, test_size=val_fraction, random_state=seed)
    sets = np.empty(count, dtype=np.int8)
    sets[train], sets[val], sets[test] = TRAIN, VALIDATION, TEST
    return sets


def chronological_split(
    times: np.ndarray,
    break_times: np.ndarray,
    test_fraction: float = 0.2,
    val_fraction: float = 0.2,
    guard_minutes: float = 20.0,
    train_end: float | None = None,
) -> tuple[np.ndarray, tuple[float, float]]:
    """Earlier rows train, later ones validate, the latest test.

    Without ``train_end`` (minutes), the last ``test_fraction`` of rows test and
    ``val_fraction`` of the rest validate. With it, rows before it train and the rest is
    shared between validation and test in the same proportion. A boundary that would fall
    within ``guard_minutes`` before a break moves to just after that break, so a break and
    its precursor rows always stay in one set.
    """
    ordered = np.sort(times)
    if train_end is None:
        test_start = np.quantile(ordered, 1.0 - test_fraction)
        val_start = np.quantile(ordered, (1.0 - test_fraction) * (1.0 - val_fraction))
    else:
        later = ordered[ordered >= train_end]
        if later.size == 0:
            raise ValueError("the training part ends after the last row; nothing left to test")
        val_share = val_fraction * (1 - test_fraction)
        val_start = train_end
        test_start = np.quantile(later, val_share / (val_share + test_fraction))
    val_start = clear_of_breaks(float(val_start), break_times, guard_minutes)
    test_start = clear_of_breaks(float(test_start), break_times, guard_minutes)
    sets = np.full(times.shape[0], TRAIN, dtype=np.int8)
    sets[times >= val_start] = VALIDATION
    sets[times >= test_start] = TEST
    return sets, (val_start, test_start)


def clear_of_breaks(boundary: float, break_times: np.ndarray, guard: float) -> float:
    """Move a boundary forward past any break whose precursor span it would cut."""
    for tb in np.sort(break_times):
        if tb - guard <= boundary <= tb:
            boundary = float(tb) + 1e-6
    return boundary
