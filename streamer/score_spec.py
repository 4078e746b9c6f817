"""The manifest's ``score`` section: which parts a bundle scores with, checked before use.

A bundle without the section scores as the first bundles did: the reconstruction error of
its one model on the last ``lookback`` rows. With it, each part names its own files
(inside the bundle), inputs and fitted numbers; nothing is unpickled and no code is run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from streamer.errorscore import ERROR_SCORES, ErrorScore
from streamer.features import Scaler
from streamer.head import TreeEnsemble
from streamer.history import ShortFeatures

KINDS = ("reconstruction", "trees")


@dataclass(frozen=True)
class PartSpec:
    """One part as the manifest describes it (files not yet loaded)."""

    kind: str
    file: str
    lookback: int = 0
    deviation: int | None = None
    scaler: Scaler | None = None
    errors: ErrorScore | None = None
    recipe: ShortFeatures | None = None

    @property
    def history(self) -> int:
        """Rows of history this part reads."""
        if self.kind == "trees" and self.recipe is not None:
            return self.recipe.length
        return self.lookback + (self.deviation or 0)

    def to_dict(self) -> dict[str, Any]:
        """The manifest form."""
        if self.kind == "trees":
            assert self.recipe is not None
            return {"kind": "trees", "file": self.file, "recipe": self.recipe.to_dict()}
        assert self.scaler is not None and self.errors is not None
        return {
            "kind": "reconstruction",
            "file": self.file,
            "lookback": self.lookback,
            "deviation_rows": self.deviation,
            "scaler": self.scaler.to_dict(),
            "errors": self.errors.to_dict(),
        }


@dataclass(frozen=True)
class ScoreSpec:
    """Every part, and the validation scores each is ranked against when there are several."""

    parts: tuple[PartSpec, ...]
    references: tuple[np.ndarray, ...] = ()

    @property
    def history(self) -> int:
        """Rows of history a machine must keep."""
        return max(p.history for p in self.parts)

    def to_dict(self) -> dict[str, Any]:
        """The manifest form."""
        return {
            "parts": [p.to_dict() for p in self.parts],
            "references": [r.tolist() for r in self.references],
        }


def read_score(section: Mapping[str, Any], width: int) -> ScoreSpec:
    """Read and check the section for a model of ``width`` features; ValueError if unsound."""
    parts = tuple(_part(p, width) for p in section["parts"])
    if not parts:
        raise ValueError("the score section names no part")
    references = tuple(np.asarray(r, np.float64) for r in section.get("references") or ())
    if len(parts) > 1 and len(references) != len(parts):
        raise ValueError(f"{len(parts)} parts need {len(parts)} reference score lists")
    for ref in references:
        if ref.ndim != 1 or ref.size == 0 or not np.isfinite(ref).all():
            raise ValueError("each reference score list must hold finite scores")
    return ScoreSpec(parts, references)


def _part(data: Mapping[str, Any], width: int) -> PartSpec:
    kind, file = str(data["kind"]), str(data["file"])
    if kind not in KINDS:
        raise ValueError(f"score part kind {kind!r} is not one of {KINDS}")
    if kind == "trees":
        return PartSpec(kind, file, recipe=ShortFeatures.from_dict(data["recipe"]))
    lookback, deviation = int(data["lookback"]), data.get("deviation_rows")
    if lookback < 1 or (deviation is not None and int(deviation) < 1):
        raise ValueError(f"lookback {lookback} and deviation rows {deviation} must be positive")
    scaler = Scaler.from_dict(data["scaler"])
    if scaler.mean.shape != (width,) or scaler.scale.shape != (width,):
        raise ValueError(f"a part's scaler must have {width} entries")
    if not (
        np.isfinite(scaler.mean).all() and (np.isfinite(scaler.scale) & (scaler.scale > 0)).all()
    ):
        raise ValueError("a part's scaler must be finite with positive scales")
    errors = ErrorScore.from_dict(data["errors"])
    _check_errors(errors, width)
    return PartSpec(
        kind, file, lookback, None if deviation is None else int(deviation), scaler, errors
    )


def _check_errors(errors: ErrorScore, width: int) -> None:
    if errors.kind not in ERROR_SCORES:
        raise ValueError(f"error score {errors.kind!r} is not one of {ERROR_SCORES}")
    for array in (errors.centre, errors.weights):
        if array is not None and (not np.isfinite(array).all() or array.shape[0] != width):
            raise ValueError(f"error score arrays must be finite, {width} long")


def load_trees(path: Path, features: int) -> TreeEnsemble:
    """Load a part's trees and refuse any that would index outside the features or nodes."""
    trees = TreeEnsemble.load(path)
    nodes = trees.feature.shape
    shapes = {getattr(trees, n).shape for n in ("threshold", "left", "right", "value", "leaf")}
    if len(nodes) != 2 or shapes != {nodes} or trees.missing_left.shape != nodes:
        raise ValueError(f"{path.name}: tree arrays differ in shape")
    inner = ~trees.leaf
    if (trees.feature[inner] < 0).any() or (trees.feature[inner] >= features).any():
        raise ValueError(f"{path.name}: a split names a feature outside the {features} features")
    for child in (trees.left, trees.right):
        if ((child[inner] <= 0) | (child[inner] >= nodes[1])).any():
            raise ValueError(f"{path.name}: a split points at a node outside its tree")
    if not (np.isfinite(trees.value).all() and math.isfinite(trees.baseline)):
        raise ValueError(f"{path.name}: tree values must be finite")
    return trees


def files_inside(folder: Path, names: Sequence[str]) -> list[Path]:
    """The parts' files, each of which must exist inside ``folder`` (links resolved)."""
    root = folder.resolve()
    out = []
    for name in names:
        path = folder / name
        if not path.resolve().is_relative_to(root):
            raise ValueError(f"part file {name[:100]!r} lies outside the bundle")
        if not path.is_file():
            raise ValueError(f"part file {name[:100]!r} is missing")
        out.append(path)
    return out
