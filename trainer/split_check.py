"""Why a split leaves too little to train on, and which option to change."""

from __future__ import annotations

from dataclasses import dataclass

from streamer.errors import DataError


@dataclass(frozen=True)
class Parts:
    """What a split left to train on, and the margin that may have moved its boundaries."""

    protocol: str
    train: int  # windows the model trains on
    val: int  # windows early stopping watches
    labelled_train: int  # training windows left out for their label 1
    need: int
    val_fraction: float
    margin_minutes: float
    interval_minutes: float
    moved: tuple[str, str, str] | None = None  # (planned, actual, onset) of a moved boundary


def check_parts(parts: Parts) -> None:
    """Raise ``DataError`` naming the option to change when the parts are too small."""
    if parts.train >= parts.need and parts.val > 0:
        return
    if parts.protocol == "unsupervised":
        raise DataError(
            f"the training span gives {parts.train} training and {parts.val} held-out windows "
            f"(need at least {parts.need} and 1): give a later --train-end, or a smaller "
            "--lookback or --val-fraction"
        )
    counts = (
        f"{parts.train} training and {parts.val} validation windows with label 0 "
        f"(need at least {parts.need} and 1)"
    )
    raise DataError(f"too few rows to train: {counts}; {_advice(parts)}")


def _advice(parts: Parts) -> str:
    if parts.val == 0 and parts.val_fraction <= 0:
        return (
            "--val-fraction 0 leaves no validation rows to stop early and choose the threshold "
            "on; give --val-fraction > 0, or --split unsupervised to train on a span and set "
            "the threshold from its own scores"
        )
    if parts.moved is not None:
        planned, actual, onset = parts.moved
        rows = parts.margin_minutes / parts.interval_minutes
        return (
            f"the split margin of {parts.margin_minutes:g} min ({rows:g} rows here; the larger "
            f"of --max-lead and the horizon) moved a boundary from {planned} to {actual}, past "
            f"the labelled onset at {onset}; lower --max-lead-rows (or --max-lead) and "
            "--horizon-rows, or move --train-end"
        )
    if parts.train < parts.need and parts.labelled_train:
        return (
            f"{parts.labelled_train} training windows carry label 1 and are left out; train "
            "on them unlabelled with --split unsupervised, or move --train-end later"
        )
    if parts.train < parts.need:
        return "give more rows, move --train-end later, or lower --test-fraction or --lookback"
    return "the validation part holds only labelled rows; change --val-fraction or --train-end"
