"""Rank ensembles: scores on different scales, each mapped against reference rows, averaged.

The reference is a stretch the models were not trained on (the validation days), so the
mapping travels in a bundle as a few numbers per score and needs no later data.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def percentile(scores: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Share of reference scores below each score (mid-rank for ties)."""
    ref = np.sort(reference[np.isfinite(reference)])
    below = np.searchsorted(ref, scores, side="left")
    upto = np.searchsorted(ref, scores, side="right")
    return np.where(np.isfinite(scores), (below + upto) / (2.0 * ref.size), np.nan)


def robust_z(scores: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Scores in units of the reference's spread around its median, on a log scale when
    the scores are positive (reconstruction errors are), so a few huge errors do not rule."""
    ref = reference[np.isfinite(reference)]
    positive = bool(ref.min() > 0)
    if positive:
        ref, scores = np.log(ref), np.log(np.maximum(scores, ref.min() * 1e-3))
    q25, q50, q75 = np.quantile(ref, [0.25, 0.5, 0.75])
    return (scores - q50) / max(q75 - q25, 1e-12)


def combine(members: Sequence[np.ndarray], reference: np.ndarray, how: str) -> np.ndarray:
    """Average of the members' percentiles (``rank``) or robust z-scores (``z``), each
    mapped against its own scores on the ``reference`` rows; NaN where any member is."""
    mapper = percentile if how == "rank" else robust_z
    if how not in ("rank", "z"):
        raise ValueError(f"unknown ensemble combination {how!r}")
    mapped = [mapper(m, m[reference]) for m in members]
    return np.mean(mapped, axis=0)
