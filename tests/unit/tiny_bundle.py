"""A tiny seeded LSTM bundle written straight into a registry, for tests that need a real
model in a second rather than a trained one."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from streamer import quiet_tf
from streamer.bundle import FORMAT_VERSION, MANIFEST_FILE, MODEL_FILE, Registry
from streamer.features import FeatureSpec
from streamer.scoring import Scorer
from trainer.models import build_lstm

SENSORS = ("x1", "x2", "x3")
LOOKBACK = 3


def manifest(version: str, threshold: float, sensors: tuple[str, ...] = SENSORS) -> dict[str, Any]:
    """The fields the streamer reads, for a model trained on unit-scaled sensors."""
    spec = FeatureSpec(sensors)
    width = len(spec.feature_names)
    return {
        "format_version": FORMAT_VERSION,
        "version": version,
        "model": {"file": MODEL_FILE, "kind": "lstm"},
        "features": spec.to_dict(),
        "preprocessing": {"lookback": LOOKBACK, "max_gap_minutes": 10.0},
        "labels": {"horizon_minutes": 4.0},
        "scaler": {"mean": [0.0] * width, "scale": [1.0] * width},
        "threshold": {"value": threshold, "objective": "fixed for tests"},
        "episodes": {"clear_rows": 2},
    }


def save_model(path: Path, seed: int = 0, width: int = len(SENSORS)) -> None:
    """An untrained LSTM autoencoder with seeded weights: deterministic, not meaningful."""
    keras = quiet_tf.keras()

    keras.utils.set_random_seed(seed)
    build_lstm(LOOKBACK, width, (4, 2)).save(path)


def typical_threshold(model_path: Path, quantile: float = 0.7) -> float:
    """A threshold that some windows of standard normal rows cross and most do not."""
    windows = np.random.default_rng(1).normal(size=(256, LOOKBACK, len(SENSORS)))
    scores = Scorer.load(model_path, LOOKBACK).score(windows.astype(np.float32))[0]
    return float(np.quantile(scores, quantile))


def write_version(
    registry: Registry,
    version: str,
    model_source: Path,
    threshold: float,
    edit: Callable[[Path, dict[str, Any]], str | bytes | None] | None = None,
) -> Path:
    """A new version with ``model_source`` as its model; ``edit`` may spoil it before the
    manifest is written (it gets the staging folder and the manifest, and may return the
    manifest's text instead)."""

    def fill(folder: Path) -> None:
        (folder / MODEL_FILE).write_bytes(model_source.read_bytes())
        content = manifest(version, threshold)
        text = edit(folder, content) if edit is not None else None
        if text is None:
            text = json.dumps(content)
        data = text.encode() if isinstance(text, str) else text
        (folder / MANIFEST_FILE).write_bytes(data)

    return registry.write(version, fill)
