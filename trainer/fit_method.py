"""``trainer fit --method``: train a served method's parts on the fit's own split.

The parts are trained as the backtest trains them on a fold (training rows fit, validation
rows stop the autoencoders and rank the parts), then scored through the detector the
bundle will carry, so the threshold is chosen on, and the test days judged by, the very
numbers the streamer will compute.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from streamer.errors import ConfigError
from streamer.features import FeatureSpec
from trainer.data import Table
from trainer.inputs import Source
from trainer.methods import Method, Part, parse_method
from trainer.parts import TrainedParts, describe, score_table, servable, train_parts
from trainer.prepare import Prepared
from trainer.split import TRAIN, VALIDATION
from trainer.variants import ScoreOptions


@dataclass(frozen=True)
class MethodPlan:
    """A parsed, servable method and how it sets its threshold."""

    method: Method

    @property
    def threshold_mode(self) -> str:
        """``adaptive`` for an ``-at`` method, else one fixed threshold."""
        return "adaptive" if self.method.adaptive else "fixed"

    @property
    def alert_share(self) -> float:
        """Most validation rows a fixed threshold may put in alert (``-cN``)."""
        return self.method.alert_share

    @property
    def composite(self) -> bool:
        """True when the method is more than the reference autoencoder on raw rows."""
        return self.method.parts != (Part("lstm"),)


def plan(name: str) -> MethodPlan:
    """Read and check a ``--method`` name; ConfigError naming what cannot be served."""
    try:
        method = parse_method(name, 60.0)
        servable(method)
    except ValueError as exc:
        raise ConfigError(f"--method {name}: {exc}") from exc
    return MethodPlan(method)


def train_method(
    method: Method,
    table: Table,
    spec: FeatureSpec,
    prepared: Prepared,
    row_set: np.ndarray,
    options: ScoreOptions,
) -> tuple[TrainedParts, np.ndarray]:
    """The trained parts and every row's score through their detector."""
    source = Source.of(table, spec, prepared)
    trained = train_parts(method, source, row_set == TRAIN, row_set == VALIDATION, options)
    return trained, score_table(trained.detector, prepared)


def manifest_parts(trained: TrainedParts) -> dict[str, Any]:
    """What the manifest says of a composite score: the section and the first model's
    scaler, which the top-level ``scaler`` and ``model`` fields name."""
    first = trained.first
    assert first is not None  # servable() keeps an autoencoder part
    return {
        "score": {**trained.spec.to_dict(), "method": trained.method.name},
        "scaler": first.scaler.to_dict(),
        "summary": describe(trained.spec.parts),
    }
