"""A candidate bundle scored beside the serving one on the same windows, never published.

The candidate decides through a decider of its own (the same path as the serving model's),
so its would-be alerts, its scores and the breaks it would have warned of can be set
against the serving model's on live rows; its changes are counted, never published.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from streamer.bundle import MANIFEST_FILE, MODEL_FILE, Bundle, load_bundle
from streamer.decider import Decider, Decision
from streamer.detector import Detector, load_detector
from streamer.episodes import Step
from streamer.errors import BundleError
from streamer.leadtime import Verdict

log = logging.getLogger(__name__)

LOADED, REFUSED, STOPPED, UNCHANGED = "loaded", "refused", "stopped", ""


@dataclass
class ShadowOutcome:
    """What the candidate made of one batch: its scores, would-be alert events and breaks."""

    version: str
    scores: np.ndarray
    events: Counter[str] = field(default_factory=Counter)
    breaks: list[Verdict] = field(default_factory=list)
    thresholds: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def then(self, later: ShadowOutcome) -> ShadowOutcome:
        """This outcome followed by that of the batch's later rows."""
        return ShadowOutcome(
            self.version,
            np.concatenate([self.scores, later.scores]),
            self.events + later.events,
            self.breaks + later.breaks,
            np.concatenate([self.thresholds, later.thresholds]),
        )


def check_fits(candidate: Bundle, serving: Bundle) -> None:
    """Refuse a candidate that cannot score the serving model's windows as they are."""
    if candidate.spec.feature_names != serving.spec.feature_names:
        raise BundleError(
            f"{candidate.path}: its features differ from the serving model's "
            f"({len(candidate.spec.feature_names)} against {len(serving.spec.feature_names)})"
        )
    if candidate.lookback != serving.lookback:
        raise BundleError(
            f"{candidate.path}: lookback {candidate.lookback}, but the serving windows hold "
            f"{serving.lookback} rows; train the candidate with --lookback {serving.lookback}"
        )
    if candidate.history > serving.history:
        raise BundleError(
            f"{candidate.path}: its score reads {candidate.history} rows of history, the "
            f"serving model keeps {serving.history}; serve it, or train the candidate with a "
            "shorter history"
        )


def counted(decision: Decision) -> Counter[str]:
    """A decision's would-be alert events by status."""
    return Counter(change.transition.status for change in decision.changes)


class Shadow:
    """A loaded candidate: its bundle, its compiled score and its own decider."""

    def __init__(self, bundle: Bundle, detector: Detector) -> None:
        self.bundle, self.detector = bundle, detector
        self.decider = Decider.for_bundle(bundle)

    @property
    def version(self) -> str:
        """The candidate's version name."""
        return self.bundle.version

    @classmethod
    def load(cls, folder: Path, serving: Bundle) -> Shadow:
        """Load a candidate that fits the serving windows; raises BundleError otherwise."""
        bundle = load_bundle(folder, serving.spec.feature_names)
        check_fits(bundle, serving)
        return cls(bundle, load_detector(bundle))

    def run(
        self,
        raw: np.ndarray,
        age: np.ndarray,
        steps: Sequence[Step],
        offsets: Sequence[int] | None = None,
    ) -> ShadowOutcome:
        """Score the batch's histories (sensor units) in one call and decide as serving
        would; the changes are only counted."""
        scores = np.zeros(0)
        if len(raw):
            scores = self.detector.score(raw, np.minimum(age, raw.shape[1]), age).scores
        decision = self.decider.decide(steps, scores, offsets)
        return ShadowOutcome(
            self.version, scores, counted(decision), decision.breaks, decision.thresholds
        )


Identity = tuple[int, int, int, int]
Mark = tuple[Identity, Identity | None]


class ShadowSource:
    """The candidate folder, checked on the reload cadence.

    ``shadow`` is always the bundle the folder holds now, loaded and fitting the serving
    model, or None: a candidate that does not load or does not fit is refused once and
    nothing is scored until the folder or the serving model changes.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.shadow: Shadow | None = None
        self._current: tuple[Mark, str] | None = None
        self._refused: set[tuple[Mark, str]] = set()
        self._absent = False

    def check(self, serving: Bundle) -> str:
        """Follow the folder; LOADED, REFUSED, STOPPED, or UNCHANGED when nothing changed."""
        try:
            key = (_mark(self.folder), serving.version)
        except OSError:
            return self._gone()
        self._absent = False
        if key == self._current or key in self._refused:
            return UNCHANGED
        same_files = self._current is not None and self._current[0] == key[0]
        try:
            if self.shadow is not None and same_files:
                check_fits(self.shadow.bundle, serving)
                shadow = self.shadow
            else:
                shadow = Shadow.load(self.folder, serving)
        except BundleError as exc:
            self._refused.add(key)
            self.shadow, self._current = None, None
            log.error("refused the shadow candidate in %s: %s", self.folder, exc)
            return REFUSED
        self._current = key
        if shadow is self.shadow:
            return UNCHANGED
        self.shadow = shadow
        log.info(
            "scoring candidate %s in shadow (threshold %.5g) beside %s",
            shadow.version,
            shadow.bundle.threshold,
            serving.version,
        )
        return LOADED

    def _gone(self) -> str:
        if not self._absent:
            log.warning("no model bundle in %s: no candidate is scored in shadow", self.folder)
            self._absent = True
        if self.shadow is None:
            return UNCHANGED
        self.shadow, self._current = None, None
        return STOPPED

    def active(self, serving_version: str) -> Shadow | None:
        """The candidate to score, unless it is the serving model itself (just promoted)."""
        shadow = self.shadow
        return shadow if shadow is not None and shadow.version != serving_version else None


def _mark(folder: Path) -> Mark:
    """Identity of the bundle's files: another bundle in the folder (or a moved link) changes
    it, and so does a model file still being copied when it was first seen."""
    manifest = _identity(folder / MANIFEST_FILE)  # OSError when no bundle is there
    model = folder / MODEL_FILE
    return manifest, _identity(model) if model.exists() else None


def _identity(path: Path) -> Identity:
    info = path.stat()
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
