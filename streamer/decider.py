"""What a loaded model decides for every machine: thresholds, alert episodes, the verdict on
each break and when a machine's state is due to be checkpointed.

One path for the serving model and a shadow candidate alike. A batch goes in as plain
values: its steps (machine, time, position among the scores, or a cut and its reason), its
scores and the offsets of its scored rows; thresholds, episode changes and judged breaks
come out. Windows stay with the window code; nothing here reads a Kafka message.
"""

from __future__ import annotations

import math
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from streamer.bundle import Bundle
from streamer.calibrate import Calibration, CalibrationState, calibrate_many
from streamer.checkpoint import Checkpoint
from streamer.episodes import (
    EpisodePolicy,
    EpisodeState,
    Step,
    Transition,
    advance,
    close,
    scored_rows,
)
from streamer.leadtime import Verdict, WarningWindow


@dataclass(slots=True)
class MachineDecisions:
    """One machine's decision state under one model."""

    episode: EpisodeState = field(default_factory=EpisodeState)
    openings: tuple[int, ...] = ()  # recent episode starts, to judge a break's lead time
    calibration: CalibrationState | None = None  # its adaptive threshold's recent scores
    threshold: float = math.nan  # the threshold its latest scored row met
    calibrated_through: int = -1  # resumed from a checkpoint: its rows to this offset are in it
    checkpointed: float = math.nan  # minutes of its latest checkpoint (or first score)
    decided_through: int = -1  # resumed: its episode already holds its rows up to this time


@dataclass(frozen=True, slots=True)
class Coordinate:
    """Where a row sits: its partition, its offset there and its time."""

    partition: int
    offset: int
    ts_ms: int


@dataclass(frozen=True, slots=True)
class Change:
    """An episode transition of one machine, at one of the batch's steps."""

    machine: str
    transition: Transition
    ts_ms: int
    position: int  # the scored row it came from; -1 for a cut
    score: float  # that row's score, or the episode's peak for a cut
    threshold: float  # that row's threshold, or the last one the machine met


@dataclass
class Decision:
    """What one batch decided: each scored row's threshold, the changes and judged breaks."""

    thresholds: np.ndarray
    machines: list[str] = field(default_factory=list)  # of each scored row (adaptive only)
    changes: list[Change] = field(default_factory=list)
    breaks: list[Verdict] = field(default_factory=list)


class Decider:
    """Every machine's decision state under one model, and the rule that advances it.

    A machine with no state is as one just started: no episode, no openings and, for an
    adaptive threshold, the bundle's prior. State is made on need, so a fixed threshold
    that never alarms keeps nothing per machine.
    """

    def __init__(
        self,
        threshold: float,
        policy: EpisodePolicy,
        warning: WarningWindow,
        calibration: Calibration | None = None,
        version: str = "",
    ) -> None:
        self.threshold, self.policy, self.warning = threshold, policy, warning
        self.calibration, self.version = calibration, version
        self.machines: dict[str, MachineDecisions] = {}

    @classmethod
    def for_bundle(cls, bundle: Bundle) -> Decider:
        """A decider with the bundle's threshold, episode policy and lead window."""
        return cls(
            bundle.threshold,
            bundle.episode_policy,
            bundle.warning,
            bundle.calibration,
            bundle.version,
        )

    def start(self, machine: str, checkpoint: Checkpoint | None = None) -> None:
        """The windows started ``machine`` afresh (first sight, or back from idle): its state
        is the checkpoint's, if one of this model was resumed, or none."""
        if checkpoint is None or checkpoint.version != self.version:
            self.machines.pop(machine, None)
            return
        state = MachineDecisions(
            calibration=checkpoint.state,
            calibrated_through=checkpoint.offset,
            checkpointed=checkpoint.state.last_minutes,
        )
        if checkpoint.episode is not None:
            state.episode, state.threshold = checkpoint.episode, checkpoint.threshold
            state.decided_through = checkpoint.ts_ms
        self.machines[machine] = state

    def carry_episodes(self, previous: Decider) -> None:
        """Take over the episodes of the model this one replaces; thresholds start again
        from this model's own prior, since its scores differ."""
        for machine, old in previous.machines.items():
            if old.episode.started_ms is None and not old.openings and old.decided_through < 0:
                continue
            self.machines[machine] = MachineDecisions(
                episode=old.episode, openings=old.openings, decided_through=old.decided_through
            )

    def keep(self, machines: Container[str]) -> None:
        """Forget the machines the windows no longer hold (evicted, revoked, rebuilt)."""
        for machine in [m for m in self.machines if m not in machines]:
            del self.machines[machine]

    def clear(self) -> None:
        """Forget every machine."""
        self.machines.clear()

    def decide(
        self, steps: Sequence[Step], scores: np.ndarray, offsets: Sequence[int] | None = None
    ) -> Decision:
        """Apply one batch's steps in order. ``scores`` are its scored rows' scores, in the
        order of the steps' positions; ``offsets`` their offsets (only a machine resumed
        from a checkpoint reads them: its rows up to the checkpoint are in its histogram)."""
        scores = np.asarray(scores, np.float64)
        decision = Decision(*self._thresholds(steps, scores, offsets))
        limits = decision.thresholds.tolist()
        alerting = (scores >= decision.thresholds).tolist()
        for step in steps:
            k, state = step.position, self.machines.get(step.machine)
            if state is not None and step.ts_ms <= state.decided_through:
                continue  # a rebuild's row that the machine's checkpointed episode holds
            if k >= 0 and state is not None:
                state.threshold = limits[k]
            if step.reason == "break":
                decision.breaks.append(
                    self.warning.judge(state.openings if state else (), step.ts_ms)
                )
            if state is None or state.episode.started_ms is None:
                if k < 0 or not alerting[k]:
                    continue  # no episode, and a cut or a score under the threshold
                if state is None:
                    state = self.machines[step.machine] = MachineDecisions(threshold=limits[k])
            if k < 0:
                state.episode, event = close(state.episode, step.reason)
            else:
                state.episode, event = advance(
                    state.episode, step.ts_ms, float(scores[k]), limits[k], self.policy
                )
            if event is None:
                continue
            if event.status == "open":
                state.openings = self.warning.remember(state.openings, step.ts_ms)
            score = event.peak if k < 0 else float(scores[k])
            limit = limits[k] if k >= 0 else self._last_threshold(state.threshold)
            decision.changes.append(Change(step.machine, event, step.ts_ms, k, score, limit))
        return decision

    def _thresholds(
        self, steps: Sequence[Step], scores: np.ndarray, offsets: Sequence[int] | None
    ) -> tuple[np.ndarray, list[str]]:
        """Each scored row's threshold (the bundle's own, or its machine's adaptive one),
        and, with an adaptive one, each scored row's machine."""
        calibration = self.calibration
        if calibration is None:
            return np.full(len(scores), self.threshold), []
        keys, minutes = scored_rows(list(steps))
        scores = scores.copy()  # resumed rows become NaN here
        states: dict[str, CalibrationState] = {}
        resumed: set[str] = set()
        for key in dict.fromkeys(keys):
            state = self.machines.get(key)
            if state is None:
                state = self.machines[key] = MachineDecisions()
            if state.calibrated_through >= 0:
                resumed.add(key)
            if state.calibration is not None:
                states[key] = state.calibration
        # A resumed machine's rows up to its checkpoint are in its histogram already.
        for k, key in enumerate(keys if resumed else ()):
            state = self.machines[key]
            if key not in resumed or state.calibrated_through < 0:
                continue
            if offsets is not None and offsets[k] <= state.calibrated_through:
                scores[k] = math.nan
            else:
                state.calibrated_through = -1
        thresholds = calibrate_many(calibration, states, keys, scores, minutes)
        for key, calibrated in states.items():
            self.machines[key].calibration = calibrated
        return thresholds, keys

    def due(
        self, last: Mapping[str, Coordinate], every_minutes: float, partitions: int
    ) -> list[tuple[int, Checkpoint]]:
        """Checkpoints due after a batch whose machines' last rows are at ``last``: a
        machine's adaptive-threshold state and episode, every ``every_minutes`` of its
        rows, for the state topic's ``partitions`` (0: checkpoints are off)."""
        if not partitions or self.calibration is None:
            return []
        due = []
        for machine, at in last.items():
            state = self.machines.get(machine)
            if state is None or state.calibration is None or at.partition >= partitions:
                continue
            minutes = state.calibration.last_minutes
            if math.isnan(state.checkpointed):
                state.checkpointed = minutes  # its clock starts
            elif minutes - state.checkpointed >= every_minutes:
                state.checkpointed = minutes
                checkpoint = Checkpoint(
                    *(machine, at.offset, self.version, state.calibration),
                    *(at.ts_ms, state.episode, state.threshold),
                )
                due.append((at.partition, checkpoint))
        return due

    def _last_threshold(self, threshold: float) -> float:
        """The threshold a machine's latest scored row met (the bundle's before any)."""
        return self.threshold if math.isnan(threshold) else threshold
