"""The scores of every method on one fold; methods that share a model share its training."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from streamer.errorscore import ErrorScore
from streamer.features import Scaler
from streamer.scoring import Scorer
from streamer.windows import make_windows
from trainer.ensemble import combine
from trainer.inputs import Source
from trainer.methods import AUTOENCODERS, Inputs, Method, Part
from trainer.models import ModelConfig, fit_model
from trainer.supervised import (
    fit_head,
    head_scores,
    recipe_features,
    widened_labels,
    window_features,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScoreOptions:
    """Training settings shared by every method of a backtest."""

    lookback: int = 5
    epochs: int = 200
    widen_minutes: float = 20.0
    seed: int = 0
    progress: bool = False


class FoldScores:
    """Scores over all prepared rows (NaN where a row has no window) for one fold's models."""

    def __init__(
        self, source: Source, options: ScoreOptions, train: np.ndarray, val: np.ndarray
    ) -> None:
        self.source, self.options = source, options
        self.train, self.val = train, val
        self.residuals: dict[tuple[str, Inputs, int], tuple[np.ndarray, np.ndarray]] = {}
        self.parts: dict[Part, np.ndarray] = {}
        self.seconds: dict[str, float] = {}
        # What was trained, for a bundle to carry: (model, scaler, training history) per
        # autoencoder key, the error score per part, the fitted head per supervised part.
        self.trained: dict[tuple[str, Inputs, int], tuple[Any, Scaler, dict[str, Any]]] = {}
        self.error_scores: dict[Part, ErrorScore] = {}
        self.heads: dict[Part, Any] = {}

    def method(self, method: Method) -> np.ndarray:
        """The method's score: its parts combined, then smoothed."""
        members = [self.part(p) for p in method.parts]
        if len(members) == 1:
            scores = members[0]
        else:
            reference = self.val & np.all([np.isfinite(m) for m in members], axis=0)
            scores = combine(members, reference, method.combine)
        return smooth(scores, self.source.prepared.segments, method.smooth)

    def part(self, part: Part) -> np.ndarray:
        """One part's score (computed once per fold)."""
        if part not in self.parts:
            started = time.perf_counter()
            if part.model in AUTOENCODERS:
                self.parts[part] = self._reconstruction_score(part)
            else:
                self.parts[part] = self._supervised_score(part)
            self.seconds[str(part)] = time.perf_counter() - started
        return self.parts[part]

    def lookback(self, part: Part) -> int:
        """The part's window length."""
        return self._lookback(part)

    def _lookback(self, part: Part) -> int:
        return part.lookback or self.options.lookback

    def _reconstruction_score(self, part: Part) -> np.ndarray:
        prepared = self.source.prepared
        ends, residuals = self._residuals(part)
        normal_val = self.val[ends] & (prepared.labels[ends] == 0)
        errors = self.error_scores[part] = ErrorScore.fit(part.errors, residuals[normal_val])
        scores = np.full(len(prepared), np.nan)
        scores[ends] = errors.score(residuals)
        return scores

    def _residuals(self, part: Part) -> tuple[np.ndarray, np.ndarray]:
        """Window ends and signed scaled residuals of the last row, per trained model."""
        key = (part.model, part.inputs, self._lookback(part))
        if key not in self.residuals:
            prepared, opts = self.source.prepared, self.options
            rows = self.source.rows(part.inputs)
            windows, ends = make_windows(rows, prepared.segments, key[2])
            normal = prepared.labels[ends] == 0
            train = self.train[ends] & normal
            scaler = Scaler.fit(rows[ends[train]])
            scaled = scaler.transform(windows)
            model, history = fit_model(
                ModelConfig(kind=part.model, epochs=opts.epochs),
                scaled[train],
                scaled[self.val[ends] & normal],
                opts.seed,
                opts.progress,
            )
            self.trained[key] = (model, scaler, history)
            recon = Scorer(model, key[2]).reconstruct(scaled)
            self.residuals[key] = (ends, scaled[:, -1, :] - recon)
        return self.residuals[key]

    def _supervised_score(self, part: Part) -> np.ndarray:
        prepared = self.source.prepared
        rows = self.source.rows(part.inputs)
        if part.recipe:
            features, ends = recipe_features(rows, prepared.segments, self._lookback(part))
        else:
            features, ends = window_features(rows, prepared.segments, self._lookback(part))
        labels = widened_labels(prepared, self.options.widen_minutes)[ends]
        train = self.train[ends]
        rounds = "folds" if part.recipe else "fixed"
        head = fit_head(part.model, features[train], labels[train], self.options.seed, rounds)
        self.heads[part] = head
        scores = np.full(len(prepared), np.nan)
        scores[ends] = head_scores(head, features)
        return scores


def smooth(scores: np.ndarray, segments: np.ndarray, rows: int) -> np.ndarray:
    """Mean of each row's score and the scores of up to ``rows - 1`` rows before it in its
    segment; rows without a score keep none."""
    if rows <= 1:
        return scores
    series = pd.Series(scores)
    means = series.groupby(segments).rolling(rows, min_periods=1).mean().to_numpy()
    return np.where(np.isfinite(scores), means, np.nan)
