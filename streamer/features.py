"""Feature layout and scaling shared by the trainer and the streamer."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from streamer.errors import DataError

CATEGORICAL_MODES = ("drop", "onehot")


@dataclass(frozen=True)
class FeatureSpec:
    """Which sensors feed the model, in which order, and how categoricals are treated."""

    sensors: tuple[str, ...]
    categoricals: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    categorical_mode: str = "drop"

    def __post_init__(self) -> None:
        if self.categorical_mode not in CATEGORICAL_MODES:
            raise DataError(
                f"categorical mode {self.categorical_mode!r} is not one of {CATEGORICAL_MODES}"
            )
        unknown = set(self.categoricals) - set(self.sensors)
        if unknown:
            raise DataError(f"categorical columns {sorted(unknown)} are not sensors")

    @property
    def continuous(self) -> tuple[str, ...]:
        """Sensors that enter the model as numbers."""
        return tuple(s for s in self.sensors if s not in self.categoricals)

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Model input columns, in order."""
        names = list(self.continuous)
        if self.categorical_mode == "onehot":
            for name, levels in self.categoricals.items():
                names.extend(f"{name}={_level_text(level)}" for level in levels)
        return tuple(names)

    def matrix(self, frame: pd.DataFrame) -> np.ndarray:
        """Turn a frame holding the sensor columns into the model's float32 input matrix."""
        missing = [s for s in self.sensors if s not in frame.columns]
        if missing:
            raise DataError(f"missing sensor columns {missing[:5]} (of {len(missing)})")
        parts = [frame[list(self.continuous)].to_numpy(dtype=np.float32)]
        if self.categorical_mode == "onehot":
            for name, levels in self.categoricals.items():
                column = frame[name].to_numpy(dtype=np.float64)
                parts.append((column[:, None] == np.asarray(levels)[None, :]).astype(np.float32))
        return np.ascontiguousarray(np.concatenate(parts, axis=1))

    @cached_property
    def _slots(self) -> dict[str, int | dict[float, int]]:
        """Where each sensor lands in a row vector: a column, or its one-hot columns."""
        slots: dict[str, int | dict[float, int]] = {n: i for i, n in enumerate(self.continuous)}
        if self.categorical_mode == "onehot":
            column = len(self.continuous)
            for name, levels in self.categoricals.items():
                slots[name] = {float(level): column + k for k, level in enumerate(levels)}
                column += len(levels)
        return slots

    def vector(self, values: Mapping[str, float | None]) -> np.ndarray:
        """One row's model input from a sensor mapping; unknown or missing sensors are NaN.

        Sensors the spec does not know are ignored. A categorical level unseen in training
        encodes as all zeros, as in :meth:`matrix`.
        """
        out = np.full(len(self.feature_names), np.nan, dtype=np.float32)
        for name, slot in self._slots.items():
            value = values.get(name)
            if value is None:
                continue
            if isinstance(slot, int):
                out[slot] = value
            else:
                columns = list(slot.values())
                out[columns] = 0.0
                hit = slot.get(float(value))
                if hit is not None:
                    out[hit] = 1.0
        return out

    def to_dict(self) -> dict[str, Any]:
        """Manifest form."""
        return {
            "sensors": list(self.sensors),
            "categoricals": {k: list(v) for k, v in self.categoricals.items()},
            "categorical_mode": self.categorical_mode,
            "feature_names": list(self.feature_names),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureSpec:
        """Inverse of :meth:`to_dict`; checks the stored feature names still agree."""
        spec = cls(
            sensors=tuple(data["sensors"]),
            categoricals={k: tuple(v) for k, v in data.get("categoricals", {}).items()},
            categorical_mode=data.get("categorical_mode", "drop"),
        )
        stored = tuple(data.get("feature_names", spec.feature_names))
        if stored != spec.feature_names:
            raise DataError("manifest feature_names disagree with its sensors and categoricals")
        return spec


def _level_text(level: float) -> str:
    return str(int(level)) if float(level).is_integer() else str(level)


def infer_categoricals(
    frame: pd.DataFrame, sensors: Sequence[str], max_levels: int = 20
) -> dict[str, tuple[float, ...]]:
    """Integer-valued sensors with at most ``max_levels`` distinct values are categorical."""
    found: dict[str, tuple[float, ...]] = {}
    for name in sensors:
        values = frame[name].to_numpy(dtype=np.float64)
        values = values[np.isfinite(values)]
        if values.size == 0 or not np.all(values == np.round(values)):
            continue
        levels = np.unique(values)
        if len(levels) <= max_levels:
            found[name] = tuple(float(v) for v in levels)
    return found


@dataclass(frozen=True)
class Scaler:
    """Standard scaler whose parameters travel in the bundle manifest."""

    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, rows: np.ndarray) -> Scaler:
        """Fit on 2-D rows (the training normal rows only)."""
        if rows.ndim != 2 or rows.shape[0] < 2:
            raise DataError(f"cannot fit a scaler on {rows.shape[0]} rows")
        mean = rows.mean(axis=0, dtype=np.float64)
        std = rows.std(axis=0, dtype=np.float64)
        # A constant sensor would divide by zero; leave it centred but unscaled.
        std[std < 1e-12] = 1.0
        return cls(mean.astype(np.float32), std.astype(np.float32))

    def transform(self, data: np.ndarray) -> np.ndarray:
        """Scale rows or windows (the last axis is the feature axis)."""
        return ((data - self.mean) / self.scale).astype(np.float32, copy=False)

    def inverse(self, data: np.ndarray) -> np.ndarray:
        """Back to sensor units."""
        return (data * self.scale + self.mean).astype(np.float32, copy=False)

    def to_dict(self) -> dict[str, list[float]]:
        """Manifest form."""
        return {"mean": self.mean.tolist(), "scale": self.scale.tolist()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Sequence[float]]) -> Scaler:
        """Inverse of :meth:`to_dict`."""
        return cls(np.asarray(data["mean"], np.float32), np.asarray(data["scale"], np.float32))
