"""A supervised head on windowed features, trained with the labelled breaks.

Breaks are rare, but a training stretch of a week still holds dozens; widening the
positive label to the ``widen`` minutes before each break gives the model enough rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from streamer.head import TreeEnsemble, window_summary
from streamer.history import ShortFeatures, feature_table
from streamer.windows import make_windows
from trainer.evaluate import next_break_of_row
from trainer.prepare import Prepared


def window_features(
    rows: np.ndarray, segments: np.ndarray, lookback: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per window: its last row, its mean and its change from first to last row."""
    windows, ends = make_windows(rows, segments, lookback)
    return window_summary(windows), ends


def recipe_features(
    rows: np.ndarray, segments: np.ndarray, lookback: int, recipe: ShortFeatures | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per row with a full window: the short-history features of its last row."""
    _, ends = make_windows(rows[:, :1], segments, lookback)
    return feature_table(rows, segments, recipe or ShortFeatures())[ends], ends


def widened_labels(prepared: Prepared, widen_minutes: float) -> np.ndarray:
    """1 for rows with a break of their machine in the next ``widen_minutes``."""
    nxt = next_break_of_row(prepared)
    ahead = np.where(nxt >= 0, prepared.break_times[np.maximum(nxt, 0)] - prepared.times, np.inf)
    return ((ahead > 0) & (ahead <= widen_minutes)).astype(np.int8)


def one_thread() -> Any:
    """A context in which OpenMP runs one thread: gradient boosting's workers spin while
    they wait, so on two shared cores (beside the broker, the streamer, other jobs) more
    threads cost several times the CPU for the same trees."""
    from threadpoolctl import threadpool_limits  # noqa: PLC0415

    return threadpool_limits(1, user_api="openmp")


def fit_head(
    kind: str, features: np.ndarray, labels: np.ndarray, seed: int, rounds: str = "fixed"
) -> Any:
    """Gradient boosting (``gbm``) or logistic regression (``lr``) on the training windows.

    With ``rounds="folds"`` the number of boosting rounds is the one that ranked best on
    average over contiguous blocks of the training rows, each held out in turn: a fixed
    number overfits a week with few breaks or underfits a month with many.
    """
    if labels.min() == labels.max():
        raise ValueError("the training rows hold no break to learn from; use more training days")
    with one_thread():
        return _fit_head(kind, features, labels, seed, rounds)


def _fit_head(kind: str, features: np.ndarray, labels: np.ndarray, seed: int, rounds: str) -> Any:
    if kind == "gbm":
        iterations = _MAX_ROUNDS
        if rounds == "folds":
            iterations = choose_rounds(features, labels, seed)
        model: Any = _boosting(iterations, seed)
    elif kind == "lr":
        from sklearn.linear_model import LogisticRegression  # noqa: PLC0415
        from sklearn.pipeline import make_pipeline  # noqa: PLC0415
        from sklearn.preprocessing import StandardScaler  # noqa: PLC0415

        model = make_pipeline(
            StandardScaler(), LogisticRegression(C=0.05, class_weight="balanced", max_iter=2000)
        )
    else:
        raise ValueError(f"unknown supervised head {kind!r}")
    return model.fit(features, labels)


_MAX_ROUNDS = 200
_FOLD_BLOCKS = 3
_MIN_ROUNDS = 10


def _boosting(iterations: int, seed: int) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier  # noqa: PLC0415

    return HistGradientBoostingClassifier(
        learning_rate=0.05,
        max_iter=iterations,
        max_leaf_nodes=15,
        min_samples_leaf=40,
        l2_regularization=1.0,
        early_stopping=False,
        random_state=seed,
    )


def choose_rounds(features: np.ndarray, labels: np.ndarray, seed: int) -> int:
    """Rounds with the best mean ROC AUC over contiguous held-out blocks of the rows."""
    from sklearn.metrics import roc_auc_score  # noqa: PLC0415

    blocks = np.array_split(np.arange(len(labels)), _FOLD_BLOCKS)
    curves = []
    for held in blocks:
        train = np.ones(len(labels), dtype=bool)
        train[held] = False
        if np.ptp(labels[held]) == 0 or np.ptp(labels[train]) == 0:
            continue  # a block without a break (or all of them) ranks nothing
        model = _boosting(_MAX_ROUNDS, seed).fit(features[train], labels[train])
        staged = model.staged_decision_function(features[held])
        curves.append([roc_auc_score(labels[held], s) for s in staged])
    if not curves:
        return _MAX_ROUNDS
    mean = np.mean(curves, axis=0)
    return max(_MIN_ROUNDS, int(np.argmax(mean)) + 1)


def head_scores(model: Any, features: np.ndarray) -> np.ndarray:
    """The head's log-odds of a break ahead."""
    with one_thread():
        return np.asarray(model.decision_function(features), dtype=np.float64)


def export_trees(model: Any) -> TreeEnsemble:
    """A fitted binary HistGradientBoostingClassifier as plain arrays.

    scikit-learn keeps its trees in private attributes; the unit test compares the export
    with ``decision_function`` so a change there is caught, not shipped.
    """
    if getattr(model, "n_trees_per_iteration_", 1) != 1:
        raise ValueError("only a binary classifier's trees can be exported")
    nodes = [trees[0].nodes for trees in model._predictors]
    if any(n["is_categorical"].any() for n in nodes):
        raise ValueError("trees with categorical splits cannot be exported")
    width = max(len(n) for n in nodes)

    def stack(name: str, dtype: type, pad: Any = 0) -> np.ndarray:
        # Trees shorter than the longest are padded with leaves, which no split reaches.
        out: np.ndarray = np.full((len(nodes), width), pad, dtype=dtype)
        for i, n in enumerate(nodes):
            out[i, : len(n)] = n[name]
        return out

    return TreeEnsemble(
        feature=stack("feature_idx", np.int64),
        threshold=stack("num_threshold", np.float64),
        left=stack("left", np.int64),
        right=stack("right", np.int64),
        value=stack("value", np.float64),
        missing_left=stack("missing_go_to_left", np.bool_),
        leaf=stack("is_leaf", np.bool_, pad=True),
        baseline=float(np.ravel(model._baseline_prediction)[0]),
    )
