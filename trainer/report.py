"""The evaluation plots inside a bundle (the model card beside them reads them out)."""

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
    """Write the PNG plots into ``folder``."""
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
    _threshold_line(ax, judged, threshold, order)
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
        left.legend()
        right.legend()
    # Test rows of one class (a short file's tail) have no curve to draw.
    left.plot([0, 1], [0, 1], color="grey", linestyle=":")
    left.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (test)")
    right.set(xlabel="recall", ylabel="precision", title="Precision-recall (test)")
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
    _threshold_line(ax, judged, threshold, hours)
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


def _threshold_line(ax: Any, judged: Judgement, threshold: float, x: np.ndarray) -> None:
    """The fixed threshold, or the adaptive one row by row."""
    if judged.thresholds is None:
        ax.axhline(threshold, color="black", linestyle="--", label="threshold")
    else:
        ax.plot(x, judged.thresholds, color="black", linewidth=0.8, label="adaptive threshold")
