"""Training the parts of a method the streamer can serve, and scoring tables with them.

A method name (``trainer.methods``) is trained on one split exactly as the backtest trains
it on a fold; the trained parts become a :class:`streamer.detector.Detector`, and every
score the fit reports, thresholds and judges comes from that detector's table form, the
same code the streamer runs per machine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from streamer.bundle import MODEL_FILE, Bundle
from streamer.detector import Detector, Reconstruction, Trees, load_detector
from streamer.history import ShortFeatures, positions, table_histories
from streamer.score_spec import PartSpec, ScoreSpec
from streamer.scoring import Scorer
from trainer.inputs import Source
from trainer.methods import AUTOENCODERS, Inputs, Method, Part
from trainer.prepare import Prepared
from trainer.supervised import export_trees
from trainer.variants import FoldScores, ScoreOptions


@dataclass
class TrainedParts:
    """A method's trained parts: the detector, what its files hold, and how it trained."""

    method: Method
    detector: Detector
    spec: ScoreSpec
    models: dict[str, Any] = field(default_factory=dict)  # file name -> Keras model
    history: dict[str, list[float]] = field(default_factory=dict)  # of the first model

    def save(self, folder: Path) -> None:
        """Write every part's file into the bundle folder."""
        for name, model in self.models.items():
            model.save(folder / name)
        for spec, part in zip(self.spec.parts, self.detector.parts, strict=True):
            if isinstance(part, Trees):
                part.trees.save(folder / spec.file)

    @property
    def first(self) -> Reconstruction | None:
        """The first reconstruction part (the bundle's ``model`` and ``scaler``)."""
        return next((p for p in self.detector.parts if isinstance(p, Reconstruction)), None)


def servable(method: Method) -> None:
    """Refuse, naming the reason, a method the streamer cannot score per machine."""
    reasons = []
    if method.smooth != 1 or method.combine != "rank" or method.adaptive not in ("", "rate"):
        reasons.append("smoothing, -z and -ats are backtest-only")
    for part in method.parts:
        if part.inputs not in (Inputs(), Inputs(deviation=part.inputs.deviation)):
            reasons.append(f"{part.model}: only the ld inputs are served")
        if part.model not in AUTOENCODERS and (part.model != "gbm" or not part.recipe):
            reasons.append(f"{part.model}: the served supervised part is gbm-ft")
    if not any(p.model in AUTOENCODERS for p in method.parts):
        reasons.append("a served method keeps an autoencoder part")
    if reasons:
        raise ValueError(f"method {method.name!r} cannot be served: {'; '.join(reasons)}")


def train_parts(
    method: Method,
    source: Source,
    train: np.ndarray,
    val: np.ndarray,
    options: ScoreOptions,
) -> TrainedParts:
    """Train every part on the ``train`` rows (``val`` stops the autoencoders and maps the
    parts' scores onto one scale)."""
    servable(method)
    fold = FoldScores(source, options, train, val)
    specs: list[PartSpec] = []
    parts: list[Reconstruction | Trees] = []
    models: dict[str, Any] = {}
    history: dict[str, Any] = {}
    for i, part in enumerate(method.parts):
        fold.part(part)
        served: Reconstruction | Trees
        if part.model in AUTOENCODERS:
            spec, served, model, fitted = _reconstruction(fold, part, i, not models)
            models[spec.file] = model
            history = history or fitted
        else:
            spec, served = _trees(fold, part, i)
        specs.append(spec)
        parts.append(served)
    detector = Detector(tuple(parts))
    references: tuple[np.ndarray, ...] = ()
    if len(parts) > 1:
        scores = part_table(detector, source.prepared)
        references = tuple(s[val & np.isfinite(s)] for s in scores)
        detector = Detector(tuple(parts), references)
    return TrainedParts(method, detector, ScoreSpec(tuple(specs), references), models, history)


def _reconstruction(
    fold: FoldScores, part: Part, index: int, first: bool
) -> tuple[PartSpec, Reconstruction, Any, dict[str, Any]]:
    lookback = fold.lookback(part)
    model, scaler, fitted = fold.trained[(part.model, part.inputs, lookback)]
    errors = fold.error_scores[part]
    deviation = part.inputs.deviation
    file = MODEL_FILE if first else f"model-{index}.keras"
    spec = PartSpec("reconstruction", file, lookback, deviation, scaler, errors)
    served = Reconstruction(Scorer(model, lookback), scaler, errors, deviation)
    return spec, served, model, fitted


def _trees(fold: FoldScores, part: Part, index: int) -> tuple[PartSpec, Trees]:
    recipe = ShortFeatures()
    spec = PartSpec("trees", f"trees-{index}.npz", recipe=recipe)
    return spec, Trees(recipe, export_trees(fold.heads[part]))


def _batches(detector: Detector, prepared: Prepared) -> Any:
    """Per chunk of rows: the chunk, which of its rows have a full window, their
    histories, valid counts and ages."""
    pos = positions(prepared.segments)
    ready = pos >= detector.lookback - 1
    for part, hist, valid in table_histories(prepared.rows, prepared.segments, detector.history):
        sel = ready[part]
        if sel.any():
            yield part, sel, hist[sel], valid[sel], pos[part][sel] + 1


def part_table(detector: Detector, prepared: Prepared) -> list[np.ndarray]:
    """Each part's raw score of every row with a full window (NaN elsewhere)."""
    out = [np.full(len(prepared), np.nan) for _ in detector.parts]
    for part, sel, hist, valid, age in _batches(detector, prepared):
        scores, _ = detector.part_scores(hist, valid, age)
        for full, score in zip(out, scores, strict=True):
            full[np.flatnonzero(sel) + part.start] = score
    return out


def score_table(detector: Detector, prepared: Prepared) -> np.ndarray:
    """The detector's whole score of every row with a full window (NaN elsewhere)."""
    out = np.full(len(prepared), np.nan)
    for part, sel, hist, valid, age in _batches(detector, prepared):
        out[np.flatnonzero(sel) + part.start] = detector.score(hist, valid, age).scores
    return out


def describe(parts: Sequence[PartSpec]) -> str:
    """One line naming the parts, for the log."""
    return " + ".join(
        f"{p.kind} {p.file}" + (f" on {p.deviation}-row deviations" if p.deviation else "")
        for p in parts
    )


def bundle_scores(bundle: Bundle, prepared: Prepared) -> np.ndarray:
    """Every row's score under ``bundle``, as the streamer would give it (NaN while warming)."""
    return score_table(load_detector(bundle), prepared)
