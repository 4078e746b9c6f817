"""Walk-forward evaluation: train only on the days before each test block, slide, pool.

Every method is judged on exactly the same folds, thresholds are chosen on the days just
before each test block, and the test blocks are pooled for the table. Method names are
described in :mod:`trainer.methods`.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from streamer.episodes import EpisodePolicy
from streamer.events import MINUTES_PER_DAY
from streamer.labels import Horizon
from trainer.adaptive import choose_calibration
from trainer.backtest_table import table_text, write_outputs
from trainer.data import DataOptions, Table, read_table
from trainer.evaluate import judge
from trainer.inputs import Source
from trainer.methods import Method, parse_method
from trainer.metrics import bootstrap_ci, row_metrics
from trainer.prepare import Prepared, feature_spec, prepare
from trainer.split import clear_of_breaks
from trainer.threshold import choose_threshold
from trainer.variants import FoldScores, ScoreOptions

__all__ = ["BacktestSettings", "Fold", "backtest", "make_folds", "table_text"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BacktestSettings:
    """What ``trainer backtest`` compares, and on which folds."""

    data: tuple[str, ...]
    out: Path
    data_options: DataOptions = field(default_factory=DataOptions)
    methods: tuple[str, ...] = ("pca", "dense", "lstm")
    folds: int = 4
    min_train_days: float = 8.0
    val_days: float = 2.0
    lookback: int = 5
    horizon: Horizon = field(default_factory=Horizon)
    epochs: int = 200
    budget: float = 2.0
    min_lead: float = 2.0
    max_lead: float = 20.0
    clear_rows: int = 3
    recentre_minutes: float = 60.0
    calibration_minutes: float = 1440.0
    widen_minutes: float = 20.0
    seed: int = 0
    progress: bool = False
    cadence_days: float = 0.0  # > 0: retrain before every block this long (the closed loop)
    trailing_days: float = 0.0  # > 0: train on only this many days before each block

    def score_options(self) -> ScoreOptions:
        """What the scoring of each fold needs."""
        return ScoreOptions(
            self.lookback, self.epochs, self.widen_minutes, self.seed, self.progress
        )


@dataclass(frozen=True)
class Fold:
    """Row masks of one fold (over the prepared rows)."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def make_folds(prepared: Prepared, settings: BacktestSettings) -> list[Fold]:
    """Test blocks of equal length after ``min_train_days`` (``folds`` of them, or one every
    ``cadence_days`` as a plant retraining on that cadence would meet them); validation
    just before each; training on every earlier day, or on the ``trailing_days`` before."""
    times = prepared.times
    start, end = float(times.min()), float(times.max()) + 1e-6
    first = start + settings.min_train_days * MINUTES_PER_DAY
    if first >= end:
        raise ValueError(
            f"the data spans {(end - start) / MINUTES_PER_DAY:.1f} days; "
            f"--min-train-days {settings.min_train_days} leaves nothing to test"
        )
    if settings.cadence_days > 0:
        step = settings.cadence_days * MINUTES_PER_DAY
        edges = np.append(np.arange(first, end - step / 2, step), end)
    else:
        edges = np.linspace(first, end, settings.folds + 1)
    guard = settings.max_lead
    edges[:-1] = [clear_of_breaks(float(e), prepared.break_times, guard) for e in edges[:-1]]
    folds = []
    for lo, hi in itertools.pairwise(edges):
        val_start = clear_of_breaks(
            lo - settings.val_days * MINUTES_PER_DAY, prepared.break_times, guard
        )
        oldest = val_start - settings.trailing_days * MINUTES_PER_DAY
        folds.append(
            Fold(
                train=(times < val_start) & (times >= oldest if settings.trailing_days else True),
                val=(times >= val_start) & (times < lo),
                test=(times >= lo) & (times < hi),
            )
        )
    return folds


@dataclass
class MethodResult:
    """Pooled test figures of one method over all folds."""

    method: str
    scores: list[np.ndarray] = field(default_factory=list)
    labels: list[np.ndarray] = field(default_factory=list)
    warned: list[np.ndarray] = field(default_factory=list)
    leads: list[np.ndarray] = field(default_factory=list)
    false_alarms: list[int] = field(default_factory=list)
    days: list[float] = field(default_factory=list)
    thresholds: list[str] = field(default_factory=list)

    def row(self) -> dict[str, Any]:
        """The table row: pooled row- and event-level figures with intervals."""
        warned = np.concatenate(self.warned) if self.warned else np.zeros(0, bool)
        leads = np.concatenate(self.leads) if self.leads else np.zeros(0)
        fold_aucs = [
            row_metrics(y, s, 0.0)["roc_auc"] for y, s in zip(self.labels, self.scores, strict=True)
        ]
        rows = row_metrics(np.concatenate(self.labels), np.concatenate(self.scores), 0.0)
        days = sum(self.days)
        return {
            "method": self.method,
            "roc_auc_mean_over_folds": float(np.nanmean(fold_aucs)),
            "roc_auc_pooled": rows["roc_auc"],
            "pr_auc_pooled": rows["pr_auc"],
            "breaks": int(warned.size),
            "breaks_warned": int(warned.sum()),
            "event_recall": float(warned.mean()) if warned.size else float("nan"),
            "event_recall_ci": bootstrap_ci(warned.astype(float), np.mean),
            "median_lead_minutes": float(np.median(leads[warned]))
            if warned.any()
            else float("nan"),
            "false_alarm_episodes_per_day": sum(self.false_alarms) / days if days else float("nan"),
            "false_alarms_per_day_by_fold": [
                fa / d if d else float("nan")
                for fa, d in zip(self.false_alarms, self.days, strict=True)
            ],
            "thresholds_by_fold": self.thresholds,
            "days": days,
        }


def backtest(
    settings: BacktestSettings,
    table: Table | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Run every method on every fold; write the table, JSON, CSV and plot to ``out``."""
    say = on_stage or log.info
    methods = [parse_method(m, settings.recentre_minutes) for m in settings.methods]
    table = table if table is not None else read_table(settings.data, settings.data_options)
    spec = feature_spec(table, "auto", "drop")
    prepared = prepare(table, spec, settings.horizon, settings.data_options.label_mode)
    source = Source.of(table, spec, prepared)
    folds = make_folds(prepared, settings)
    say(f"{len(folds)} folds over {table.summary()}")
    results = [MethodResult(m.name) for m in methods]
    for k, fold in enumerate(folds):
        scores = FoldScores(source, settings.score_options(), fold.train, fold.val)
        for method, result in zip(methods, results, strict=True):
            _run_fold(settings, prepared, scores, method, fold, result)
            say(
                f"fold {k + 1}/{len(folds)} {result.method}: {result.thresholds[-1]}, "
                f"{int(result.warned[-1].sum())} of {result.warned[-1].size} breaks warned, "
                f"{result.false_alarms[-1]} false alarms"
            )
    rows = [r.row() for r in results]
    write_outputs(settings.out, rows, settings)
    return rows


def _run_fold(
    settings: BacktestSettings,
    prepared: Prepared,
    fold_scores: FoldScores,
    method: Method,
    fold: Fold,
    result: MethodResult,
) -> None:
    scores = fold_scores.method(method)
    policy = EpisodePolicy(settings.clear_rows)
    leads = (settings.min_lead, settings.max_lead)
    choice = choose_threshold(
        "events",
        prepared,
        scores,
        fold.val,
        policy,
        settings.budget,
        min_lead=leads[0],
        max_lead=leads[1],
        alert_share=method.alert_share,
    )
    decide, threshold = scores, choice.value
    result.thresholds.append(f"threshold {choice.value:.4g}")
    if method.adaptive:
        adaptive = choose_calibration(
            prepared,
            scores,
            fold.val,
            fold.val | fold.test,
            policy,
            settings.budget,
            choice.value,
            settings.calibration_minutes,
            method.adaptive,
            leads,
        )
        decide, threshold = adaptive.margins, 0.0
        result.thresholds[-1] = adaptive.describe()
    judged = judge(prepared, decide, fold.test, threshold, policy, *leads, intervals=False)
    kept = fold.test & np.isfinite(decide)
    # Ranking figures describe the score itself, whatever decides the alerts.
    result.scores.append(scores[kept])
    result.labels.append(judged.labels)
    result.warned.append(judged.events.warned)
    result.leads.append(judged.events.leads)
    result.false_alarms.append(judged.events.false_alarms)
    result.days.append(judged.events.days)
