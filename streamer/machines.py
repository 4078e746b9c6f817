"""Per-machine state: the window of rows, carried-forward sensors and the alert episode.

Windows hold rows in sensor units; a batch is scaled when it is scored, so a new bundle
with the same features takes over the windows as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from streamer.episodes import EpisodeState
from streamer.features import FeatureSpec
from streamer.rows import INCOMPATIBLE_SENSORS, OUT_OF_ORDER, Row, RowRejected

# What became of an accepted row.
READY = "ready"  # the window is full: score it
WARMING = "warming"  # the window is still filling after a (re)start
BREAK = "break"  # the machine's own break signal: not scored, the window restarts
DEGRADED = "degraded"  # a sensor has been missing too long: not scored, the window restarts


@dataclass(frozen=True)
class DataQuality:
    """The documented rule for gaps and missing sensors.

    A missing or null sensor carries its last value forward for up to ``carry_ms``; past
    that the machine is degraded and its window restarts. A gap between rows longer than
    ``max_gap_ms`` restarts the window. A row naming fewer than ``min_sensor_share`` of
    the model's sensors is from another sensor set and is dead-lettered.
    """

    max_gap_ms: int
    carry_ms: int
    min_sensor_share: float = 0.5


@dataclass(slots=True)
class Machine:
    """What the streamer keeps for one machine."""

    window: np.ndarray
    partition: int
    count: int = 0
    last_ts: int = -1
    last_raw: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    seen_ts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    episode: EpisodeState = field(default_factory=EpisodeState)


@dataclass(frozen=True, slots=True)
class Observation:
    """The outcome of one accepted row, and whether it cut the machine's stretch."""

    kind: str
    raw: np.ndarray
    restarted: str = ""


class MachineWindows:
    """Windows of rows per machine, filled row by row as in training."""

    def __init__(self, spec: FeatureSpec, lookback: int, quality: DataQuality) -> None:
        self.spec, self.lookback, self.quality = spec, lookback, quality
        self.width = len(spec.feature_names)
        self.machines: dict[str, Machine] = {}

    def __len__(self) -> int:
        return len(self.machines)

    def get(self, machine_id: str, partition: int) -> Machine:
        """The machine's state, created empty on first sight."""
        machine = self.machines.get(machine_id)
        if machine is None:
            machine = Machine(
                window=np.zeros((self.lookback, self.width), np.float32),
                partition=partition,
                last_raw=np.full(self.width, np.nan, np.float32),
                seen_ts=np.full(self.width, -1, np.int64),
            )
            self.machines[machine_id] = machine
        machine.partition = partition
        return machine

    def check_sensors(self, row: Row) -> None:
        """Refuse rows whose sensors are mostly not the model's."""
        known = sum(1 for name in self.spec.sensors if name in row.values)
        if known < self.quality.min_sensor_share * len(self.spec.sensors):
            raise RowRejected(
                INCOMPATIBLE_SENSORS,
                f"the row names {known} of the model's {len(self.spec.sensors)} sensors",
            )

    def observe(self, row: Row, partition: int) -> Observation:
        """Apply the data-quality rule and push the row; raises RowRejected if out of order."""
        self.check_sensors(row)
        machine = self.get(row.machine_id, partition)
        if row.ts_ms <= machine.last_ts:
            raise RowRejected(
                OUT_OF_ORDER,
                f"ts {row.ts_ms} is not after the machine's last row at {machine.last_ts}",
            )
        restarted = ""
        if machine.last_ts >= 0 and row.ts_ms - machine.last_ts > self.quality.max_gap_ms:
            machine.count, restarted = 0, "gap"
        machine.last_ts = row.ts_ms
        raw = self._fill(machine, self.spec.vector(row.values), row.ts_ms)
        if row.brk:
            machine.count = 0
            return Observation(BREAK, raw, "break")
        if np.isnan(raw).any():
            machine.count = 0
            return Observation(DEGRADED, raw, "degraded")
        machine.window[:-1] = machine.window[1:]
        machine.window[-1] = raw
        machine.count += 1
        return Observation(READY if machine.count >= self.lookback else WARMING, raw, restarted)

    def _fill(self, machine: Machine, raw: np.ndarray, ts_ms: int) -> np.ndarray:
        """Carry missing sensors forward for a bounded time."""
        present = ~np.isnan(raw)
        machine.last_raw[present] = raw[present]
        machine.seen_ts[present] = ts_ms
        fresh = (machine.seen_ts >= 0) & (ts_ms - machine.seen_ts <= self.quality.carry_ms)
        return np.where(present, raw, np.where(fresh, machine.last_raw, np.nan)).astype(np.float32)

    def drop_partitions(self, partitions: set[int]) -> int:
        """Forget the machines of revoked partitions; returns how many were dropped."""
        gone = [m for m, state in self.machines.items() if state.partition in partitions]
        for machine_id in gone:
            del self.machines[machine_id]
        return len(gone)

    def evict_idle(self, now_ts_ms: int, idle_ms: int) -> int:
        """Forget machines whose last row is older than ``idle_ms``."""
        gone = [m for m, s in self.machines.items() if now_ts_ms - s.last_ts > idle_ms]
        for machine_id in gone:
            del self.machines[machine_id]
        return len(gone)

    def warming(self) -> int:
        """Machines whose window is not yet full."""
        return sum(1 for s in self.machines.values() if s.count < self.lookback)
