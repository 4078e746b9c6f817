"""Simulated paper-machine sensor rows whose statistics are fitted from real plant data.

Per continuous sensor, in standardized units, a machine's reading is the sum of a low-rank
factor model with AR(1) factors and AR(1) residuals (the fast process), a slow
mean-reverting drift, an offset that follows the grade sensor's level, and, over the last
rows before each sheet break, a ramp in a few sensors that the fitted precursor names.
Breaks are followed by a gap of missing rows, as in the plant's own archive.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from streamer.errors import DataError

logger = logging.getLogger(__name__)

PARAMS_FILE = "plant_params.json"
FORMAT_VERSION = 1
DEFAULT_START = "2026-01-01T00:00:00Z"
DEFAULT_FACTORS = 10
DEFAULT_DRIFT_FACTORS = 6
DEFAULT_PRECURSOR_SENSORS = 8
# The real precursor is faint (published models reach ROC AUC 0.62-0.72 on this data);
# demos need one that a reconstruction-error model finds, so the fitted shift is amplified.
DEFAULT_PRECURSOR_GAIN = 6.0
DEFAULT_PRECURSOR_NOISE = 1.0

_SECONDS_PER_DAY = 86_400.0
_WINSOR_QUANTILE = 0.005
_MAX_CATEGORICAL_LEVELS = 16
_GRADE_MIN_LEVELS = 3
_SHRINK_ROWS = 100.0
_NORMAL_MARGIN_MINUTES = 30.0
_PRECURSOR_WINDOW_MINUTES = 20.0
_PRECURSOR_MINUTES_RANGE = (10.0, 20.0)
_PRECURSOR_PEAK_MINUTES = 4.0
_BASELINE_MINUTES = (32.0, 60.0)
_PRECURSOR_ONSET = 0.1
_MIN_BREAK_SPACING_MINUTES = 30.0
_DRIFT_HOURS = 24.0
_GRADE_TRANSITION_MINUTES = 20.0
_MAX_AR = 0.9995
_MAX_BLOCK_STEPS = 720
_BLOCK_BUDGET = 16_384
_NEVER = np.iinfo(np.int64).max // 4


@dataclass(frozen=True)
class PlantParams:
    """Figures (never rows) describing a plant's sensor process, fitted by `fit_params`."""

    sensors: list[str]
    categoricals: dict[str, list[int]]
    interval_seconds: float
    mean: list[float]
    scale: list[float]
    loadings: list[list[float]]
    factor_ar: list[float]
    residual_scale: list[float]
    residual_ar: list[float]
    drift_loadings: list[list[float]]
    drift_hours: float
    level_probabilities: dict[str, list[float]]
    level_changes_per_day: dict[str, float]
    grade_sensor: str | None
    grade_offsets: list[list[float]]
    grade_transition_minutes: float
    breaks_per_day: float
    min_break_spacing_minutes: float
    gap_log_mean: float
    gap_log_sd: float
    gap_max_rows: int
    precursor_sensors: list[str]
    precursor_shift: list[float]
    precursor_rows: int
    precursor_gain: float
    precursor_noise: float
    source: dict[str, Any]
    format_version: int = FORMAT_VERSION

    @property
    def continuous(self) -> list[str]:
        """Sensors simulated as numbers, in `sensors` order (the rows of `loadings`)."""
        return [s for s in self.sensors if s not in self.categoricals]

    @property
    def factors(self) -> int:
        """Number of factors in the correlation model."""
        return len(self.factor_ar)

    @classmethod
    def load(cls, path: str | Path | None = None) -> PlantParams:
        """Read parameters from `path`, or the packaged `plant_params.json` when None."""
        source = Path(path) if path is not None else Path(__file__).with_name(PARAMS_FILE)
        try:
            data = json.loads(source.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read plant parameters from {source}: {exc}") from exc
        return cls.from_dict(data, origin=str(source))

    @classmethod
    def from_dict(cls, data: dict[str, Any], origin: str = "dict") -> PlantParams:
        """Build parameters from their JSON form, refusing unknown or missing keys."""
        names = {f.name for f in fields(cls)}
        unknown, missing = set(data) - names, names - set(data) - {"format_version"}
        if unknown or missing:
            raise DataError(
                f"plant parameters in {origin} do not match format {FORMAT_VERSION}: "
                f"unknown keys {sorted(unknown)}, missing keys {sorted(missing)}; "
                "regenerate them with `python -m streamer.simulate fit-params`"
            )
        if data.get("format_version", FORMAT_VERSION) != FORMAT_VERSION:
            raise DataError(f"plant parameters in {origin} have an unsupported format version")
        params = cls(**data)
        _Model.from_params(params)
        return params

    def to_dict(self) -> dict[str, Any]:
        """The JSON form of the parameters."""
        return asdict(self)

    def save(self, path: str | Path) -> Path:
        """Write the parameters as compact JSON (one key per line) and return the path."""
        target = Path(path)
        lines = [f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in self.to_dict().items()]
        target.write_text("{\n" + ",\n".join(lines) + "\n}\n", encoding="utf-8")
        return target


# ---------------------------------------------------------------------------- fitting


@dataclass(frozen=True)
class _Timeline:
    """Row times, labels and cadence of the data being fitted."""

    seconds: np.ndarray
    labels: np.ndarray
    interval: float

    @property
    def contiguous(self) -> np.ndarray:
        """For each row but the first: whether it follows the previous one by one interval."""
        return np.diff(self.seconds) == self.interval

    @property
    def to_next_break(self) -> np.ndarray:
        """Seconds from each row to the next break row at or after it (inf if none)."""
        break_times = self.seconds[self.labels == 1]
        if break_times.size == 0:
            return np.full(self.seconds.shape, np.inf)
        pos = np.searchsorted(break_times, self.seconds, side="left")
        padded = np.append(break_times, np.inf)
        return padded[pos] - self.seconds

    @property
    def days(self) -> float:
        """Calendar span of the data in days."""
        return float(self.seconds[-1] - self.seconds[0] + self.interval) / _SECONDS_PER_DAY


def fit_params(
    df: pd.DataFrame,
    time_column: str = "time",
    label_column: str = "y",
    time_format: str | None = "%m/%d/%y %H:%M",
    *,
    factors: int = DEFAULT_FACTORS,
    drift_factors: int = DEFAULT_DRIFT_FACTORS,
    precursor_sensors: int = DEFAULT_PRECURSOR_SENSORS,
    precursor_gain: float = DEFAULT_PRECURSOR_GAIN,
) -> PlantParams:
    """Fit the simulator's figures from one machine's rows, shaped like the dev CSV."""
    stamps = _parse_times(df[time_column], time_format)
    order = np.argsort(stamps.to_numpy(), kind="stable")
    frame = df.iloc[order].reset_index(drop=True)
    timeline = _timeline(stamps.iloc[order], frame[label_column], time_column)
    sensors = [
        c
        for c in frame.columns
        if c not in {time_column, label_column} and pd.api.types.is_numeric_dtype(frame[c])
    ]
    categoricals = _detect_categoricals(frame[sensors])
    continuous = [s for s in sensors if s not in categoricals]
    center, scale, z = _standardize(frame[continuous].to_numpy(dtype=float))
    n_breaks = int(timeline.labels.sum())
    logger.info(
        "fitting %d sensors from %d rows with %d breaks", len(sensors), len(frame), n_breaks
    )
    return PlantParams(
        sensors=sensors,
        categoricals=categoricals,
        interval_seconds=float(timeline.interval),
        mean=_rounded(center),
        scale=_rounded(scale),
        **_fit_process(z, frame, categoricals, timeline, factors, drift_factors),
        **_fit_categoricals(frame, categoricals, timeline),
        **_fit_breaks(z, timeline, continuous, precursor_sensors, precursor_gain),
        source={"rows": len(frame), "breaks": n_breaks, "days": _sig(timeline.days)},
    )


def _fit_process(
    z: np.ndarray,
    frame: pd.DataFrame,
    categoricals: dict[str, list[int]],
    timeline: _Timeline,
    factors: int,
    drift_factors: int,
) -> dict[str, Any]:
    """Grade offsets, slow drift, and the factor model of the remaining fast process."""
    grade = _grade_sensor(categoricals)
    offsets, z_fast = _remove_grade(z, frame, grade, categoricals)
    drift = _rolling_mean(z_fast, round(_SECONDS_PER_DAY / timeline.interval))
    z_fast = z_fast - drift
    normal = timeline.to_next_break > _NORMAL_MARGIN_MINUTES * 60.0
    loadings, resid, factor_ar, resid_ar = _fit_factor_model(z_fast, normal, timeline, factors)
    return {
        "loadings": [_rounded(row) for row in loadings],
        "factor_ar": _rounded(factor_ar),
        "residual_scale": _rounded(resid),
        "residual_ar": _rounded(resid_ar),
        "drift_loadings": [_rounded(row) for row in _principal_loadings(drift, drift_factors)],
        "drift_hours": _DRIFT_HOURS,
        "grade_sensor": grade,
        "grade_offsets": [_rounded(row) for row in offsets],
        "grade_transition_minutes": _GRADE_TRANSITION_MINUTES,
    }


def _fit_categoricals(
    frame: pd.DataFrame, categoricals: dict[str, list[int]], timeline: _Timeline
) -> dict[str, Any]:
    """Level shares and level changes per day of each categorical."""
    return {
        "level_probabilities": _level_probabilities(frame, categoricals),
        "level_changes_per_day": _level_changes(frame, categoricals, timeline),
    }


def _fit_breaks(
    z: np.ndarray, timeline: _Timeline, continuous: list[str], count: int, gain: float
) -> dict[str, Any]:
    """Break rate, the gap of missing rows after a break, and the pre-break drift."""
    gap_mean, gap_sd, gap_max = _fit_gaps(timeline)
    pre_idx, pre_shift, pre_rows = _fit_precursor(z, timeline, count)
    return {
        "breaks_per_day": _sig(timeline.labels.sum() / timeline.days),
        "min_break_spacing_minutes": _MIN_BREAK_SPACING_MINUTES,
        "gap_log_mean": _sig(gap_mean),
        "gap_log_sd": _sig(gap_sd),
        "gap_max_rows": gap_max,
        "precursor_sensors": [continuous[i] for i in pre_idx],
        "precursor_shift": _rounded(pre_shift),
        "precursor_rows": pre_rows,
        "precursor_gain": float(gain),
        "precursor_noise": DEFAULT_PRECURSOR_NOISE,
    }


def _sig(value: float, digits: int = 5) -> float:
    """A float rounded to `digits` significant digits."""
    return float(f"{float(value):.{digits}g}")


def _rounded(values: np.ndarray | Sequence[float]) -> list[float]:
    """A list of floats rounded to five significant digits."""
    return [_sig(v) for v in np.asarray(values, dtype=float).ravel()]


def _parse_times(raw: pd.Series, time_format: str | None) -> pd.Series:
    """Row times as UTC timestamps; naive times are taken as UTC."""
    if pd.api.types.is_datetime64_any_dtype(raw):
        return pd.to_datetime(raw, utc=True)
    try:
        return pd.to_datetime(raw, format=time_format, utc=True)
    except (ValueError, TypeError) as exc:
        raise DataError(f"cannot parse times with format {time_format!r}: {exc}") from exc


def _timeline(stamps: pd.Series, labels: pd.Series, time_column: str) -> _Timeline:
    """Epoch seconds, labels and the sampling cadence (the commonest step)."""
    seconds = (stamps - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy()
    if seconds.size < 3:
        raise DataError(f"need at least 3 rows to fit plant parameters, got {seconds.size}")
    steps, counts = np.unique(np.diff(seconds), return_counts=True)
    interval = float(steps[np.argmax(counts)])
    if interval <= 0:
        raise DataError(f"column {time_column!r} has duplicate times; one machine is expected")
    return _Timeline(
        seconds=seconds, labels=labels.fillna(0).to_numpy(dtype=int), interval=interval
    )


def _detect_categoricals(frame: pd.DataFrame) -> dict[str, list[int]]:
    """Columns holding a handful of integer values, with their sorted levels."""
    found: dict[str, list[int]] = {}
    for name in frame.columns:
        values = frame[name].dropna().to_numpy(dtype=float)
        levels = np.unique(values)
        if len(levels) <= _MAX_CATEGORICAL_LEVELS and np.all(levels == np.round(levels)):
            found[name] = [int(v) for v in levels]
    return found


def _grade_sensor(categoricals: dict[str, list[int]]) -> str | None:
    """The categorical with the most levels (the paper grade), if it has enough of them."""
    if not categoricals:
        return None
    name = max(categoricals, key=lambda c: len(categoricals[c]))
    return name if len(categoricals[name]) >= _GRADE_MIN_LEVELS else None


def _standardize(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Winsorized means and spreads per column, and the standardized values."""
    filled = np.where(np.isnan(raw), np.nanmedian(raw, axis=0), raw)
    low, high = np.quantile(filled, [_WINSOR_QUANTILE, 1 - _WINSOR_QUANTILE], axis=0)
    clipped = np.clip(filled, low, high)
    center = clipped.mean(axis=0)
    spread = clipped.std(axis=0)
    floor = 1e-6 * np.maximum(np.abs(center), 1.0)
    scale = np.where(spread > floor, spread, np.maximum(filled.std(axis=0), floor))
    return center, scale, (clipped - center) / scale


def _remove_grade(
    z: np.ndarray, frame: pd.DataFrame, grade: str | None, categoricals: dict[str, list[int]]
) -> tuple[np.ndarray, np.ndarray]:
    """Shrunken mean offset of each grade level, and the values with it removed."""
    if grade is None:
        return np.zeros((0, z.shape[1])), z
    levels = np.asarray(categoricals[grade])
    index = np.searchsorted(levels, frame[grade].to_numpy(dtype=float))
    offsets = np.zeros((len(levels), z.shape[1]))
    for i in range(len(levels)):
        rows = z[index == i]
        offsets[i] = rows.sum(axis=0) / (len(rows) + _SHRINK_ROWS)
    return offsets, z - offsets[index]


def _rolling_mean(z: np.ndarray, window: int) -> np.ndarray:
    """Centered rolling mean over `window` rows (the slow drift)."""
    window = max(1, min(window, len(z)))
    rolled = pd.DataFrame(z).rolling(window, center=True, min_periods=max(1, window // 4))
    return rolled.mean().to_numpy()


def _lag1(values: np.ndarray, contiguous: np.ndarray) -> np.ndarray:
    """Lag-one autocorrelation per column over pairs of contiguous rows, in [0, 0.9995]."""
    now, before = values[1:][contiguous], values[:-1][contiguous]
    now, before = now - now.mean(axis=0), before - before.mean(axis=0)
    denom = np.sqrt((now**2).sum(axis=0) * (before**2).sum(axis=0))
    corr = np.divide((now * before).sum(axis=0), denom, out=np.zeros(now.shape[1]), where=denom > 0)
    return np.clip(corr, 0.0, _MAX_AR)


def _principal_loadings(z: np.ndarray, count: int) -> np.ndarray:
    """Loadings (columns x count) of the leading principal factors of the covariance."""
    loadings, _ = _principal_factors(np.cov(z, rowvar=False), count)
    return loadings


def _principal_factors(cov: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Loadings of the leading principal factors, and the matching score weights."""
    values, vectors = np.linalg.eigh(np.atleast_2d(cov))
    keep = np.argsort(values)[::-1][: min(count, len(values))]
    values, vectors = np.clip(values[keep], 1e-12, None), vectors[:, keep]
    vectors = vectors * np.sign(vectors[np.abs(vectors).argmax(axis=0), range(len(keep))])
    return vectors * np.sqrt(values), vectors / np.sqrt(values)


def _fit_factor_model(
    z: np.ndarray, normal: np.ndarray, timeline: _Timeline, factors: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Loadings, residual spreads and AR(1) coefficients of a principal-factor model."""
    cov = np.cov(z[normal] if normal.sum() > z.shape[1] else z, rowvar=False)
    loadings, weights = _principal_factors(cov, factors)
    resid = np.sqrt(np.clip(np.diag(cov) - (loadings**2).sum(axis=1), 1e-4, None))
    scores = z @ weights
    residuals = (z - scores @ loadings.T) / resid
    contiguous = timeline.contiguous
    return loadings, resid, _lag1(scores, contiguous), _lag1(residuals, contiguous)


def _level_probabilities(
    frame: pd.DataFrame, categoricals: dict[str, list[int]]
) -> dict[str, list[float]]:
    """Share of rows at each level of each categorical."""
    shares = {}
    for name, levels in categoricals.items():
        counts = frame[name].value_counts(normalize=True)
        shares[name] = _rounded([counts.get(level, 0.0) for level in levels])
    return shares


def _level_changes(
    frame: pd.DataFrame, categoricals: dict[str, list[int]], timeline: _Timeline
) -> dict[str, float]:
    """Level changes per day of each categorical, counted between contiguous rows."""
    contiguous = timeline.contiguous
    days = max(contiguous.sum() * timeline.interval / _SECONDS_PER_DAY, 1e-9)
    changes = {}
    for name in categoricals:
        values = frame[name].to_numpy(dtype=float)
        changes[name] = _sig(np.sum((np.diff(values) != 0) & contiguous) / days)
    return changes


def _fit_gaps(timeline: _Timeline) -> tuple[float, float, int]:
    """Log-normal fit of the rows missing after a break: log mean, log sd and a cap."""
    after = np.flatnonzero(timeline.labels[:-1] == 1)
    if after.size == 0:
        return math.log1p(5.0), 0.5, 10
    gaps = np.diff(timeline.seconds)[after] / timeline.interval - 1.0
    logs = np.log1p(np.clip(gaps, 0.0, None))
    cap = max(2, math.ceil(float(np.quantile(gaps, 0.95))))
    return float(logs.mean()), float(logs.std()), cap


def _fit_precursor(
    z: np.ndarray, timeline: _Timeline, count: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Sensors, signed standardized shifts and length in rows of the pre-break drift."""
    ahead = timeline.to_next_break
    before = (ahead > 0) & (ahead <= _PRECURSOR_WINDOW_MINUTES * 60.0)
    normal = ahead > _NORMAL_MARGIN_MINUTES * 60.0
    if not before.any() or not normal.any():
        return np.zeros(0, dtype=int), np.zeros(0), _rows(_PRECURSOR_MINUTES_RANGE[1], timeline)
    shift = z[before].mean(axis=0) - z[normal].mean(axis=0)
    top = np.argsort(-np.abs(shift), kind="stable")[:count]
    rows = _precursor_rows(z[:, top] * np.sign(shift[top]), timeline)
    return top, shift[top], rows


def _rows(minutes: float, timeline: _Timeline) -> int:
    """Whole rows spanning `minutes` at the data's cadence, at least one."""
    return max(1, round(minutes * 60.0 / timeline.interval))


def _precursor_rows(signed: np.ndarray, timeline: _Timeline) -> int:
    """Rows before a break over which the signed precursor sensors depart from baseline.

    Each lag is compared with the same break's own rows 32-60 minutes earlier, so that a
    standing offset of break-prone periods is not mistaken for a ramp; the precursor
    starts where the mean departure falls to a tenth of its value next to the break.
    """
    low, high = (_rows(minutes, timeline) for minutes in _PRECURSOR_MINUTES_RANGE)
    near, far = (_rows(minutes, timeline) for minutes in _BASELINE_MINUTES)
    contiguous = np.append(False, timeline.contiguous)
    profiles = []
    for b in np.flatnonzero(timeline.labels == 1):
        span = slice(b - far, b)
        if b < far or not contiguous[b - far + 1 : b + 1].all() or timeline.labels[span].any():
            continue
        history = signed[span].mean(axis=1)[::-1]  # history[lag - 1] is `lag` rows back
        profiles.append(history[: near - 1] - history[near - 1 :].mean())
    if not profiles:
        return high
    profile = np.mean(profiles, axis=0)
    peak = profile[: max(2, _rows(_PRECURSOR_PEAK_MINUTES, timeline))].mean()
    if peak <= 0:
        return high
    faded = np.flatnonzero(profile <= _PRECURSOR_ONSET * peak)
    rows = int(faded[0]) if faded.size else high
    return int(np.clip(rows, low, high))


# ---------------------------------------------------------------------------- simulation


@dataclass(frozen=True)
class _Categorical:
    """How one categorical sensor is resampled each step."""

    column: int
    levels: np.ndarray
    probabilities: np.ndarray
    resample: float


@dataclass(frozen=True)
class _Model:
    """The parameters as arrays, laid out for simulation.

    A machine's state is [grade level weights | factors | drift factors | one residual per
    sensor], each part an AR(1) process; standardized readings are the first three parts
    times `mixing` plus the residuals times `resid`. Every array spans all sensors, with
    zeros in the categorical columns, so no step needs to scatter columns.
    """

    mean: np.ndarray
    scale: np.ndarray
    mixing: np.ndarray
    resid: np.ndarray
    phi: np.ndarray
    noise_scale: np.ndarray
    grade_dims: int
    categoricals: tuple[_Categorical, ...]
    grade: int | None
    precursor: np.ndarray
    precursor_shift: np.ndarray
    precursor_noise: float
    precursor_rows: int
    gap: tuple[float, float, int]
    wait_min: int
    wait_mean: float
    interval_ms: int

    @property
    def noise_dims(self) -> int:
        """Dimensions of the state driven by random innovations."""
        return len(self.noise_scale)

    @classmethod
    def from_params(cls, params: PlantParams) -> _Model:
        """Check the parameters' shapes and lay them out as arrays."""
        rows = _precursor_length(params)
        grade = params.grade_sensor
        return cls(
            **_process_arrays(params),
            categoricals=_categorical_models(params),
            grade=None if grade is None else params.sensors.index(grade),
            precursor=np.array([params.sensors.index(c) for c in params.precursor_sensors]),
            precursor_shift=params.precursor_gain * np.asarray(params.precursor_shift, dtype=float),
            precursor_noise=params.precursor_noise,
            precursor_rows=rows,
            gap=(params.gap_log_mean, params.gap_log_sd, max(1, params.gap_max_rows)),
            wait_min=_wait_min(params, rows),
            wait_mean=_wait_mean(params, rows),
            interval_ms=round(params.interval_seconds * 1000),
        )


def _process_arrays(params: PlantParams) -> dict[str, Any]:
    """Means, spreads, mixing matrix and AR(1) coefficients over all sensors' columns."""
    s = len(params.continuous)
    for name in ("mean", "scale", "residual_scale", "residual_ar"):
        if len(getattr(params, name)) != s:
            raise DataError(f"plant parameter {name!r} must have one entry per sensor ({s})")
    offsets = _sensor_matrix(params.grade_offsets, s, "grade_offsets", sensor_rows=False)
    loadings = _sensor_matrix(params.loadings, s, "loadings", sensor_rows=True)
    drift = _sensor_matrix(params.drift_loadings, s, "drift_loadings", sensor_rows=True)
    if len(offsets) != len(params.categoricals.get(params.grade_sensor or "", [])):
        raise DataError("plant parameter 'grade_offsets' needs one row per grade level")
    columns = np.array([params.sensors.index(c) for c in params.continuous], dtype=int)

    def widen(values: Any) -> np.ndarray:
        return _widen(np.asarray(values, dtype=float), columns, len(params.sensors))

    drift_phi = math.exp(-params.interval_seconds / (3600.0 * params.drift_hours))
    grade_phi = math.exp(-params.interval_seconds / (60.0 * params.grade_transition_minutes))
    noise_phi = np.concatenate(
        [params.factor_ar, np.full(len(drift), drift_phi), widen(params.residual_ar)]
    )
    return {
        "mean": widen(params.mean),
        "scale": widen(params.scale),
        "mixing": widen(np.concatenate([offsets, loadings, drift])),
        "resid": widen(params.residual_scale),
        "phi": np.concatenate([np.full(len(offsets), grade_phi), noise_phi]),
        "noise_scale": np.sqrt(1.0 - noise_phi**2),
        "grade_dims": len(offsets),
    }


def _widen(values: np.ndarray, columns: np.ndarray, width: int) -> np.ndarray:
    """Place per-continuous-sensor values (last axis) at their columns among all sensors."""
    wide = np.zeros((*values.shape[:-1], width))
    wide[..., columns] = values
    return wide


def _sensor_matrix(
    values: list[list[float]], sensors: int, name: str, *, sensor_rows: bool
) -> np.ndarray:
    """A parameter matrix as (components, sensors), checked against the sensor count."""
    matrix = np.asarray(values, dtype=float)
    if matrix.size == 0:
        return np.zeros((0, sensors))
    if sensor_rows:
        matrix = matrix.T
    if matrix.ndim != 2 or matrix.shape[1] != sensors:
        raise DataError(f"plant parameter {name!r} must have one entry per sensor ({sensors})")
    return matrix


def _precursor_length(params: PlantParams) -> int:
    """Precursor length in rows, at least one."""
    return max(1, int(params.precursor_rows))


def _categorical_models(params: PlantParams) -> tuple[_Categorical, ...]:
    """Resampling rules that reproduce each categorical's level shares and change rate.

    Resampling a level from its shares at rate c changes it at rate c * (1 - sum p^2)
    and keeps the shares stationary, so c is chosen to match the fitted change rate.
    """
    models = []
    steps_per_day = _SECONDS_PER_DAY / params.interval_seconds
    for name, levels in params.categoricals.items():
        probs = np.asarray(params.level_probabilities[name], dtype=float)
        probs = probs / probs.sum()
        churn = 1.0 - float((probs**2).sum())
        rate = params.level_changes_per_day.get(name, 0.0) / steps_per_day
        resample = min(1.0, rate / churn) if churn > 0 else 0.0
        column = params.sensors.index(name)
        models.append(_Categorical(column, np.asarray(levels, dtype=float), probs, resample))
    return tuple(models)


def _expected_gap(params: PlantParams) -> float:
    """Mean number of rows missing after a break under the fitted, capped log-normal."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(40)
    gaps = np.clip(np.round(np.expm1(params.gap_log_mean + params.gap_log_sd * nodes)), 1, None)
    gaps = np.minimum(gaps, max(1, params.gap_max_rows))
    return float((weights * gaps).sum() / weights.sum())


def _wait_min(params: PlantParams, precursor_rows: int) -> int:
    """Fewest rows between resuming after a break and the next break."""
    spacing = math.ceil(params.min_break_spacing_minutes * 60.0 / params.interval_seconds)
    return max(precursor_rows + 1, spacing)


def _wait_mean(params: PlantParams, precursor_rows: int) -> float:
    """Mean of the exponential part of the wait, so that breaks come at the fitted rate."""
    if params.breaks_per_day <= 0:
        return math.inf
    rows_per_break = _SECONDS_PER_DAY / params.interval_seconds / params.breaks_per_day
    rest = rows_per_break - 1.0 - _expected_gap(params) - _wait_min(params, precursor_rows)
    return max(rest, 1.0)


@dataclass(frozen=True)
class SimBlock:
    """Consecutive simulated steps of every machine: values, break flags and row presence."""

    ts_ms: np.ndarray
    values: np.ndarray
    breaks: np.ndarray
    present: np.ndarray


def machine_ids(machines: int) -> list[str]:
    """Names of simulated machines: PM-01, PM-02, ..."""
    return [f"PM-{i + 1:02d}" for i in range(machines)]


def _epoch_ms(start: str | pd.Timestamp) -> int:
    """Epoch milliseconds of a timestamp; naive timestamps are taken as UTC."""
    stamp = pd.Timestamp(start)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return int(stamp.value // 1_000_000)


def _block_steps(machines: int) -> int:
    """Steps generated at once: up to a day, bounded so a block stays a few megabytes."""
    return max(1, min(_MAX_BLOCK_STEPS, _BLOCK_BUDGET // machines))


class MachineSimulator:
    """Several simulated machines on one clock, advanced a block of steps at a time."""

    def __init__(
        self,
        params: PlantParams,
        machines: int = 1,
        seed: int = 0,
        start: str | pd.Timestamp = DEFAULT_START,
    ) -> None:
        if machines < 1:
            raise ValueError(f"machines must be at least 1, got {machines}")
        self.params = params
        self.machine_ids = machine_ids(machines)
        self.block_steps = _block_steps(machines)
        self._model = _Model.from_params(params)
        init, noise, events, levels = np.random.SeedSequence(seed).spawn(4)
        self._noise = np.random.default_rng(noise)
        self._events = np.random.default_rng(events)
        self._level_rng = np.random.default_rng(levels)
        self._start_ms = _epoch_ms(start)
        self._step = 0
        self._initialise(np.random.default_rng(init), machines)

    @property
    def machines(self) -> int:
        """Number of simulated machines."""
        return len(self.machine_ids)

    def _initialise(self, rng: np.random.Generator, machines: int) -> None:
        """Draw each machine's starting state from the stationary distribution."""
        model = self._model
        self._levels = np.zeros((len(model.categoricals), machines), dtype=np.int64)
        for i, cat in enumerate(model.categoricals):
            self._levels[i] = rng.choice(len(cat.levels), size=machines, p=cat.probabilities)
        noise_state = rng.standard_normal((machines, model.noise_dims))
        self._state = np.concatenate([self._grade_weights(self._levels), noise_state], axis=1)
        self._resume = np.zeros(machines, dtype=np.int64)
        self._next_break = np.array([self._sample_wait() for _ in range(machines)], dtype=np.int64)

    def _grade_weights(self, levels: np.ndarray) -> np.ndarray:
        """One-hot grade level for level indices shaped (categoricals, ...)."""
        model = self._model
        if model.grade is None:
            return np.zeros((*levels.shape[1:], 0))
        which = next(i for i, c in enumerate(model.categoricals) if c.column == model.grade)
        return np.eye(model.grade_dims)[levels[which]]

    def _sample_wait(self) -> int:
        """Rows from resuming (or starting) to the next break."""
        if math.isinf(self._model.wait_mean):
            return int(_NEVER)
        return self._model.wait_min + round(self._events.exponential(self._model.wait_mean))

    def _sample_gap(self) -> int:
        """Rows missing after a break."""
        mean, sd, cap = self._model.gap
        return int(np.clip(round(math.expm1(self._events.normal(mean, sd))), 1, cap))

    def block(self, steps: int | None = None) -> SimBlock:
        """Advance every machine by `steps` (default `block_steps`) and return the rows."""
        n = self.block_steps if steps is None else steps
        levels = self._advance_levels(n)
        states = self._run_states(n, levels)
        z = self._standardized(states)
        breaks, present, progress = self._schedule(n)
        self._apply_precursor(z, progress)
        values = self._values(z, levels)
        ts_ms = (
            self._start_ms + (self._step + np.arange(n, dtype=np.int64)) * self._model.interval_ms
        )
        self._step += n
        return SimBlock(ts_ms=ts_ms, values=values, breaks=breaks, present=present)

    def _advance_levels(self, n: int) -> np.ndarray:
        """Level indices of every categorical, shaped (categoricals, steps, machines)."""
        count, machines = self._levels.shape
        out = np.empty((count, n, machines), dtype=np.int64)
        for i, cat in enumerate(self._model.categoricals):
            resample = self._level_rng.random((n, machines)) < cat.resample
            draws = self._level_rng.choice(len(cat.levels), size=(n, machines), p=cat.probabilities)
            last = np.where(resample, np.arange(n)[:, None], -1)
            last = np.maximum.accumulate(last, axis=0)
            picked = np.take_along_axis(draws, np.clip(last, 0, None), axis=0)
            out[i] = np.where(last >= 0, picked, self._levels[i])
            if n:
                self._levels[i] = out[i, -1]
        return out

    def _run_states(self, n: int, levels: np.ndarray) -> np.ndarray:
        """AR(1) recursion of grade weights, factors, drift factors and residuals."""
        model, machines = self._model, self.machines
        grade = model.grade_dims
        states = np.empty((n, machines, self._state.shape[1]))
        states[..., :grade] = self._grade_weights(levels) * (1.0 - model.phi[:grade])
        states[..., grade:] = self._noise.standard_normal((n, machines, model.noise_dims))
        states[..., grade:] *= model.noise_scale
        phi, previous = model.phi, self._state
        for t in range(n):
            states[t] += phi * previous
            previous = states[t]
        self._state = previous.copy()
        return states

    def _standardized(self, states: np.ndarray) -> np.ndarray:
        """Standardized continuous readings from the state."""
        model = self._model
        mixed = len(model.mixing)
        flat = states[..., :mixed].reshape(-1, mixed)
        z = (flat @ model.mixing).reshape(*states.shape[:-1], model.mixing.shape[1])
        z += states[..., mixed:] * model.resid
        return z

    def _schedule(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Break flags, row presence and precursor progress (0 to 1) for the next steps."""
        t0, end = self._step, self._step + n
        steps = t0 + np.arange(n)
        breaks = np.zeros((n, self.machines), dtype=np.int8)
        present = steps[:, None] >= self._resume[None, :]
        progress = np.zeros((n, self.machines))
        for m in np.flatnonzero(self._next_break < end):
            while self._next_break[m] < end:
                nb = int(self._next_break[m])
                self._mark_precursor(progress[:, m], nb, t0)
                breaks[nb - t0, m] = 1
                resume = nb + 1 + self._sample_gap()
                present[nb + 1 - t0 : max(0, min(resume - t0, n)), m] = False
                self._resume[m] = resume
                self._next_break[m] = resume + self._sample_wait()
        rows = self._model.precursor_rows
        ahead = self._next_break[None, :] - steps[:, None]
        pending = (ahead >= 0) & (ahead < rows)
        progress = np.where(pending, (rows - ahead) / rows, progress)
        return breaks, present, progress

    def _mark_precursor(self, progress: np.ndarray, break_step: int, t0: int) -> None:
        """Write the ramp leading to a break at `break_step` into one machine's progress."""
        rows = self._model.precursor_rows
        first = max(break_step - rows + 1, t0)
        steps = np.arange(first, break_step + 1)
        progress[steps - t0] = (rows - (break_step - steps)) / rows

    def _apply_precursor(self, z: np.ndarray, progress: np.ndarray) -> None:
        """Add the pre-break ramp, and noise that breaks the usual correlations, in place."""
        model = self._model
        if model.precursor.size == 0:
            return
        noise = self._noise.standard_normal((*progress.shape, model.precursor.size))
        ramp = progress[..., None]
        z[..., model.precursor] += ramp * (model.precursor_shift + model.precursor_noise * noise)

    def _values(self, z: np.ndarray, levels: np.ndarray) -> np.ndarray:
        """Readings in plant units (in place of `z`), categoricals as their integer levels."""
        model = self._model
        z *= model.scale
        z += model.mean
        for i, cat in enumerate(model.categoricals):
            z[..., cat.column] = cat.levels[levels[i]]
        return z

    def rows(self) -> Iterator[dict[str, Any]]:
        """Endless contract-shaped rows, machines interleaved in time order."""
        names = list(self.params.sensors)
        ids = self.machine_ids
        while True:
            block = self.block()
            values, breaks = block.values.tolist(), block.breaks.tolist()
            present, stamps = block.present.tolist(), block.ts_ms.tolist()
            for ts, row_values, row_breaks, row_present in zip(
                stamps, values, breaks, present, strict=True
            ):
                for machine, vals, brk, here in zip(
                    ids, row_values, row_breaks, row_present, strict=True
                ):
                    if here:
                        yield {
                            "machine_id": machine,
                            "ts": ts,
                            "values": dict(zip(names, vals, strict=True)),
                            "break": brk,
                        }


def iter_rows(
    params: PlantParams,
    machines: int = 1,
    seed: int = 0,
    start: str | pd.Timestamp = DEFAULT_START,
) -> Iterator[dict[str, Any]]:
    """Endless sensor rows in the contract form (`ts` in epoch ms), in time order."""
    return MachineSimulator(params, machines=machines, seed=seed, start=start).rows()


def simulate_history(
    params: PlantParams,
    machines: int = 1,
    days: float = 1.0,
    seed: int = 0,
    start: str | pd.Timestamp = DEFAULT_START,
) -> pd.DataFrame:
    """A frame of simulated rows (machine_id, ts, break, sensors), by machine then time."""
    sim = MachineSimulator(params, machines=machines, seed=seed, start=start)
    total = max(0, round(days * _SECONDS_PER_DAY / params.interval_seconds))
    blocks = []
    generated = 0
    while generated < total:
        blocks.append(sim.block())
        generated += sim.block_steps
    if not blocks:
        blocks.append(sim.block(0))
    return _history_frame(blocks, total, sim.machine_ids, params.sensors)


def _history_frame(
    blocks: list[SimBlock], total: int, ids: list[str], sensors: list[str]
) -> pd.DataFrame:
    """Stack blocks into a machine-major frame without the missing rows."""
    ts_ms = np.concatenate([b.ts_ms for b in blocks])[:total]
    values = np.concatenate([b.values for b in blocks])[:total].transpose(1, 0, 2)
    breaks = np.concatenate([b.breaks for b in blocks])[:total].T.ravel()
    present = np.concatenate([b.present for b in blocks])[:total].T.ravel()
    frame = pd.DataFrame(values.reshape(-1, len(sensors))[present], columns=sensors)
    stamps = pd.to_datetime(np.tile(ts_ms, len(ids))[present], unit="ms", utc=True)
    frame.insert(0, "break", breaks[present].astype(np.int64))
    frame.insert(0, "ts", stamps.astype("datetime64[ns, UTC]"))
    frame.insert(0, "machine_id", np.repeat(np.asarray(ids, dtype=object), len(ts_ms))[present])
    return frame


# ---------------------------------------------------------------------------- command line


def _parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    parser = argparse.ArgumentParser(
        prog="python -m streamer.simulate",
        description=(
            "Fit the plant simulator that feeds demos, tests and load runs. Example: "
            "python -m streamer.simulate fit-params "
            "--data ../shared/data/processminer-sheet-breaks-dev.csv "
            "--out streamer/plant_params.json"
        ),
    )
    commands = parser.add_subparsers(dest="command", required=True)
    fit = commands.add_parser(
        "fit-params",
        help="fit simulator figures from a sensor CSV and write them as JSON",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description=(
            "Fit means, spreads, a factor model of the correlations, AR(1) coefficients, "
            "drift, grade offsets, categorical levels, break rate, post-break gaps and the "
            "pre-break drift from a CSV of one machine shaped like "
            "processminer-sheet-breaks-dev.csv. The output holds figures only, never rows."
        ),
    )
    for flag, text in (("--data", "CSV of one machine's rows"), ("--out", "JSON file to write")):
        fit.add_argument(flag, required=True, type=Path, default=argparse.SUPPRESS, help=text)
    fit.add_argument("--time-column", default="time", help="time column")
    fit.add_argument("--label-column", default="y", help="break label column (1 = break)")
    fit.add_argument(
        "--time-format", default="%m/%d/%y %H:%M", help="strptime format of the time column"
    )
    fit.add_argument(
        "--factors", type=int, default=DEFAULT_FACTORS, help="factors of the fast correlations"
    )
    fit.add_argument(
        "--drift-factors", type=int, default=DEFAULT_DRIFT_FACTORS, help="factors of the drift"
    )
    fit.add_argument(
        "--precursor-sensors",
        type=int,
        default=DEFAULT_PRECURSOR_SENSORS,
        help="sensors that drift before a break",
    )
    fit.add_argument(
        "--precursor-gain",
        type=float,
        default=DEFAULT_PRECURSOR_GAIN,
        help="amplification of the fitted pre-break shift (1 = as in the data)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the simulator's command line."""
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not args.data.is_file():
        parser.error(f"--data {args.data} is not a file; give the path of a sensor CSV")
    frame = pd.read_csv(args.data)
    params = fit_params(
        frame,
        time_column=args.time_column,
        label_column=args.label_column,
        time_format=args.time_format,
        factors=args.factors,
        drift_factors=args.drift_factors,
        precursor_sensors=args.precursor_sensors,
        precursor_gain=args.precursor_gain,
    )
    path = params.save(args.out)
    logger.info("wrote %s (%d bytes)", path, path.stat().st_size)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
