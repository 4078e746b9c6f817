"""A supervised head the streamer scores with numpy alone: window summaries into trees.

The trees of a gradient-boosted model are plain arrays (which feature, which threshold,
which child, which value), saved as ``.npz`` without pickle, so a bundle carrying them
loads without running any code from the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

_FIELDS = ("feature", "threshold", "left", "right", "value", "missing_left", "leaf")


def window_summary(windows: np.ndarray) -> np.ndarray:
    """Per window (samples, lookback, features): last row, mean, and last minus first."""
    last = windows[:, -1, :]
    return np.concatenate([last, windows.mean(axis=1), last - windows[:, 0, :]], axis=1)


@dataclass(frozen=True)
class TreeEnsemble:
    """Additive trees over a feature vector; arrays are (trees, nodes), padded per tree."""

    feature: np.ndarray
    threshold: np.ndarray
    left: np.ndarray
    right: np.ndarray
    value: np.ndarray
    missing_left: np.ndarray
    leaf: np.ndarray
    baseline: float

    def decision(self, features: np.ndarray) -> np.ndarray:
        """Baseline plus the value of the leaf each row reaches in every tree (log-odds)."""
        x = np.asarray(features, dtype=np.float64)
        trees = np.arange(self.feature.shape[0])[None, :]
        rows = np.arange(x.shape[0])[:, None]
        node = np.zeros((x.shape[0], self.feature.shape[0]), dtype=np.int64)
        for _ in range(self.feature.shape[1]):
            done = self.leaf[trees, node]
            if done.all():
                break
            v = x[rows, self.feature[trees, node]]
            go_left = np.where(
                np.isnan(v), self.missing_left[trees, node], v <= self.threshold[trees, node]
            )
            step = np.where(go_left, self.left[trees, node], self.right[trees, node])
            node = np.where(done, node, step)
        return self.baseline + self.value[trees, node].sum(axis=1)

    def save(self, path: Path) -> None:
        """Write the arrays to an ``.npz`` file."""
        arrays = {name: getattr(self, name) for name in _FIELDS}
        np.savez(path, baseline=np.array(self.baseline), **arrays)

    @classmethod
    def load(cls, path: Path) -> TreeEnsemble:
        """Read arrays written by :meth:`save`; refuses anything pickled."""
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in _FIELDS}
            baseline = float(data["baseline"])
        return cls(**arrays, baseline=baseline)
