"""Row-level detection metrics, and bootstrap intervals over break events.

Event-level judging lives in :mod:`streamer.events`, shared with the live demo.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score


def row_metrics(
    labels: np.ndarray, scores: np.ndarray, threshold: float | np.ndarray
) -> dict[str, float]:
    """ROC and PR AUC, and the confusion matrix, recall, precision and FPR at ``threshold``
    (one value, or one per row)."""
    labels = np.asarray(labels).astype(bool)
    predicted = np.asarray(scores) >= threshold
    tp = int(np.sum(predicted & labels))
    fp = int(np.sum(predicted & ~labels))
    fn = int(np.sum(~predicted & labels))
    tn = int(np.sum(~predicted & ~labels))
    both = 0 < labels.sum() < labels.size
    return {
        "roc_auc": float(roc_auc_score(labels, scores)) if both else float("nan"),
        "pr_auc": float(average_precision_score(labels, scores)) if both else float("nan"),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "recall": tp / (tp + fn) if tp + fn else float("nan"),
        "precision": tp / (tp + fp) if tp + fp else float("nan"),
        **rates(tp, fp, fn, tn),
    }


def rates(tp: int, fp: int, fn: int, tn: int) -> dict[str, float]:
    """Row F1, false-positive rate and missed rate of a confusion matrix (NaN if undefined);
    summed matrices of several files give the pooled figures."""
    nan = float("nan")
    return {
        "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else nan,
        "fpr": fp / (fp + tn) if fp + tn else nan,
        "missed_rate": fn / (tp + fn) if tp + fn else nan,
    }


def bootstrap_ci(
    values: np.ndarray,
    statistic: Callable[[np.ndarray], float],
    resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile interval of ``statistic`` over resamples of ``values`` with replacement."""
    values = np.asarray(values)
    if values.size == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, values.size, size=(resamples, values.size))
    stats = np.array([statistic(values[p]) for p in picks], dtype=float)
    stats = stats[np.isfinite(stats)]
    if stats.size == 0:
        return (float("nan"), float("nan"))
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(stats, [tail, 100.0 - tail])
    return (float(low), float(high))


def roc_auc_event_ci(
    labels: np.ndarray,
    scores: np.ndarray,
    event_of_row: np.ndarray,
    resamples: int = 500,
    seed: int = 0,
) -> tuple[float, float]:
    """ROC AUC interval resampling whole break events (their positive rows) and normal rows.

    Rows before one break are near-copies of each other; resampling them one by one would
    pretend there are far more independent positives than breaks.
    """
    labels = np.asarray(labels).astype(bool)
    events = np.unique(event_of_row[labels])
    if events.size < 2 or labels.all():
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    negatives = np.flatnonzero(~labels)
    by_event = {e: np.flatnonzero(labels & (event_of_row == e)) for e in events}
    stats = []
    for _ in range(resamples):
        chosen = rng.choice(events, size=events.size, replace=True)
        pos = np.concatenate([by_event[e] for e in chosen])
        neg = rng.choice(negatives, size=negatives.size, replace=True)
        y = np.concatenate([np.ones(pos.size), np.zeros(neg.size)])
        stats.append(roc_auc_score(y, np.concatenate([scores[pos], scores[neg]])))
    low, high = np.percentile(stats, [2.5, 97.5])
    return (float(low), float(high))
