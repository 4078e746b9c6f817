"""From a read table to model-ready arrays, with exactly the streamer's preprocessing."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from streamer.errors import DataError
from streamer.features import FeatureSpec, infer_categoricals
from streamer.labels import Horizon, curve_shift, event_onsets, interval_labels
from streamer.windows import segment_ids
from trainer.data import LABEL, MACHINE, Table

log = logging.getLogger(__name__)


def feature_spec(table: Table, categorical: str | Sequence[str], mode: str) -> FeatureSpec:
    """Choose categoricals: ``"auto"`` (integer columns with few levels), ``"none"`` or names."""
    if categorical == "auto":
        found = infer_categoricals(table.frame, table.sensors)
    elif categorical == "none":
        found = {}
    else:
        names = list(categorical)
        unknown = [n for n in names if n not in table.sensors]
        if unknown:
            raise DataError(f"categorical columns {unknown} are not sensor columns")
        every = infer_categoricals(table.frame, names, max_levels=10_000)
        found = {n: every.get(n, ()) for n in names}
    return FeatureSpec(sensors=table.sensors, categoricals=found, categorical_mode=mode)


@dataclass(frozen=True)
class Prepared:
    """Kept rows (break rows removed) as unscaled features with labels, times and segments."""

    rows: np.ndarray
    labels: np.ndarray
    times: np.ndarray
    groups: np.ndarray
    segments: np.ndarray
    source_index: np.ndarray
    break_times: np.ndarray
    break_groups: np.ndarray
    interval_minutes: float
    max_gap_minutes: float
    label_mode: str = "event"

    def __len__(self) -> int:
        return int(self.rows.shape[0])


def sampling_interval(times: np.ndarray, groups: np.ndarray) -> float:
    """Median minutes between consecutive rows of a machine."""
    same = groups[1:] == groups[:-1]
    steps = np.diff(times)[same]
    steps = steps[steps > 0]
    return float(np.median(steps)) if steps.size else 1.0


def prepare(
    table: Table,
    spec: FeatureSpec,
    horizon: Horizon,
    label_mode: str = "event",
    max_gap_minutes: float | None = None,
) -> Prepared:
    """Fill short sensor gaps, shift labels ahead, cut segments and build the feature rows."""
    frame = table.frame
    times, groups = table.times_minutes(), table.machine_codes()
    flags = frame[LABEL].to_numpy()
    interval = sampling_interval(times, groups)
    gap = float(max_gap_minutes) if max_gap_minutes is not None else 5.0 * interval
    if label_mode == "event":
        labels, keep = curve_shift(flags, times, groups, horizon)
        segments = segment_ids(times, groups, flags, gap)
    else:
        labels, keep = interval_labels(flags)
        segments = segment_ids(times, groups, np.zeros_like(flags), gap)
    onsets = event_onsets(flags, groups, label_mode)
    values = frame[list(spec.sensors)].groupby(frame[MACHINE], sort=False).ffill()
    complete = values.notna().all(axis=1).to_numpy()
    if (~complete & keep).any():
        log.warning(
            "dropping %d rows with missing sensors and no earlier value to carry",
            int((~complete & keep).sum()),
        )
    keep &= complete
    rows = spec.matrix(values.loc[keep])
    return Prepared(
        rows=rows,
        labels=labels[keep],
        times=times[keep],
        groups=groups[keep],
        segments=segments[keep],
        source_index=np.flatnonzero(keep),
        break_times=times[onsets],
        break_groups=groups[onsets],
        interval_minutes=interval,
        max_gap_minutes=gap,
        label_mode=label_mode,
    )
