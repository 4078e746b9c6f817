"""Walk-forward evaluation: train only on the days before each test block, slide, pool.

Every method is judged on exactly the same folds, thresholds are chosen on the days just
before each test block, and the test blocks are pooled for the table.
"""

from __future__ import annotations

import csv
import itertools
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from streamer.episodes import EpisodePolicy
from streamer.events import MINUTES_PER_DAY
from streamer.features import Scaler
from streamer.labels import Horizon
from streamer.scoring import Scorer
from streamer.windows import make_windows
from trainer.data import DataOptions, Table, read_table
from trainer.evaluate import judge
from trainer.metrics import bootstrap_ci, row_metrics
from trainer.models import ModelConfig, fit_model
from trainer.prepare import Prepared, feature_spec, prepare
from trainer.split import clear_of_breaks
from trainer.threshold import choose_threshold

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
    seed: int = 0
    progress: bool = False


@dataclass(frozen=True)
class Fold:
    """Row masks of one fold (over the prepared rows)."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def make_folds(prepared: Prepared, settings: BacktestSettings) -> list[Fold]:
    """Test blocks of equal length after ``min_train_days``; validation just before each."""
    times = prepared.times
    start, end = float(times.min()), float(times.max()) + 1e-6
    first = start + settings.min_train_days * MINUTES_PER_DAY
    if first >= end:
        raise ValueError(
            f"the data spans {(end - start) / MINUTES_PER_DAY:.1f} days; "
            f"--min-train-days {settings.min_train_days} leaves nothing to test"
        )
    edges = np.linspace(first, end, settings.folds + 1)
    guard = settings.max_lead
    edges[:-1] = [clear_of_breaks(float(e), prepared.break_times, guard) for e in edges[:-1]]
    folds = []
    for lo, hi in itertools.pairwise(edges):
        val_start = clear_of_breaks(
            lo - settings.val_days * MINUTES_PER_DAY, prepared.break_times, guard
        )
        folds.append(
            Fold(
                train=times < val_start,
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
    false_alarms: int = 0
    days: float = 0.0
    thresholds: list[float] = field(default_factory=list)

    def row(self) -> dict[str, Any]:
        """The table row: pooled row- and event-level figures with intervals."""
        warned = np.concatenate(self.warned) if self.warned else np.zeros(0, bool)
        leads = np.concatenate(self.leads) if self.leads else np.zeros(0)
        fold_aucs = [
            row_metrics(y, s, 0.0)["roc_auc"] for y, s in zip(self.labels, self.scores, strict=True)
        ]
        rows = row_metrics(np.concatenate(self.labels), np.concatenate(self.scores), 0.0)
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
            "false_alarm_episodes_per_day": self.false_alarms / self.days
            if self.days
            else float("nan"),
            "days": self.days,
        }


def backtest(
    settings: BacktestSettings,
    table: Table | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Run every method on every fold; write the table, JSON, CSV and plot to ``out``."""
    say = on_stage or log.info
    table = table if table is not None else read_table(settings.data, settings.data_options)
    spec = feature_spec(table, "auto", "drop")
    prepared = prepare(table, spec, settings.horizon, settings.data_options.label_mode)
    windows, ends = make_windows(prepared.rows, prepared.segments, settings.lookback)
    folds = make_folds(prepared, settings)
    say(f"{len(folds)} folds over {table.summary()}")
    results = [MethodResult(m) for m in settings.methods]
    for k, fold in enumerate(folds):
        for result in results:
            _run_fold(settings, prepared, windows, ends, fold, result)
            say(
                f"fold {k + 1}/{len(folds)} {result.method}: threshold "
                f"{result.thresholds[-1]:.4g}, {int(result.warned[-1].sum())} of "
                f"{result.warned[-1].size} breaks warned"
            )
    rows = [r.row() for r in results]
    write_outputs(settings.out, rows, settings)
    return rows


def _run_fold(
    settings: BacktestSettings,
    prepared: Prepared,
    windows: np.ndarray,
    ends: np.ndarray,
    fold: Fold,
    result: MethodResult,
) -> None:
    normal = prepared.labels[ends] == 0
    train_rows = fold.train[ends] & normal
    scaler = Scaler.fit(prepared.rows[ends[train_rows]])
    scaled = scaler.transform(windows)
    config = ModelConfig(kind=result.method, epochs=settings.epochs)
    model, _ = fit_model(
        config,
        scaled[train_rows],
        scaled[fold.val[ends] & normal],
        settings.seed,
        settings.progress,
    )
    scores = np.full(len(prepared), np.nan)
    scores[ends] = Scorer(model, settings.lookback).score(scaled)[0]
    policy = EpisodePolicy(settings.clear_rows)
    choice = choose_threshold(
        "events",
        prepared,
        scores,
        fold.val,
        policy,
        settings.budget,
        min_lead=settings.min_lead,
        max_lead=settings.max_lead,
    )
    judged = judge(
        prepared,
        scores,
        fold.test,
        choice.value,
        policy,
        settings.min_lead,
        settings.max_lead,
        intervals=False,
    )
    result.scores.append(judged.scores)
    result.labels.append(judged.labels)
    result.warned.append(judged.events.warned)
    result.leads.append(judged.events.leads)
    result.false_alarms += judged.events.false_alarms
    result.days += judged.events.days
    result.thresholds.append(choice.value)


def table_text(rows: list[dict[str, Any]], settings: BacktestSettings) -> str:
    """The comparison as a Markdown table."""
    lines = [
        f"Walk-forward: {settings.folds} folds, thresholds chosen on the {settings.val_days:g} "
        f"days before each test block for at most {settings.budget:g} false-alarm episodes "
        f"per day; a break counts as warned when an episode opens {settings.min_lead:g} to "
        f"{settings.max_lead:g} minutes ahead.",
        "",
        "| method | ROC AUC (mean over folds) | ROC AUC (pooled) | PR AUC | breaks warned "
        "| recall (95% CI) | median lead (min) | false alarms / day |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        low, high = r["event_recall_ci"]
        lines.append(
            f"| {r['method']} | {r['roc_auc_mean_over_folds']:.3f} | {r['roc_auc_pooled']:.3f} "
            f"| {r['pr_auc_pooled']:.4f} | {r['breaks_warned']} of {r['breaks']} "
            f"| {r['event_recall']:.3f} ({low:.3f}-{high:.3f}) | {r['median_lead_minutes']:.1f} "
            f"| {r['false_alarm_episodes_per_day']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def write_outputs(out: Path, rows: list[dict[str, Any]], settings: BacktestSettings) -> None:
    """``backtest.md``, ``backtest.json``, ``backtest.csv`` and ``backtest.png`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "backtest.md").write_text(table_text(rows, settings), encoding="utf-8")
    (out / "backtest.json").write_text(json.dumps(rows, indent=2), encoding="utf-8")
    with (out / "backtest.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    _plot(out / "backtest.png", rows)


def _plot(path: Path, rows: list[dict[str, Any]]) -> None:
    import matplotlib as mpl  # noqa: PLC0415

    mpl.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    names = [r["method"] for r in rows]
    recall = np.array([r["event_recall"] for r in rows])
    ci = np.array([r["event_recall_ci"] for r in rows], dtype=float)
    left.bar(names, recall, yerr=[recall - ci[:, 0], ci[:, 1] - recall], capsize=4)
    left.set(ylabel="share of breaks warned 2-20 min ahead", title="Event recall (95% CI)")
    right.scatter(
        [r["false_alarm_episodes_per_day"] for r in rows],
        [r["roc_auc_mean_over_folds"] for r in rows],
    )
    for r in rows:
        right.annotate(
            r["method"], (r["false_alarm_episodes_per_day"], r["roc_auc_mean_over_folds"])
        )
    right.set(
        xlabel="false-alarm episodes per day",
        ylabel="ROC AUC (mean over folds)",
        title="Alarms against ranking quality",
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
