"""The walk-forward comparison as a Markdown table, JSON, CSV and a plot."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from trainer.backtest import BacktestSettings


def table_text(rows: list[dict[str, Any]], settings: BacktestSettings) -> str:
    """The comparison as a Markdown table."""
    folds = len(rows[0]["false_alarms_per_day_by_fold"]) if rows else settings.folds
    cadence = (
        f" (retrained every {settings.cadence_days:g} days"
        + (f" on the {settings.trailing_days:g} days before" if settings.trailing_days else "")
        + ")"
        if settings.cadence_days
        else ""
    )
    lines = [
        f"Walk-forward: {folds} folds{cadence}, thresholds chosen on the {settings.val_days:g} "
        f"days before each test block for at most {settings.budget:g} false-alarm episodes "
        f"per day; a break counts as warned when an episode opens {settings.min_lead:g} to "
        f"{settings.max_lead:g} minutes ahead. Rows ending in -at adapt the threshold online "
        "to a target alert rate per machine over a trailing "
        f"{settings.calibration_minutes:g} minutes (-ats: extrapolated from the 5% quantile), "
        "the rate chosen on the same validation days.",
        "",
        "| method | ROC AUC (mean over folds) | ROC AUC (pooled) | PR AUC | breaks warned "
        "| recall (95% CI) | median lead (min) | false alarms / day | false alarms / day by fold |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        low, high = r["event_recall_ci"]
        lines.append(
            f"| {r['method']} | {r['roc_auc_mean_over_folds']:.3f} | {r['roc_auc_pooled']:.3f} "
            f"| {r['pr_auc_pooled']:.4f} | {r['breaks_warned']} of {r['breaks']} "
            f"| {r['event_recall']:.3f} ({low:.3f}-{high:.3f}) | {r['median_lead_minutes']:.1f} "
            f"| {r['false_alarm_episodes_per_day']:.2f} "
            f"| {' / '.join(f'{x:.1f}' for x in r['false_alarms_per_day_by_fold'])} |"
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
    _plot(out / "backtest.png", rows, settings.budget)


def _plot(path: Path, rows: list[dict[str, Any]], budget: float) -> None:
    import matplotlib as mpl  # noqa: PLC0415

    mpl.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    height = 2.0 + 0.28 * len(rows)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, height))
    names = [r["method"] for r in rows]
    recall = np.array([r["event_recall"] for r in rows])
    ci = np.array([r["event_recall_ci"] for r in rows], dtype=float)
    alarms = np.array([r["false_alarm_episodes_per_day"] for r in rows])
    within = alarms <= budget
    place = np.arange(len(rows))[::-1]
    left.barh(
        place,
        recall,
        xerr=[recall - ci[:, 0], ci[:, 1] - recall],
        color=np.where(within, "tab:blue", "tab:gray"),
        capsize=3,
    )
    left.set_yticks(place, names, fontsize=8)
    left.set(
        xlabel="share of breaks warned 2-20 min ahead",
        title=f"Event recall, 95% CI (grey: over {budget:g} false alarms/day)",
    )
    right.scatter(alarms, recall, c=np.where(within, "tab:blue", "tab:gray"))
    for name, x, y in zip(names, alarms, recall, strict=True):
        right.annotate(name, (x, y), fontsize=7)
    right.axvline(budget, color="tab:red", linestyle="--", linewidth=1)
    right.set(
        xlabel="false-alarm episodes per day (test days)",
        ylabel="event recall",
        title="Breaks warned against false alarms",
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
