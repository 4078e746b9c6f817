"""One batch of messages through rows, windows, one model call, episodes and alerts.

No Kafka calls here: the runner hands in messages and publishes what comes out.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from streamer.alerts import alert_message, top_sensors
from streamer.bundle import Bundle, load_bundle
from streamer.calibrate import CalibrationState, calibrate_many
from streamer.detector import Detector, load_detector
from streamer.episodes import Step, advance, close, scored_rows
from streamer.leadtime import Verdict
from streamer.machines import READY, MachineWindows
from streamer.rows import Row, RowRejected, decode_row
from streamer.shadow import Shadow, ShadowOutcome

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Model:
    """A loaded bundle and the score it names, with its models compiled."""

    bundle: Bundle
    detector: Detector

    @classmethod
    def load(cls, folder: Path, expected_features: tuple[str, ...] | None = None) -> Model:
        """Load and check a bundle; raises BundleError when it is unusable."""
        bundle = load_bundle(folder, expected_features)
        return cls(bundle, load_detector(bundle))


@dataclass
class BatchOutcome:
    """What one batch produced."""

    alerts: list[dict[str, Any]] = field(default_factory=list)
    dead: list[tuple[int, str, str]] = field(default_factory=list)
    scored: list[int] = field(default_factory=list)
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    thresholds: np.ndarray = field(default_factory=lambda: np.zeros(0))
    machines: list[str] = field(default_factory=list)  # of each scored row (adaptive only)
    last_rows: dict[str, int] = field(default_factory=dict)  # each machine's last row
    unscored: Counter[str] = field(default_factory=Counter)
    breaks: list[Verdict] = field(default_factory=list)
    seconds: float = 0.0
    shadow: ShadowOutcome | None = None

    def then(self, later: BatchOutcome, offset: int) -> BatchOutcome:
        """This outcome followed by that of the messages from ``offset`` on."""
        self.alerts += later.alerts
        self.dead += [(index + offset, reason, text) for index, reason, text in later.dead]
        self.scored += [index + offset for index in later.scored]
        self.scores = np.concatenate([self.scores, later.scores])
        self.thresholds = np.concatenate([self.thresholds, later.thresholds])
        self.machines += later.machines
        self.last_rows.update({m: index + offset for m, index in later.last_rows.items()})
        self.unscored += later.unscored
        self.breaks += later.breaks
        self.seconds += later.seconds
        if self.shadow is not None and later.shadow is not None:
            self.shadow = self.shadow.then(later.shadow)
        return self


def process(
    model: Model,
    windows: MachineWindows,
    messages: list[Any],
    max_bytes: int,
    now_ms: int,
    shadow: Shadow | None = None,
) -> BatchOutcome:
    """Decode, window, score in one model call and advance each machine's episode in order.

    A ``shadow`` candidate scores the same windows in one more call and follows episodes of
    its own; what it makes of the batch is in ``outcome.shadow``, never in the alerts.
    """
    out = BatchOutcome()
    decoded: list[tuple[int, Row]] = []
    partitions: list[int] = []
    failed: dict[int, RowRejected] = {}
    for index, message in enumerate(messages):
        try:
            decoded.append((index, decode_row(message.value(), message.key(), max_bytes)))
        except RowRejected as exc:
            failed[index] = exc
            continue
        partitions.append(message.partition() or 0)
    cut = windows.idle_cut([row for _, row in decoded], partitions)
    if cut:
        # A machine found idle after a row of its own in this batch starts afresh there:
        # the rows before are decided first, so each stretch meets its own state.
        split = decoded[cut][0]
        head = process(model, windows, messages[:split], max_bytes, now_ms, shadow)
        tail = process(model, windows, messages[split:], max_bytes, now_ms, shadow)
        return head.then(tail, split)
    batch = np.empty((len(decoded), windows.length, windows.width), np.float32)
    observed = windows.observe_many([row for _, row in decoded], partitions, batch)
    steps: list[Step] = []
    ages: list[int] = []
    for (index, row), obs in zip(decoded, observed, strict=True):
        if isinstance(obs, RowRejected):
            failed[index] = obs
            continue
        out.last_rows[row.machine_id] = index
        if obs.restarted:
            steps.append(Step(row.machine_id, row.ts_ms, reason=obs.restarted))
        if obs.kind == READY:
            steps.append(Step(row.machine_id, row.ts_ms, position=len(out.scored)))
            out.scored.append(index)
            ages.append(obs.age)
        else:
            out.unscored[obs.kind] += 1
    out.dead = [(index, exc.reason, str(exc)) for index, exc in sorted(failed.items())]
    raw = batch[: len(out.scored)]
    age = np.asarray(ages, np.int64)
    _score_and_alert(model, windows, raw, age, steps, now_ms, out, messages)
    if shadow is not None:
        out.shadow = shadow.run(raw, age, steps)
    return out


def _score_and_alert(
    model: Model,
    windows: MachineWindows,
    raw: np.ndarray,
    age: np.ndarray,
    steps: list[Step],
    now_ms: int,
    out: BatchOutcome,
    messages: list[Any],
) -> None:
    bundle = model.bundle
    errors = expected = raw[:, -1, :]
    if len(raw):
        started = time.perf_counter()
        scored = model.detector.score(raw, np.minimum(age, raw.shape[1]), age)
        out.scores, errors, expected = scored.scores, scored.errors, scored.expected
        out.seconds = time.perf_counter() - started
    out.thresholds = _thresholds(bundle, windows, steps, out, messages)
    limits = out.thresholds.tolist()
    alerting = (np.asarray(out.scores, np.float64) >= out.thresholds).tolist()
    for step in steps:
        machine = windows.machines[step.machine]
        if step.ts_ms <= machine.decided_through:
            continue  # a rebuild's row that the machine's checkpointed episode holds
        k = step.position
        if k >= 0:
            machine.threshold = limits[k]
        if step.reason == "break":
            out.breaks.append(bundle.warning.judge(machine.openings, step.ts_ms))
        if k >= 0 and not alerting[k] and machine.episode.started_ms is None:
            continue  # a closed episode and a score under the threshold: nothing happens
        if k < 0:
            machine.episode, event = close(machine.episode, step.reason)
        else:
            machine.episode, event = advance(
                machine.episode,
                step.ts_ms,
                float(out.scores[k]),
                limits[k],
                bundle.episode_policy,
            )
        if event is None:
            continue
        if event.status == "open":
            machine.openings = bundle.warning.remember(machine.openings, step.ts_ms)
        sensors = (
            []
            if k < 0
            else top_sensors(errors[k], raw[k, -1], expected[k], bundle.spec.feature_names)
        )
        score = event.peak if k < 0 else float(out.scores[k])
        out.alerts.append(
            alert_message(
                step.machine,
                event,
                step.ts_ms,
                now_ms,
                score,
                limits[k] if k >= 0 else _last_threshold(machine.threshold, bundle),
                sensors,
                bundle.version,
                bundle.horizon_minutes,
                (bundle.warning.min_lead_minutes, bundle.warning.max_lead_minutes),
            )
        )


def _thresholds(
    bundle: Bundle,
    windows: MachineWindows,
    steps: list[Step],
    out: BatchOutcome,
    messages: list[Any],
) -> np.ndarray:
    """Each scored row's threshold: the bundle's own, or its machine's adaptive one.

    A machine resumed from a checkpoint already holds its rows up to the checkpoint's
    offset (a rebuild replays some of them): those leave its histogram as it is.
    """
    calibration = bundle.calibration
    if calibration is None:
        return np.full(len(out.scores), bundle.threshold)
    keys, minutes = scored_rows(steps)
    out.machines = keys
    machines = windows.machines
    scores = np.array(out.scores, np.float64)  # a copy: resumed rows become NaN here
    states: dict[str, CalibrationState] = {}
    for k, key in enumerate(keys):
        machine = machines[key]
        if machine.calibrated_through >= 0:
            if messages[out.scored[k]].offset() <= machine.calibrated_through:
                scores[k] = math.nan
            else:
                machine.calibrated_through = -1
        if machine.calibration is not None:
            states[key] = machine.calibration
    thresholds = calibrate_many(calibration, states, keys, scores, minutes)
    for key, state in states.items():
        machines[key].calibration = state
    return thresholds


def _last_threshold(threshold: float, bundle: Bundle) -> float:
    """The threshold a machine's latest scored row met (the bundle's before any)."""
    return bundle.threshold if math.isnan(threshold) else threshold
