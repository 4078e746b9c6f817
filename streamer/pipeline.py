"""One batch of messages through rows, windows, one model call, episodes and alerts.

No Kafka calls here: the runner hands in messages and publishes what comes out.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from streamer.alerts import alert_message, top_sensors
from streamer.bundle import Bundle, load_bundle
from streamer.decider import Coordinate, Decider
from streamer.detector import Detector, load_detector
from streamer.episodes import Step
from streamer.leadtime import Verdict
from streamer.machines import READY, MachineWindows
from streamer.rows import Row, RowRejected, decode_rows
from streamer.shadow import Shadow, ShadowOutcome

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Model:
    """A loaded bundle, the score it names with its models compiled, and the decider that
    holds every machine's decisions under it."""

    bundle: Bundle
    detector: Detector
    decider: Decider

    @classmethod
    def load(cls, folder: Path, expected_features: tuple[str, ...] | None = None) -> Model:
        """Load and check a bundle; raises BundleError when it is unusable."""
        bundle = load_bundle(folder, expected_features)
        return cls(bundle, load_detector(bundle), Decider.for_bundle(bundle))


@dataclass
class BatchOutcome:
    """What one batch produced."""

    alerts: list[dict[str, Any]] = field(default_factory=list)
    dead: list[tuple[int, str, str]] = field(default_factory=list)
    scored: list[int] = field(default_factory=list)
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    thresholds: np.ndarray = field(default_factory=lambda: np.zeros(0))
    machines: list[str] = field(default_factory=list)  # of each scored row (adaptive only)
    last_rows: dict[str, Coordinate] = field(default_factory=dict)  # each machine's last row
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
        self.last_rows.update(later.last_rows)
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
    rows = decode_rows([(m.value(), m.key()) for m in messages], max_bytes)
    for index, (message, row) in enumerate(zip(messages, rows, strict=True)):
        if isinstance(row, RowRejected):
            failed[index] = row
            continue
        decoded.append((index, row))
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
    scored, unscored = out.scored, out.unscored
    last: dict[str, tuple[int, int]] = {}  # each machine's last accepted row: index, time
    for (index, row), obs in zip(decoded, observed, strict=True):
        if isinstance(obs, RowRejected):
            failed[index] = obs
            continue
        machine, ts_ms = row.machine_id, row.ts_ms
        last[machine] = (index, ts_ms)
        if obs.started:
            # A machine new to the windows is new to every model's decisions as well.
            model.decider.start(machine, obs.checkpoint)
            if shadow is not None:
                shadow.decider.start(machine)
        if obs.restarted:
            steps.append(Step(machine, ts_ms, reason=obs.restarted))
        if obs.kind == READY:
            steps.append(Step(machine, ts_ms, len(scored)))
            scored.append(index)
            ages.append(obs.age)
        else:
            unscored[obs.kind] += 1
    offsets = [messages[index].offset() or 0 for index in scored]
    out.dead = [(index, exc.reason, str(exc)) for index, exc in sorted(failed.items())]
    out.last_rows = {
        machine: Coordinate(messages[i].partition() or 0, messages[i].offset() or 0, ts_ms)
        for machine, (i, ts_ms) in last.items()
    }
    raw = batch[: len(out.scored)]
    age = np.asarray(ages, np.int64)
    _score_and_alert(model, raw, age, steps, offsets, now_ms, out)
    if shadow is not None:
        out.shadow = shadow.run(raw, age, steps, offsets)
    return out


def _score_and_alert(
    model: Model,
    raw: np.ndarray,
    age: np.ndarray,
    steps: list[Step],
    offsets: list[int],
    now_ms: int,
    out: BatchOutcome,
) -> None:
    """Score the batch in one call, let the decider decide, and word its changes as alerts."""
    bundle = model.bundle
    errors = expected = raw[:, -1, :]
    if len(raw):
        started = time.perf_counter()
        scored = model.detector.score(raw, np.minimum(age, raw.shape[1]), age)
        out.scores, errors, expected = scored.scores, scored.errors, scored.expected
        out.seconds = time.perf_counter() - started
    decision = model.decider.decide(steps, out.scores, offsets)
    out.thresholds, out.breaks = decision.thresholds, decision.breaks
    out.machines = decision.machines
    for change in decision.changes:
        k = change.position
        sensors = (
            []
            if k < 0
            else top_sensors(errors[k], raw[k, -1], expected[k], bundle.spec.feature_names)
        )
        out.alerts.append(
            alert_message(
                change.machine,
                change.transition,
                change.ts_ms,
                now_ms,
                change.score,
                change.threshold,
                sensors,
                bundle.version,
                bundle.horizon_minutes,
                (bundle.warning.min_lead_minutes, bundle.warning.max_lead_minutes),
            )
        )
