"""Short-history inputs computed the same way in training and serving.

A machine's process drifts over days, so its raw levels say little about an imminent
break; how each row departs from the machine's own last half hour to hour, and how
restless the sensors have been in the last few rows, say more. Both are computed from a
*history*: the ``length`` latest rows of one machine since its last restart, shaped
(samples, length, sensors), of which only the last ``valid`` rows belong to the current
stretch (older positions may hold anything and are masked out).

The trainer builds one history per table row (:func:`table_histories`), the streamer
keeps one per machine; both then call the functions below on arrays of the same shape,
so each number is computed by the same operations in the same order on both sides.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

_Z_LIMIT = 50.0
_CHUNK_ROWS = 20_000


@dataclass(frozen=True)
class ShortFeatures:
    """The recipe of the supervised head's inputs, all causal: a row and its few predecessors.

    Per sensor: the standard deviation of the last ``volatility`` rows, the change since
    ``lags`` rows before, and the z-score of the row against the ``back`` rows before it;
    plus the log of the rows since the last restart (breaks cluster right after restarts).
    """

    back: int = 30
    volatility: int = 5
    lags: tuple[int, ...] = (1, 2, 5)

    def __post_init__(self) -> None:
        if self.back < 2 or self.volatility < 2 or any(lag < 1 for lag in self.lags):
            raise ValueError(f"a short-feature recipe needs back >= 2, volatility >= 2: {self}")

    @property
    def length(self) -> int:
        """Rows of history the recipe reads."""
        return max(self.back, self.volatility - 1, *self.lags) + 1

    def width(self, sensors: int) -> int:
        """Number of features for ``sensors`` sensors."""
        return sensors * (2 + len(self.lags)) + 1

    def names(self, sensors: tuple[str, ...]) -> tuple[str, ...]:
        """Feature names, in the order :meth:`compute` returns them."""
        out = [f"std{self.volatility}:{s}" for s in sensors]
        for lag in self.lags:
            out += [f"diff{lag}:{s}" for s in sensors]
        out += [f"z{self.back}:{s}" for s in sensors]
        return (*out, "log_rows_since_restart")

    def compute(self, history: np.ndarray, valid: np.ndarray, age: np.ndarray) -> np.ndarray:
        """Features of each history's last row; ``age`` counts its stretch's rows so far."""
        hist = history[:, -self.length :]
        valid = np.minimum(valid, self.length)
        last = hist[:, -1].astype(np.float64)
        parts = [_masked_std(hist[:, -self.volatility :], valid)]
        for lag in self.lags:
            has = (valid > lag)[:, None]
            parts.append(np.where(has, last - hist[:, -1 - lag], 0.0))
        parts.append(_zscore(hist[:, -self.back - 1 :], valid))
        parts.append(np.log1p(np.asarray(age, np.float64))[:, None])
        return np.concatenate(parts, axis=1)

    def to_dict(self) -> dict[str, Any]:
        """The manifest form."""
        return {"back": self.back, "volatility": self.volatility, "lags": list(self.lags)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ShortFeatures:
        """Read the manifest form."""
        return cls(int(data["back"]), int(data["volatility"]), tuple(int(x) for x in data["lags"]))


def _mask(rows: int, valid: np.ndarray) -> np.ndarray:
    """(samples, rows) booleans: which of the last ``rows`` positions are in the stretch."""
    return np.arange(rows)[None, :] >= rows - np.minimum(valid, rows)[:, None]


def _masked_mean(rows: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Count, mean and the kept rows (zeros elsewhere, in the rows' own dtype); sums are
    taken in float64 along the rows axis, one row after the other, whatever the batch."""
    count = mask.sum(axis=1)
    kept = np.where(mask[..., None], rows, rows.dtype.type(0))
    mean = kept.sum(axis=1, dtype=np.float64) / np.maximum(count, 1)[:, None]
    return count, mean, kept


def _masked_moments(
    rows: np.ndarray, mask: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    count, mean, kept = _masked_mean(rows, mask)
    squares = np.square(kept, dtype=np.float64).sum(axis=1) / np.maximum(count, 1)[:, None]
    return count, mean, np.maximum(squares - mean * mean, 0.0)


def _masked_std(rows: np.ndarray, valid: np.ndarray) -> np.ndarray:
    count, _, var = _masked_moments(rows, _mask(rows.shape[1], valid))
    return np.where((count >= 2)[:, None], np.sqrt(var), 0.0)


def _zscore(rows: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """The last row against the rows before it (those in the stretch); 0 with fewer than 2."""
    before = rows[:, :-1]
    count, mean, var = _masked_moments(before, _mask(before.shape[1], valid - 1))
    floor = 1e-3 * (np.abs(mean) + 1e-3)
    z = (rows[:, -1].astype(np.float64) - mean) / np.maximum(np.sqrt(var), floor)
    return np.where((count >= 2)[:, None], np.clip(z, -_Z_LIMIT, _Z_LIMIT), 0.0)


def local_deviation(slices: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Each slice's last row minus the plain mean of the rows before it in the stretch
    (zero for a stretch's first row). ``slices`` is (samples, back + 1, sensors)."""
    before = slices[:, :-1]
    count, mean, _ = _masked_mean(before, _mask(before.shape[1], valid - 1))
    dev = slices[:, -1].astype(np.float64) - mean
    return np.where((count >= 1)[:, None], dev, 0.0).astype(np.float32)


def deviation_windows(
    history: np.ndarray, valid: np.ndarray, back: int, lookback: int
) -> np.ndarray:
    """The last ``lookback`` rows of each history, each as its :func:`local_deviation`."""
    length = history.shape[1]
    if length < back + lookback:
        raise ValueError(f"a history of {length} rows is shorter than {back} + {lookback}")
    steps = []
    for k in range(lookback):
        end = length - lookback + k + 1
        steps.append(local_deviation(history[:, end - back - 1 : end], valid - (lookback - 1 - k)))
    return np.stack(steps, axis=1)


def positions(segments: np.ndarray) -> np.ndarray:
    """Each row's position in its segment (0 on a segment's first row)."""
    n = len(segments)
    first = np.ones(n, dtype=bool)
    first[1:] = segments[1:] != segments[:-1]
    start = np.maximum.accumulate(np.where(first, np.arange(n), 0))
    return np.arange(n) - start


def table_histories(
    rows: np.ndarray, segments: np.ndarray, length: int, chunk: int = _CHUNK_ROWS
) -> Iterator[tuple[slice, np.ndarray, np.ndarray]]:
    """For consecutive chunks of rows: the chunk, its histories and their valid counts.

    The history of row ``i`` holds rows ``i - length + 1 .. i``; positions before its
    segment start are masked by ``valid`` (they are zeros before the table's first row).
    """
    n, width = rows.shape
    padded = np.concatenate([np.zeros((length - 1, width), rows.dtype), rows])
    view = sliding_window_view(padded, (length, width))[:, 0]
    valid = np.minimum(positions(segments) + 1, length)
    for start in range(0, n, chunk):
        part = slice(start, min(n, start + chunk))
        yield part, np.ascontiguousarray(view[part]), valid[part]


def deviation_table(rows: np.ndarray, segments: np.ndarray, back: int) -> np.ndarray:
    """Every row as its :func:`local_deviation` from the ``back`` rows before it."""
    out = np.empty(rows.shape, np.float32)
    for part, hist, valid in table_histories(rows, segments, back + 1):
        out[part] = local_deviation(hist, valid)
    return out


def feature_table(rows: np.ndarray, segments: np.ndarray, recipe: ShortFeatures) -> np.ndarray:
    """Every row's :class:`ShortFeatures`."""
    out = np.empty((len(rows), recipe.width(rows.shape[1])), np.float64)
    age = positions(segments) + 1
    for part, hist, valid in table_histories(rows, segments, recipe.length):
        out[part] = recipe.compute(hist, valid, age[part])
    return out
