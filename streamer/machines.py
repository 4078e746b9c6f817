"""Per-machine windows: the rows, carried-forward sensors and the data-quality rule.

Windows hold rows in sensor units; a batch is scaled when it is scored, so a new bundle
with the same features takes over the windows as they are.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from streamer.checkpoint import Checkpoint
from streamer.features import FeatureSpec
from streamer.rows import INCOMPATIBLE_SENSORS, NON_FINITE, OUT_OF_ORDER, Row, RowRejected

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
    the model's sensors is from another sensor set and is dead-lettered. A machine whose
    last row lies more than ``idle_ms`` behind its partition's newest row is idle: it is
    forgotten, and starts afresh if it comes back (None: never).
    """

    max_gap_ms: int
    carry_ms: int
    min_sensor_share: float = 0.5
    idle_ms: int | None = None


@dataclass(slots=True)
class Machine:
    """One machine's window (its decisions are its model's decider's)."""

    window: np.ndarray
    partition: int
    count: int = 0
    last_ts: int = -1
    last_raw: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    seen_ts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


@dataclass(frozen=True, slots=True)
class Observation:
    """The outcome of one accepted row, and whether it cut the machine's stretch.

    ``started``: the row found the machine new to the windows (first sight, or back from
    idle), so its decisions start afresh too, from ``checkpoint`` when one was resumed.
    """

    kind: str
    raw: np.ndarray
    restarted: str = ""
    age: int = 0  # rows of the machine's stretch so far, this one included (READY rows)
    started: bool = False
    checkpoint: Checkpoint | None = None


class MachineWindows:
    """Windows of rows per machine, filled row by row as in training."""

    def __init__(
        self, spec: FeatureSpec, lookback: int, quality: DataQuality, history: int = 0
    ) -> None:
        self.spec, self.lookback, self.quality = spec, lookback, quality
        # Rows kept per machine: the model's window, or the longer history its score reads.
        self.length = max(lookback, history)
        self.width = len(spec.feature_names)
        self.machines: dict[str, Machine] = {}
        self.resumed: dict[str, tuple[int, Checkpoint]] = {}  # taken up at first sight
        self.taken: dict[str, Checkpoint] = {}  # resumed by the machine's latest start
        # Per partition, the newest accepted row's time: the clock idleness is read on, so
        # a machine's fate depends on its partition's rows in order, never on wall-clock
        # time, batch boundaries or how the partitions of a backlog interleave.
        self.progress: dict[int, int] = {}

    def resume(self, partition: int, checkpoints: dict[str, Checkpoint]) -> None:
        """Machines of ``partition`` start from these states when they next appear."""
        for machine, checkpoint in checkpoints.items():
            self.resumed[machine] = (partition, checkpoint)

    def __len__(self) -> int:
        return len(self.machines)

    def get(self, machine_id: str, partition: int, ts_ms: int = -1) -> Machine:
        """The machine's state, created empty on first sight or when it was idle as of a row
        at ``ts_ms`` (the same verdict :meth:`evict_idle` reaches, whenever it runs)."""
        machine = self.machines.get(machine_id)
        if machine is not None and self._idle(machine.last_ts, partition, ts_ms):
            del self.machines[machine_id]
            machine = None
        if machine is None:
            machine = Machine(
                window=np.zeros((self.length, self.width), np.float32),
                partition=partition,
                last_raw=np.full(self.width, np.nan, np.float32),
                seen_ts=np.full(self.width, -1, np.int64),
            )
            self.machines[machine_id] = machine
            self.taken.pop(machine_id, None)
            resumed = self.resumed.pop(machine_id, None)
            if resumed is not None and not self._idle(_row_ts(resumed[1]), partition, ts_ms):
                self.taken[machine_id] = checkpoint = resumed[1]
                if checkpoint.episode is not None and ts_ms > checkpoint.ts_ms:
                    # None of its rows up to the checkpoint are read back, so a gap after it
                    # is seen as one.
                    machine.last_ts = checkpoint.ts_ms
        machine.partition = partition
        return machine

    def check_sensors(self, row: Row) -> None:
        """Refuse rows whose sensors are mostly not the model's."""
        self._check_named(sum(1 for name in self.spec.sensors if name in row.values))

    def _check_named(self, known: int) -> None:
        if known < self.quality.min_sensor_share * len(self.spec.sensors):
            raise RowRejected(
                INCOMPATIBLE_SENSORS,
                f"the row names {known} of the model's {len(self.spec.sensors)} sensors",
            )

    def observe(self, row: Row, partition: int) -> Observation:
        """Apply the data-quality rule and push the row; raises RowRejected if out of order."""
        outcome = self.observe_many([row], [partition])[0]
        if isinstance(outcome, RowRejected):
            raise outcome
        return outcome

    def observe_many(
        self, rows: Sequence[Row], partitions: Sequence[int], ready: np.ndarray | None = None
    ) -> list[Observation | RowRejected]:
        """:meth:`observe` each row in order; a rejected row gives its RowRejected in its
        place. With ``ready`` (shaped rows x length x features), the window of the k-th
        READY row is copied to ``ready[k]`` as it stood right after that row.

        The rows' vectors are built in one go, and window shifts and fresh sensor values are
        kept as row numbers during the batch and written to the machines once at its end.
        """
        # A reading beyond the range of the model's 32-bit floats turns into an infinity
        # here; its row is refused below, before it can poison the machine's window.
        with np.errstate(over="ignore"):
            vectors, named = self.spec.vectors([row.values for row in rows])
        complete = ~np.isnan(vectors).any(axis=1)
        overflow = set(np.flatnonzero(np.isinf(vectors).any(axis=1)).tolist())
        batch = _Batch(vectors, self.length)
        out: list[Observation | RowRejected] = []
        for i, (row, partition, known, full) in enumerate(
            zip(rows, partitions, named.tolist(), complete.tolist(), strict=True)
        ):
            try:
                if i in overflow:
                    raise self._overflow(vectors[i])
                out.append(self._observe(batch, i, row, partition, known, full, ready is not None))
            except RowRejected as exc:
                out.append(exc)
        batch.finish(ready)
        return out

    def _overflow(self, vector: np.ndarray) -> RowRejected:
        name = self.spec.feature_names[int(np.flatnonzero(np.isinf(vector))[0])]
        return RowRejected(
            NON_FINITE, f"sensor {name[:40]!r} is beyond the range of 32-bit floats (3.4e38)"
        )

    def _observe(
        self,
        batch: _Batch,
        i: int,
        row: Row,
        partition: int,
        known: int,
        complete: bool,
        keep_ready: bool,
    ) -> Observation:
        self._check_named(known)
        held = self.machines.get(row.machine_id)
        machine = self.get(row.machine_id, partition, row.ts_ms)
        started = machine is not held
        if held is not None and started:
            batch.forget(row.machine_id)  # it was idle: what the batch holds of it is void
        seen = (started, self.taken.pop(row.machine_id, None) if started else None)
        if row.ts_ms <= machine.last_ts:
            raise RowRejected(
                OUT_OF_ORDER,
                f"ts {row.ts_ms} is not after the machine's last row at {machine.last_ts}",
            )
        self.progress[partition] = max(self.progress.get(partition, -1), row.ts_ms)
        restarted = ""
        if machine.last_ts >= 0 and row.ts_ms - machine.last_ts > self.quality.max_gap_ms:
            machine.count, restarted = 0, "gap"
        machine.last_ts = row.ts_ms
        if complete:
            # Nothing to carry forward: every sensor is fresh as of this row.
            batch.fresh[row.machine_id] = (machine, i, row.ts_ms)
            raw = batch.vectors[i]
        else:
            batch.settle(row.machine_id)
            raw = self._fill(machine, batch.vectors[i], row.ts_ms)
            batch.vectors[i] = raw
        if row.brk:
            machine.count = 0
            return Observation(BREAK, raw, "break", 0, *seen)
        if not complete and np.isnan(raw).any():
            machine.count = 0
            return Observation(DEGRADED, raw, "degraded", 0, *seen)
        recent = batch.push(row.machine_id, machine, i)
        machine.count += 1
        if machine.count < self.lookback:
            return Observation(WARMING, raw, restarted, 0, *seen)
        if keep_ready:
            batch.ready.append(recent.copy())
        return Observation(READY, raw, restarted, machine.count, *seen)

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
            self.taken.pop(machine_id, None)
        for machine_id in [m for m, (p, _) in self.resumed.items() if p in partitions]:
            del self.resumed[machine_id]
        for partition in partitions:
            self.progress.pop(partition, None)
        return len(gone)

    def evict_idle(self, partitions: Iterable[int] | None = None) -> int:
        """Forget the idle machines of ``partitions`` (all by default); returns how many.

        Only memory depends on when this runs: a machine idle now would start afresh at its
        next row anyway, since a partition's newest time never goes back.
        """
        wanted = set(self.progress) if partitions is None else set(partitions)
        gone = [
            m
            for m, s in self.machines.items()
            if s.partition in wanted and self._idle(s.last_ts, s.partition)
        ]
        for machine_id in gone:
            del self.machines[machine_id]
        return len(gone)

    def idle_cut(self, rows: Sequence[Row], partitions: Sequence[int]) -> int | None:
        """The first of ``rows`` whose machine it finds idle although the machine has an
        earlier row among them (None when there is none): a batch is cut there, so that
        each piece holds at most one stretch of each machine."""
        idle_ms = self.quality.idle_ms
        if idle_ms is None:
            return None
        progress, last = dict(self.progress), dict[str, int]()
        for i, (row, partition) in enumerate(zip(rows, partitions, strict=True)):
            now = max(progress.get(partition, -1), row.ts_ms)
            before = last.get(row.machine_id)
            if before is not None and now - before > idle_ms:
                return i
            last[row.machine_id] = max(row.ts_ms, before or -1)
            progress[partition] = now
        return None

    def _idle(self, last_ts: int, partition: int, ts_ms: int = -1) -> bool:
        """Whether a machine last seen at ``last_ts`` is idle on its partition's clock, as
        advanced to ``ts_ms`` by a row of its own."""
        idle_ms = self.quality.idle_ms
        if idle_ms is None or last_ts < 0:
            return False
        return max(self.progress.get(partition, -1), ts_ms) - last_ts > idle_ms

    def warming(self) -> int:
        """Machines whose window is not yet full."""
        return sum(1 for s in self.machines.values() if s.count < self.lookback)


def _row_ts(checkpoint: Checkpoint) -> int:
    """The time of the row a checkpoint was taken at (its machine's last row then)."""
    if checkpoint.ts_ms >= 0:
        return checkpoint.ts_ms
    return round(checkpoint.state.last_minutes * 60_000)


class _Batch:
    """One batch's window shifts and fresh rows, as row numbers, applied at its end.

    Row numbers below ``len(vectors)`` are the batch's own rows; the rest point at rows of
    the windows as they stood before the batch.
    """

    def __init__(self, vectors: np.ndarray, length: int) -> None:
        self.vectors, self.length = vectors, length
        self.before: list[np.ndarray] = []
        self.machines: dict[str, Machine] = {}
        self.recent: dict[str, list[int]] = {}
        self.fresh: dict[str, tuple[Machine, int, int]] = {}
        self.ready: list[list[int]] = []

    def push(self, machine_id: str, machine: Machine, i: int) -> list[int]:
        """Shift row ``i`` into the machine's window; returns the window's row numbers."""
        recent = self.recent.get(machine_id)
        if recent is None:
            start = len(self.vectors) + self.length * len(self.before)
            self.before.append(machine.window)
            self.machines[machine_id] = machine
            recent = self.recent[machine_id] = list(range(start, start + self.length))
        del recent[0]
        recent.append(i)
        return recent

    def forget(self, machine_id: str) -> None:
        """Drop what the batch holds of a machine that was just replaced by a fresh one."""
        for held in (self.machines, self.recent, self.fresh):
            held.pop(machine_id, None)

    def settle(self, machine_id: str) -> None:
        """Write the machine's latest complete row to its carried-forward values."""
        pending = self.fresh.pop(machine_id, None)
        if pending is not None:
            machine, i, ts_ms = pending
            machine.last_raw[:] = self.vectors[i]
            machine.seen_ts[:] = ts_ms

    def finish(self, ready: np.ndarray | None) -> None:
        """Copy out the READY windows and leave every machine as row-by-row pushes would."""
        rows = self.vectors
        if self.before:
            width = rows.shape[1]
            rows = np.concatenate([rows, np.stack(self.before).reshape(-1, width)])
        if ready is not None and self.ready:
            ready[: len(self.ready)] = rows[np.array(self.ready)]
        for machine_id, recent in self.recent.items():
            self.machines[machine_id].window[:] = rows[recent]
        for machine_id in list(self.fresh):
            self.settle(machine_id)
