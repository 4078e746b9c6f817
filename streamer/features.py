"""Feature layout and scaling shared by the trainer and the streamer."""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from itertools import chain
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
    def _layout(self) -> _Layout:
        """Where each sensor lands in a row vector, worked out once per spec."""
        return _Layout.of(self)

    def vector(self, values: Mapping[str, float | None]) -> np.ndarray:
        """One row's model input from a sensor mapping; unknown or missing sensors are NaN.

        Sensors the spec does not know are ignored. A categorical level unseen in training
        encodes as all zeros, as in :meth:`matrix`.
        """
        return self.vectors([values])[0][0]

    def vectors(self, rows: Sequence[Mapping[str, float | None]]) -> tuple[np.ndarray, np.ndarray]:
        """Many rows' model inputs at once (row ``i`` is ``vector(rows[i])``), and how many
        of the spec's sensors each row names (a null names its sensor)."""
        layout = self._layout
        count = len(self.sensors)
        named = np.full(len(rows), count, dtype=np.int64)
        try:
            # The common batch: every row names every sensor, none of them null.
            flat = chain.from_iterable(map(layout.pick, rows))
            raw = np.fromiter(flat, np.float64, len(rows) * count).reshape(len(rows), count)
        except (KeyError, TypeError):
            picked: list[tuple[Any, ...]] = []
            for i, values in enumerate(rows):
                try:
                    picked.append(layout.pick(values))
                except KeyError:
                    picked.append(tuple(values.get(name) for name in self.sensors))
                    named[i] = sum(1 for name in self.sensors if name in values)
            # A null becomes NaN in the conversion.
            raw = np.array(picked, dtype=np.float64).reshape(len(rows), count)
        out = np.empty((len(rows), layout.width), dtype=np.float32)
        out[:, : len(layout.continuous)] = raw[:, layout.continuous]
        for column, start, levels in layout.onehot:
            value = raw[:, column]
            block = (value[:, None] == levels[None, :]).astype(np.float32)
            block[np.isnan(value)] = np.nan
            out[:, start : start + len(levels)] = block
        return out, named

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


@dataclass(frozen=True)
class _Layout:
    """Columns of a spec's sensors in the model input, for filling many rows at once."""

    pick: Callable[[Mapping[str, Any]], tuple[Any, ...]]
    continuous: np.ndarray
    onehot: tuple[tuple[int, int, np.ndarray], ...]
    width: int

    @classmethod
    def of(cls, spec: FeatureSpec) -> _Layout:
        """The layout of ``spec``: sensor positions of its continuous and one-hot columns."""
        position = {name: i for i, name in enumerate(spec.sensors)}
        continuous = np.array([position[name] for name in spec.continuous], dtype=np.int64)
        onehot: list[tuple[int, int, np.ndarray]] = []
        if spec.categorical_mode == "onehot":
            start = len(continuous)
            for name, levels in spec.categoricals.items():
                onehot.append((position[name], start, np.asarray(levels, dtype=np.float64)))
                start += len(levels)
        return cls(_picker(spec.sensors), continuous, tuple(onehot), len(spec.feature_names))


def _picker(names: tuple[str, ...]) -> Callable[[Mapping[str, Any]], tuple[Any, ...]]:
    """A function giving the values of ``names`` as a tuple; KeyError if one is absent."""
    if len(names) == 1:
        only = names[0]
        return lambda values: (values[only],)
    if not names:
        return lambda values: ()
    return operator.itemgetter(*names)


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
