"""The evaluation report inside a bundle: plots and a readable summary."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib as mpl

mpl.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import precision_recall_curve, roc_curve

from trainer.evaluate import Judgement


def write_report(
    folder: Path,
    manifest: Mapping[str, Any],
    history: Mapping[str, list[float]],
    validation: Judgement,
    test: Judgement,
) -> None:
    """Write the PNG plots and ``summary.md`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    threshold = float(manifest["threshold"]["value"])
    plots = {
        "loss.png": lambda ax: _loss(ax, history),
        "threshold.png": lambda ax: _precision_recall_threshold(ax, validation, threshold),
        "errors.png": lambda ax: _errors(ax, test, threshold),
        "roc_pr.png": None,
        "confusion.png": lambda ax: _confusion(ax, test.figures),
        "timeline.png": lambda ax: _timeline(ax, test, threshold),
    }
    for name, draw in plots.items():
        if name == "roc_pr.png":
            _roc_pr(folder / name, test)
            continue
        fig, ax = plt.subplots(figsize=(9, 4) if name == "timeline.png" else (6, 4))
        assert draw is not None
        draw(ax)
        fig.tight_layout()
        fig.savefig(folder / name, dpi=90)
        plt.close(fig)
    (folder / "summary.md").write_text(summary_markdown(manifest), encoding="utf-8")


def _loss(ax: Any, history: Mapping[str, list[float]]) -> None:
    if not history.get("loss"):
        ax.text(
            0.5,
            0.5,
            "no iterative training (PCA is fitted in closed form)",
            ha="center",
            va="center",
        )
        ax.set_axis_off()
        return
    ax.plot(history["loss"], label="training")
    ax.plot(history.get("val_loss", []), label="validation")
    ax.set(xlabel="epoch", ylabel="MSE", title="Training loss", yscale="log")
    ax.legend()


def _precision_recall_threshold(ax: Any, judged: Judgement, threshold: float) -> None:
    if judged.labels.sum() == 0:
        ax.text(0.5, 0.5, "no positive rows on validation", ha="center")
        return
    precision, recall, cuts = precision_recall_curve(judged.labels, judged.scores)
    ax.plot(cuts, precision[:-1], label="precision")
    ax.plot(cuts, recall[:-1], label="recall")
    ax.axvline(threshold, color="red", linestyle="--", label="threshold")
    ax.set(
        xlabel="threshold (reconstruction error)",
        xscale="log",
        title="Precision and recall vs threshold (validation rows)",
    )
    ax.legend()


def _errors(ax: Any, judged: Judgement, threshold: float) -> None:
    order = np.arange(judged.scores.size)
    for label, colour, name in ((0, "tab:blue", "normal"), (1, "tab:red", "before a break")):
        pick = judged.labels == label
        ax.scatter(
            order[pick],
            judged.scores[pick],
            s=4 if label == 0 else 12,
            c=colour,
            label=name,
            alpha=0.6,
        )
    ax.axhline(threshold, color="black", linestyle="--", label="threshold")
    ax.set(
        xlabel="test row",
        ylabel="reconstruction error",
        yscale="log",
        title="Reconstruction error per class (test)",
    )
    ax.legend(loc="upper right")


def _roc_pr(path: Path, judged: Judgement) -> None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    if 0 < judged.labels.sum() < judged.labels.size:
        fpr, tpr, _ = roc_curve(judged.labels, judged.scores)
        left.plot(fpr, tpr, label=f"AUC {judged.figures['roc_auc']:.3f}")
        precision, recall, _ = precision_recall_curve(judged.labels, judged.scores)
        right.plot(recall, precision, label=f"AP {judged.figures['pr_auc']:.3f}")
    left.plot([0, 1], [0, 1], color="grey", linestyle=":")
    left.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (test)")
    right.set(xlabel="recall", ylabel="precision", title="Precision-recall (test)")
    left.legend()
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _confusion(ax: Any, figures: Mapping[str, Any]) -> None:
    grid = np.array([[figures["tn"], figures["fp"]], [figures["fn"], figures["tp"]]])
    ax.imshow(grid, cmap="Blues")
    for (i, j), value in np.ndenumerate(grid):
        ax.text(j, i, str(value), ha="center", va="center", fontsize=14)
    ax.set_xticks([0, 1], ["normal", "alert"])
    ax.set_yticks([0, 1], ["normal", "before break"])
    ax.set(xlabel="predicted", ylabel="actual", title="Confusion matrix at threshold (test)")


def _timeline(ax: Any, judged: Judgement, threshold: float) -> None:
    hours = (judged.times - judged.times.min()) / 60.0 if judged.times.size else judged.times
    ax.plot(hours, judged.scores, linewidth=0.6, label="score")
    ax.axhline(threshold, color="black", linestyle="--", label="threshold")
    if judged.times.size:
        for tb in (judged.break_times - judged.times.min()) / 60.0:
            ax.axvline(tb, color="red", alpha=0.5, linewidth=0.8)
    ax.set(
        xlabel="hours into the test period",
        ylabel="reconstruction error",
        yscale="log",
        title="Score over time (red lines: breaks)",
    )
    ax.legend(loc="upper right")


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, list | tuple) and len(value) == 2:
        return f"[{_fmt(value[0], digits)}, {_fmt(value[1], digits)}]"
    return str(value)


def summary_markdown(manifest: Mapping[str, Any]) -> str:
    """A page an engineer reads first: what was trained on what, and how well it warns."""
    test = manifest["metrics"]["test"]
    seeds = manifest["metrics"]["over_seeds"]
    thr = manifest["threshold"]
    data = manifest["data"]
    lines = [
        f"# Model {manifest['version']}",
        "",
        f"- Model: {manifest['model']['kind']} autoencoder, units {manifest['model']['units']}, "
        f"{manifest['model']['parameters']:,} parameters, lookback "
        f"{manifest['preprocessing']['lookback']}, horizon {manifest['labels']['horizon_minutes']}"
        " minutes.",
        f"- Data: {data['rows']:,} rows, {data['machines']} machine(s), {data['from']} to "
        f"{data['to']}, {data['breaks']} breaks; split: "
        + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in data["split"].items())
        + ".",
        f"- Threshold {thr['value']:.5g}, chosen on validation by '{thr['objective']}': "
        f"{thr['rule']} ({thr['params']}); achieved {thr['achieved_on_validation']}.",
        "",
        "## Test set",
        "",
        "| figure | value | 95% interval |",
        "|---|---|---|",
        f"| ROC AUC | {_fmt(test['roc_auc'])} | {_fmt(test.get('roc_auc_ci'))} |",
        f"| PR AUC | {_fmt(test['pr_auc'])} | |",
        f"| breaks warned 2-20 min ahead | {test['breaks_warned']} of {test['breaks']} "
        f"({_fmt(test['event_recall'])}) | {_fmt(test.get('event_recall_ci'))} |",
        f"| median lead (minutes) | {_fmt(test['median_lead_minutes'], 1)} | "
        f"{_fmt(test.get('median_lead_ci'), 1)} |",
        f"| false-alarm episodes per day | {_fmt(test['false_alarm_episodes_per_day'], 2)} "
        f"({test['false_alarm_episodes']} in {test['days']} days) | |",
        f"| row recall / FPR at threshold | {_fmt(test['recall'])} / {_fmt(test['fpr'])} | |",
        f"| confusion (tn, fp, fn, tp) | {test['tn']}, {test['fp']}, {test['fn']}, "
        f"{test['tp']} | |",
        "",
        f"Over seeds {seeds['seeds']}: ROC AUC mean {_fmt(seeds['roc_auc']['mean'])}, "
        f"sd {_fmt(seeds['roc_auc']['sd'])}; event recall mean "
        f"{_fmt(seeds['event_recall']['mean'])}.",
        "",
        "Plots: loss.png, threshold.png, errors.png, roc_pr.png, confusion.png, timeline.png.",
        "",
        *_promotion_lines(manifest.get("promotion_check")),
    ]
    return "\n".join(lines)


def _promotion_lines(check: Mapping[str, Any] | None) -> list[str]:
    """The guard's comparison with the bundle that was current when this one was trained."""
    if not check:
        return []
    figures = check["figures"]
    lines = [
        "## Promotion check",
        "",
        f"{'Accepted' if check['accepted'] else 'Refused'}: {check['reason']}.",
        f"Rule: {check['rule']}.",
    ]
    if figures:
        held = check["held_out"]
        lines += [
            "",
            f"Held-out rows from {held['from']} to {held['to']}:",
            "",
            f"| figure | this bundle | current ({check['compared_with']}) |",
            "|---|---|---|",
        ]
        current = figures.get("current") or {}
        for key, value in figures["candidate"].items():
            lines.append(f"| {key.replace('_', ' ')} | {_fmt(value)} | {_fmt(current.get(key))} |")
    return [*lines, ""]
