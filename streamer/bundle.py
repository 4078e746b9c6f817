"""Model bundles (one folder per version) and the registry that points at the current one."""

from __future__ import annotations

import json
import math
import os
import shutil
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from streamer.calibrate import Calibration
from streamer.episodes import EpisodePolicy
from streamer.errors import BundleError, DataError
from streamer.features import FeatureSpec, Scaler
from streamer.leadtime import WarningWindow
from streamer.score_spec import ScoreSpec, files_inside, read_score

FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
MODEL_FILE = "model.keras"
REPORT_DIR = "report"
CURRENT_FILE = "CURRENT"


@dataclass(frozen=True)
class Bundle:
    """A loaded bundle manifest: everything needed to preprocess and score like training did."""

    path: Path
    manifest: Mapping[str, Any]
    spec: FeatureSpec
    scaler: Scaler
    lookback: int
    threshold: float
    episode_policy: EpisodePolicy
    max_gap_minutes: float
    horizon_minutes: float
    warning: WarningWindow = field(default_factory=WarningWindow)
    calibration: Calibration | None = None  # a per-machine adaptive threshold, if trained so
    score: ScoreSpec | None = None  # the parts it scores with, when not the one model alone
    interval_minutes: float = 0.0  # the training rows' usual spacing (0: not recorded)

    @property
    def version(self) -> str:
        """The bundle's version name."""
        return str(self.manifest["version"])

    @property
    def model_path(self) -> Path:
        """Where the Keras model file lies."""
        return self.path / str(self.manifest["model"]["file"])

    @property
    def history_minutes(self) -> float:
        """Minutes of rows the history spans, with a margin for late or missing rows."""
        interval = self.interval_minutes if self.interval_minutes > 0 else self.max_gap_minutes
        return 2.0 * self.history * interval

    @property
    def history(self) -> int:
        """Rows of each machine's history the score reads (the window, or more)."""
        return self.lookback if self.score is None else max(self.lookback, self.score.history)


def load_bundle(path: str | Path, expected_features: Sequence[str] | None = None) -> Bundle:
    """Read and check a bundle folder; refuse it if it does not match ``expected_features``."""
    folder = Path(path)
    manifest_path = folder / MANIFEST_FILE
    if not manifest_path.is_file():
        raise BundleError(f"{folder}: no {MANIFEST_FILE}; is this a model bundle folder?")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{manifest_path}: unreadable manifest ({exc})") from exc
    if not isinstance(manifest, dict):
        raise BundleError(f"{manifest_path}: the manifest is not a JSON object")
    try:
        # A scaler value beyond float32 becomes an infinity, which _check_numbers refuses.
        with np.errstate(over="ignore"):
            bundle = _bundle_from_manifest(folder, manifest)
        _check_numbers(bundle)
        model_path = bundle.model_path
        if bundle.score is not None:
            files_inside(folder, [p.file for p in bundle.score.parts])
    except (AttributeError, KeyError, TypeError, ValueError, DataError) as exc:
        # AttributeError: a section of another JSON type than the one expected (null, a list)
        raise BundleError(f"{manifest_path}: incomplete or invalid manifest ({exc!r})") from exc
    # A version never changes once written, so its model may not live (or link) elsewhere.
    try:
        inside = model_path.resolve().is_relative_to(folder.resolve())
    except (OSError, RuntimeError) as exc:  # RuntimeError: a loop of symbolic links
        raise BundleError(f"{folder}: the model file's path does not resolve ({exc})") from exc
    if not inside:
        raise BundleError(
            f"{folder}: model file {str(manifest['model']['file'])[:100]!r} lies outside "
            "the bundle; a bundle must be self-contained"
        )
    if not model_path.is_file():
        raise BundleError(f"{folder}: model file {bundle.model_path.name} is missing")
    if expected_features is not None and tuple(expected_features) != bundle.spec.feature_names:
        raise BundleError(
            f"{folder}: bundle features ({len(bundle.spec.feature_names)}) do not match the "
            f"expected features ({len(expected_features)}); retrain on this feature set"
        )
    return bundle


def _check_numbers(bundle: Bundle) -> None:
    """Refuse values that would crash the streamer or silently blind it (JSON allows NaN)."""
    if bundle.lookback < 1:
        raise ValueError(f"lookback {bundle.lookback} is not a positive number of rows")
    if not math.isfinite(bundle.threshold):
        raise ValueError(f"threshold {bundle.threshold} is not finite")
    if not (math.isfinite(bundle.max_gap_minutes) and bundle.max_gap_minutes > 0):
        raise ValueError(f"max_gap_minutes {bundle.max_gap_minutes} is not a positive duration")
    if not (math.isfinite(bundle.interval_minutes) and bundle.interval_minutes >= 0):
        raise ValueError(f"interval_minutes {bundle.interval_minutes} is not a duration")
    if not math.isfinite(bundle.horizon_minutes):
        raise ValueError(f"horizon_minutes {bundle.horizon_minutes} is not finite")
    if bundle.calibration is not None:
        _check_calibration(bundle.calibration)
    scaler = bundle.scaler
    if not (np.isfinite(scaler.mean).all() and np.isfinite(scaler.scale).all()):
        raise ValueError("the scaler's mean and scale must be finite")
    if not (scaler.scale > 0).all():
        raise ValueError("every scale of the scaler must be above 0")


def _check_calibration(calibration: Calibration) -> None:
    if not np.isfinite(calibration.edges).all():
        raise ValueError("the adaptive threshold's histogram edges must be finite")
    if not (math.isfinite(calibration.minutes) and calibration.minutes > 0):
        raise ValueError(f"calibration period {calibration.minutes} is not a positive duration")
    if not (math.isfinite(calibration.min_weight) and calibration.min_weight >= 0):
        raise ValueError(f"calibration min_weight {calibration.min_weight} is not a weight")
    if not (math.isfinite(calibration.stretch) and calibration.stretch > 0):
        raise ValueError(f"calibration stretch {calibration.stretch} is not a positive number")
    if math.isnan(calibration.fallback):
        raise ValueError("the adaptive threshold's fallback is NaN")
    prior = calibration.prior
    if prior is not None and (
        prior.shape != (calibration.bins,) or not (np.isfinite(prior) & (prior >= 0)).all()
    ):
        raise ValueError(
            f"the calibration prior must hold {calibration.bins} finite counts of at least 0"
        )


def _bundle_from_manifest(folder: Path, manifest: Mapping[str, Any]) -> Bundle:
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"format_version {manifest.get('format_version')} != {FORMAT_VERSION}")
    spec = FeatureSpec.from_dict(manifest["features"])
    scaler = Scaler.from_dict(manifest["scaler"])
    if scaler.mean.shape != (len(spec.feature_names),) or scaler.scale.shape != scaler.mean.shape:
        raise ValueError("scaler length differs from the number of features")
    preprocessing = manifest["preprocessing"]
    return Bundle(
        path=folder,
        manifest=manifest,
        spec=spec,
        scaler=scaler,
        lookback=int(preprocessing["lookback"]),
        threshold=float(manifest["threshold"]["value"]),
        episode_policy=EpisodePolicy(clear_rows=int(manifest["episodes"]["clear_rows"])),
        max_gap_minutes=float(preprocessing["max_gap_minutes"]),
        horizon_minutes=float(manifest["labels"]["horizon_minutes"]),
        warning=WarningWindow.from_manifest(manifest),
        calibration=_calibration(manifest["threshold"]),
        score=_score(manifest, len(spec.feature_names)),
        interval_minutes=float(preprocessing.get("interval_minutes") or 0.0),
    )


def _score(manifest: Mapping[str, Any], width: int) -> ScoreSpec | None:
    return read_score(manifest["score"], width) if "score" in manifest else None


def _calibration(threshold: Mapping[str, Any]) -> Calibration | None:
    adaptive = threshold.get("adaptive")
    return None if adaptive is None else Calibration.from_dict(adaptive)


class Registry:
    """A folder of bundle versions plus a ``CURRENT`` pointer, both changed atomically."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def versions(self) -> list[str]:
        """Complete bundle versions, oldest first (names sort by creation time)."""
        if not self.root.is_dir():
            return []
        return sorted(
            p.name
            for p in self.root.iterdir()
            if p.is_dir() and not p.name.startswith(".") and (p / MANIFEST_FILE).is_file()
        )

    def current(self) -> str | None:
        """The version the pointer names, or None for an empty registry."""
        pointer = self.root / CURRENT_FILE
        if not pointer.is_file():
            return None
        return pointer.read_text(encoding="utf-8").strip() or None

    def current_path(self) -> Path:
        """Folder of the current bundle; a clear error if there is none."""
        version = self.current()
        if version is None:
            raise BundleError(f"registry {self.root} has no current model; train one first")
        return self.root / version

    def write(self, version: str, fill: Callable[[Path], None]) -> Path:
        """Create bundle ``version``: ``fill`` writes into a hidden folder that is then renamed."""
        final = self.root / version
        if final.exists():
            raise BundleError(f"{final} already exists; versions are never overwritten")
        self.root.mkdir(parents=True, exist_ok=True)
        staging = self.root / f".incoming-{version}-{uuid.uuid4().hex[:8]}"
        staging.mkdir()
        try:
            fill(staging)
            _fsync_tree(staging)
            staging.rename(final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        _fsync_dir(self.root)
        return final

    def set_current(self, version: str) -> None:
        """Point ``CURRENT`` at ``version`` with one atomic rename."""
        if version not in self.versions():
            raise BundleError(f"registry {self.root} has no complete version {version!r}")
        temp = self.root / f".{CURRENT_FILE}.{uuid.uuid4().hex[:8]}"
        with temp.open("w", encoding="utf-8") as handle:
            handle.write(version + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        temp.replace(self.root / CURRENT_FILE)
        _fsync_dir(self.root)


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
