"""How a row's per-sensor reconstruction errors become one score.

A plain mean lets the sensors the model reconstructs worst on normal days dominate;
dividing each sensor's squared error by its usual size (``norm``), or measuring the
error vector against its usual covariance (``maha``), weighs each sensor by how unusual
its error is. The fitted numbers are a few arrays that travel in the manifest.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

ERROR_SCORES = ("mean", "norm", "maha")


@dataclass(frozen=True)
class ErrorScore:
    """``mean`` squared error, ``norm``-alised per sensor, or Mahalanobis (``maha``)."""

    kind: str = "mean"
    centre: np.ndarray | None = None
    weights: np.ndarray | None = None

    @classmethod
    def fit(cls, kind: str, residuals: np.ndarray) -> ErrorScore:
        """Fit on signed residuals (input minus reconstruction) of normal validation rows."""
        if kind not in ERROR_SCORES:
            raise ValueError(f"error score {kind!r} is not one of {ERROR_SCORES}")
        if kind == "mean":
            return cls()
        if kind == "norm":
            spread = np.mean(np.square(residuals), axis=0, dtype=np.float64)
            return cls(kind, weights=1.0 / np.maximum(spread, 1e-12))
        from sklearn.covariance import LedoitWolf  # noqa: PLC0415

        # Shrinkage keeps the precision matrix stable with a few days of rows.
        fitted = LedoitWolf().fit(residuals.astype(np.float64))
        return cls(kind, centre=fitted.location_, weights=fitted.precision_)

    def score(self, residuals: np.ndarray) -> np.ndarray:
        """One score per row of residuals, scaled per feature so models are comparable."""
        r = np.asarray(residuals, dtype=np.float64)
        width = r.shape[1]
        if self.kind == "mean" or self.weights is None:
            return np.mean(np.square(r), axis=1)
        if self.kind == "norm":
            return np.square(r) @ self.weights / width
        centred = r - (self.centre if self.centre is not None else 0.0)
        return np.einsum("ij,jk,ik->i", centred, self.weights, centred) / width

    def to_dict(self) -> dict[str, Any]:
        """Manifest form."""
        return {
            "kind": self.kind,
            "centre": None if self.centre is None else self.centre.tolist(),
            "weights": None if self.weights is None else self.weights.tolist(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ErrorScore:
        """Inverse of :meth:`to_dict`."""
        centre, weights = data.get("centre"), data.get("weights")
        return cls(
            data.get("kind", "mean"),
            None if centre is None else np.asarray(centre, dtype=np.float64),
            None if weights is None else np.asarray(weights, dtype=np.float64),
        )
