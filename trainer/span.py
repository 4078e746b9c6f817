"""The unsupervised mode: train on a span of rows without labels, and set the threshold from
the span's own scores, so nothing after the span is seen before it is judged."""

from __future__ import annotations

import numpy as np

from streamer.errors import ConfigError, DataError
from trainer.split import TEST, TRAIN, VALIDATION
from trainer.threshold import ThresholdChoice

UNSUPERVISED = "unsupervised"
SPAN_RULE = "the QUANTILE quantile of the training span's scores, times MULTIPLIER"
# Small, fast data: a large first step on small batches, halved when the held-out tail stops
# improving, and a floor of epochs before early stopping may end the fit. The reference
# settings (Adam 1e-4, patience 10) stop a 400-row fit after about 11 barely trained epochs;
# measured on a generated 1 Hz file, Adam 1e-3 needs about 150 epochs to reach the held-out
# loss that 1e-2 on batches of 32 reaches by epoch 50 (and 90% of it by epoch 11).
SMALL_DATA = {
    "learning_rate": 1e-2,
    "batch_size": 32,
    "patience": 10,
    "min_epochs": 20,
    "plateau_patience": 5,
}
STANDARD = {
    "learning_rate": None,
    "batch_size": None,
    "patience": 10,
    "min_epochs": 0,
    "plateau_patience": 0,
}


def training_defaults(protocol: str) -> dict[str, float | int | None]:
    """Learning rate, batch, patience, minimum epochs and plateau patience when not given."""
    return dict(SMALL_DATA if protocol == UNSUPERVISED else STANDARD)


def span_sets(
    times: np.ndarray, span_end: float | None, holdout_fraction: float
) -> tuple[np.ndarray, tuple[float, float]]:
    """Rows before ``span_end`` train, the last ``holdout_fraction`` of them held out for early
    stopping (still unlabelled); later rows are only judged. Returns the sets and
    ``(holdout_start, span_end)`` in minutes."""
    if span_end is None:
        raise ConfigError(
            "--split unsupervised trains on a span: give --train-end (a number of rows or a time)"
        )
    if not 0 < holdout_fraction < 1:
        raise ConfigError(
            f"--val-fraction {holdout_fraction:g}: the unsupervised mode holds out that share "
            "of the training span's tail for early stopping; give a value between 0 and 1"
        )
    inside = np.sort(times[times < span_end])
    if inside.size == 0:
        raise DataError("--train-end is at or before the first row: the training span is empty")
    holdout_start = float(inside[min(inside.size - 1, int(inside.size * (1 - holdout_fraction)))])
    sets = np.full(times.shape[0], TRAIN, dtype=np.int8)
    sets[times >= holdout_start] = VALIDATION
    sets[times >= span_end] = TEST
    return sets, (holdout_start, float(span_end))


def span_threshold(
    scores: np.ndarray,
    in_span: np.ndarray,
    quantile: float,
    multiplier: float,
    target_rate: float | None = None,
) -> ThresholdChoice:
    """The threshold from the span's scores: a quantile (or ``1 - target_rate``) times a
    multiplier; what share of the span's rows it flags is reported."""
    if target_rate is not None:
        quantile = 1.0 - target_rate
    if not 0 < quantile <= 1 or multiplier <= 0:
        raise ConfigError(
            f"threshold quantile {quantile:g} and multiplier {multiplier:g}: give "
            "--threshold-quantile in (0, 1] (or --target-rate in [0, 1)) and a positive "
            "--threshold-multiplier"
        )
    values = scores[np.asarray(in_span, dtype=bool) & np.isfinite(scores)]
    if values.size == 0:
        raise DataError("the training span has no scored rows to set the threshold from")
    value = float(np.quantile(values, quantile)) * multiplier
    params = {"quantile": quantile, "multiplier": multiplier}
    achieved = {"alert_rate": float(np.mean(values >= value))}
    return ThresholdChoice(value, "quantile", params, achieved, "training span", SPAN_RULE)
