"""The score a bundle names: one or more parts on a machine's recent rows, ranked together.

A part is a reconstruction (an autoencoder on the rows, or on each row's local deviation
from the machine's previous rows) or trees over the short-history recipe. Several parts
are combined as in training: each score becomes its percentile among the reference scores
the bundle carries (validation rows), and the percentiles are averaged. Every number comes
from the machine's raw history, so the trainer (table form) and the streamer (one history
per machine) compute it with the same code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streamer.bundle import Bundle
from streamer.errors import BundleError
from streamer.errorscore import ErrorScore
from streamer.features import Scaler
from streamer.head import TreeEnsemble
from streamer.history import ShortFeatures, deviation_windows
from streamer.score_spec import PartSpec, load_trees
from streamer.scoring import Scorer

PART_KINDS = ("reconstruction", "trees")


def percentile(scores: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Share of reference scores below each score (mid-rank for ties)."""
    ref = np.sort(reference[np.isfinite(reference)])
    below = np.searchsorted(ref, scores, side="left")
    upto = np.searchsorted(ref, scores, side="right")
    return np.where(np.isfinite(scores), (below + upto) / (2.0 * ref.size), np.nan)


@dataclass(frozen=True)
class Scored:
    """A batch's scores, and what the alert shows of the reconstruction (if any)."""

    scores: np.ndarray
    errors: np.ndarray  # per-sensor squared errors of the last row, scaled units
    expected: np.ndarray  # the last row as the reconstruction expected it, sensor units


@dataclass(frozen=True)
class Reconstruction:
    """An autoencoder's error on the last ``lookback`` rows, or on their local deviations."""

    scorer: Scorer
    scaler: Scaler
    errors: ErrorScore
    deviation: int | None = None  # rows of the local mean each row is taken from

    @property
    def history(self) -> int:
        """Rows of history this part reads."""
        return self.scorer.lookback + (self.deviation or 0)

    def inputs(self, history: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """The model's input windows in sensor units."""
        if self.deviation is None:
            return history[:, -self.scorer.lookback :]
        return deviation_windows(history, valid, self.deviation, self.scorer.lookback)

    def score(self, history: np.ndarray, valid: np.ndarray) -> Scored:
        """Scores, squared errors and expected last rows of a batch of histories."""
        inputs = self.inputs(history, valid)
        scaled = self.scaler.transform(inputs)
        recon = self.scorer.reconstruct(scaled)
        residuals = scaled[:, -1, :] - recon
        level = history[:, -1, :] - inputs[:, -1, :]  # zero unless rows are deviations
        expected = level + self.scaler.inverse(recon)
        squared = np.square(residuals)
        # The plain mean stays in float32, as the first bundles were scored and thresholded.
        score = squared.mean(axis=1) if self.errors.kind == "mean" else self.errors.score(residuals)
        return Scored(score, squared, expected)


@dataclass(frozen=True)
class Trees:
    """Gradient-boosted trees over the short-history recipe: the log-odds of a break ahead."""

    recipe: ShortFeatures
    trees: TreeEnsemble

    @property
    def history(self) -> int:
        """Rows of history this part reads."""
        return self.recipe.length

    def score(self, history: np.ndarray, valid: np.ndarray, age: np.ndarray) -> np.ndarray:
        """Log-odds of each history's last row."""
        return self.trees.decision(self.recipe.compute(history, valid, age))


@dataclass(frozen=True)
class Detector:
    """A bundle's whole score; ``references`` are the parts' validation scores when there
    are several, to rank each against."""

    parts: tuple[Reconstruction | Trees, ...]
    references: tuple[np.ndarray, ...] = ()

    @property
    def history(self) -> int:
        """Rows of history a machine must keep."""
        return max(p.history for p in self.parts)

    @property
    def lookback(self) -> int:
        """Rows a stretch needs before its first score: the autoencoder's window."""
        return max(
            (p.scorer.lookback for p in self.parts if isinstance(p, Reconstruction)), default=1
        )

    def part_scores(
        self, history: np.ndarray, valid: np.ndarray, age: np.ndarray
    ) -> tuple[list[np.ndarray], Scored | None]:
        """Each part's raw score, and the first reconstruction's detail for the alert."""
        scores, detail = [], None
        for part in self.parts:
            if isinstance(part, Reconstruction):
                scored = part.score(history, valid)
                detail = detail or scored
                scores.append(scored.scores)
            else:
                scores.append(part.score(history, valid, age))
        return scores, detail

    def score(self, history: np.ndarray, valid: np.ndarray, age: np.ndarray) -> Scored:
        """The whole score of a batch of histories (samples, history, sensors)."""
        history = history[:, -self.history :]
        scores, detail = self.part_scores(history, valid, age)
        if len(scores) == 1:
            whole = scores[0]
        else:
            whole = np.mean(
                [percentile(s, r) for s, r in zip(scores, self.references, strict=True)], axis=0
            )
        if detail is None:
            zeros = np.zeros(history[:, -1].shape, np.float32)
            return Scored(whole, zeros, history[:, -1].astype(np.float32))
        return Scored(whole, detail.errors, detail.expected)


def load_detector(bundle: Bundle) -> Detector:
    """Load every part the bundle names (its one model when it names none)."""
    width = len(bundle.spec.feature_names)
    if bundle.score is None:
        scorer = _scorer(bundle.model_path, bundle.lookback, width)
        return Detector((Reconstruction(scorer, bundle.scaler, ErrorScore()),))
    parts = tuple(_load_part(bundle, part, width) for part in bundle.score.parts)
    return Detector(parts, bundle.score.references)


def _load_part(bundle: Bundle, part: PartSpec, width: int) -> Reconstruction | Trees:
    path = bundle.path / part.file
    if part.kind == "trees":
        assert part.recipe is not None
        try:
            return Trees(part.recipe, load_trees(path, part.recipe.width(width)))
        except Exception as exc:  # a corrupt archive raises what its reader raises
            raise BundleError(f"{bundle.path}: trees {part.file} are unusable ({exc})") from exc
    assert part.scaler is not None and part.errors is not None
    scorer = _scorer(path, part.lookback, width)
    return Reconstruction(scorer, part.scaler, part.errors, part.deviation)


def _scorer(path: Path, lookback: int, width: int) -> Scorer:
    scorer = Scorer.load(path, lookback)
    if scorer.width != width:
        raise BundleError(
            f"{path}: the model takes {scorer.width} features, the manifest names {width}"
        )
    return scorer
