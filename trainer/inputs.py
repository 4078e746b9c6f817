"""Model input rows for the backtest's methods: re-centred, one-hot, differenced.

Every transform is causal (a row depends only on its machine's earlier rows), so it is
computed once over the whole table and shared by all folds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from streamer.baseline import Baseline, recentre_table
from streamer.features import FeatureSpec
from streamer.history import deviation_table
from trainer.data import MACHINE, Table
from trainer.methods import Inputs
from trainer.prepare import Prepared


@dataclass
class Source:
    """The prepared rows and what the options need besides: categoricals and restarts."""

    prepared: Prepared
    categories: np.ndarray
    onehot: np.ndarray
    cache: dict[Inputs, np.ndarray] = field(default_factory=dict)

    @classmethod
    def of(cls, table: Table, spec: FeatureSpec, prepared: Prepared) -> Source:
        """Categorical columns of the kept rows, raw and one-hot encoded."""
        names = list(spec.categoricals)
        frame = table.frame[names].groupby(table.frame[MACHINE], sort=False).ffill()
        kept = frame.iloc[prepared.source_index]
        categories = kept.to_numpy(dtype=np.float64).reshape(len(prepared), len(names))
        onehot_spec = FeatureSpec(spec.sensors, spec.categoricals, "onehot")
        width = len(spec.continuous)
        full = table.frame.iloc[prepared.source_index][list(spec.sensors)].copy()
        full[names] = kept.to_numpy()
        onehot = onehot_spec.matrix(full)[:, width:]
        return cls(prepared, categories, onehot)

    def rows(self, inputs: Inputs) -> np.ndarray:
        """The model input rows for ``inputs`` (computed once)."""
        if inputs not in self.cache:
            self.cache[inputs] = build(self, inputs)
        return self.cache[inputs]


def build(source: Source, inputs: Inputs) -> np.ndarray:
    """Re-centre, then append first differences and one-hot categoricals, as asked."""
    p = source.prepared
    resets = _resets(source, inputs)
    rows = p.rows
    if inputs.recentre is not None:
        rows, _ = recentre_table(Baseline(inputs.recentre), p.rows, p.times, p.groups, resets)
    elif inputs.rolling is not None:
        rows = _rolling_residuals(p, inputs.rolling, resets)
    elif inputs.deviation is not None:
        rows = deviation_table(p.rows, p.segments, inputs.deviation)
    parts = [rows]
    if inputs.diffs:
        parts.append(_differences(p))
    if inputs.onehot:
        parts.append(source.onehot)
    if inputs.clock:
        parts.append(np.log1p(minutes_since_restart(p))[:, None])
    return np.ascontiguousarray(np.concatenate(parts, axis=1), dtype=np.float32)


def _resets(source: Source, inputs: Inputs) -> np.ndarray:
    p = source.prepared
    resets = np.zeros(len(p), dtype=bool)
    if inputs.segment_resets:
        resets[1:] |= p.segments[1:] != p.segments[:-1]
    if inputs.grade_resets and source.categories.size:
        resets[1:] |= (source.categories[1:] != source.categories[:-1]).any(axis=1)
    return resets


def _rolling_residuals(p: Prepared, minutes: float, resets: np.ndarray) -> np.ndarray:
    """Each row minus the plain mean of its run's rows in the previous ``minutes``."""
    runs = np.cumsum(resets | np.r_[True, p.groups[1:] != p.groups[:-1]])
    index = pd.to_datetime(p.times, unit="m")
    frame = pd.DataFrame(p.rows.astype(np.float64), index=index)
    means = (
        frame.groupby(runs)
        .rolling(f"{minutes:g}min", closed="left")
        .mean()
        .to_numpy()
        .reshape(p.rows.shape)
    )
    return np.nan_to_num(p.rows - means, nan=0.0)


def _differences(p: Prepared) -> np.ndarray:
    """Change since the previous row of the same segment (zero on a segment's first row)."""
    out = np.zeros_like(p.rows)
    same = p.segments[1:] == p.segments[:-1]
    out[1:][same] = p.rows[1:][same] - p.rows[:-1][same]
    return out


def minutes_since_restart(p: Prepared) -> np.ndarray:
    """Minutes since the first row of each row's segment (a restart, a gap or a new machine)."""
    first = np.ones(len(p), dtype=bool)
    first[1:] = p.segments[1:] != p.segments[:-1]
    start = np.maximum.accumulate(np.where(first, np.arange(len(p)), 0))
    return p.times - p.times[start]
