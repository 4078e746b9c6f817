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
    """One machine's window (its decisions are its model's decider's).

    ``window``, ``last_raw`` and ``seen_ts`` are views of the machine's slot in the windows'
    shared arrays.
    """

    window: np.ndarray
    partition: int
    count: int = 0
    last_ts: int = -1
    last_raw: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    seen_ts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    slot: int = -1


class _Slots:
    """Every machine's window, carried-forward values and their times, in three arrays of
    one slot a machine, so that a batch reads and writes many machines in one gather and
    one scatter. Freed slots are reused; when none is left the arrays double."""

    def __init__(self, length: int, width: int, capacity: int = 64) -> None:
        self.windows = np.zeros((capacity, length, width), np.float32)
        self.raw = np.full((capacity, width), np.nan, np.float32)
        self.seen = np.full((capacity, width), -1, np.int64)
        self.free = list(range(capacity - 1, -1, -1))

    def take(self, machines: Iterable[Machine]) -> int:
        """An emptied slot (``machines``, all holding slots, are moved if the arrays grow)."""
        if not self.free:
            self._grow(machines)
        slot = self.free.pop()
        self.windows[slot] = 0.0
        self.raw[slot] = np.nan
        self.seen[slot] = -1
        return slot

    def attach(self, machine: Machine) -> None:
        """Point the machine's arrays at its slot."""
        slot = machine.slot
        machine.window, machine.last_raw = self.windows[slot], self.raw[slot]
        machine.seen_ts = self.seen[slot]

    def _grow(self, machines: Iterable[Machine]) -> None:
        size = len(self.windows)
        for name in ("windows", "raw", "seen"):
            old = getattr(self, name)
            new = np.empty((2 * size, *old.shape[1:]), old.dtype)
            new[:size] = old
            setattr(self, name, new)
        self.free.extend(range(2 * size - 1, size - 1, -1))
        for machine in machines:
            self.attach(machine)


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
        self._slots = _Slots(self.length, self.width)
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
            self._forget(machine_id)
            machine = None
        if machine is None:
            machine = Machine(
                np.zeros(0, np.float32), partition, slot=self._slots.take(self.machines.values())
            )
            self._slots.attach(machine)
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
        infinite = np.isinf(vectors).any(axis=1)
        overflow = set(np.flatnonzero(infinite).tolist())
        ts = np.fromiter((row.ts_ms for row in rows), np.int64, len(rows))
        parts = np.asarray(partitions, np.int64).reshape(len(rows))
        clean = complete & ~infinite
        clean &= np.fromiter((row.brk == 0 for row in rows), bool, len(rows))
        steady = self._steady(rows, ts, parts, clean)
        batch = _Batch(vectors, self.length)
        out: list[Observation | RowRejected | None] = [None] * len(rows)
        # The partitions' clocks as the steady rows before each other row advance them.
        clock = steady.clock_before(ts, parts)
        keep = ready is not None
        for i in np.flatnonzero(~steady.rows).tolist():
            row, partition = rows[i], partitions[i]
            if clock[i] > self.progress.get(partition, -1):
                self.progress[partition] = int(clock[i])
            try:
                if i in overflow:
                    raise self._overflow(vectors[i])
                known, full = int(named[i]), bool(complete[i])
                out[i] = self._observe(batch, i, row, partition, known, full, keep)
            except RowRejected as exc:
                out[i] = exc
        steady.advance(self, out, vectors, ts, parts)
        source = batch.source()
        rows_of = np.asarray(batch.ready_rows, np.int64)
        windows_of = np.asarray(batch.ready, np.int64).reshape(-1, self.length)
        if steady.machines:
            picks = steady.picks(len(source), self.length)
            source = np.concatenate(
                [source, self._slots.windows[steady.slots].reshape(-1, self.width)]
            )
            if keep:
                kept = steady.ready
                rows_of = np.concatenate([rows_of, steady.row_index[kept]])
                windows_of = np.concatenate([windows_of, picks[kept]])
            self._slots.windows[steady.slots] = source[picks[steady.last]]
            last = steady.row_index[steady.last]
            self._slots.raw[steady.slots] = vectors[last]
            self._slots.seen[steady.slots] = ts[last][:, None]
        if ready is not None and len(rows_of):
            ready[: len(rows_of)] = source[windows_of[np.argsort(rows_of)]]
        batch.finish(source)
        return out  # type: ignore[return-value]  # every row was given its outcome

    def _steady(
        self, rows: Sequence[Row], ts: np.ndarray, parts: np.ndarray, clean: np.ndarray
    ) -> _Steady:
        """The machines whose every row in the batch just extends their window: held, on
        the same partition, not idle, each row complete, finite, no break, in order and
        within the gap. Their rows need no rule applied one at a time."""
        n = len(rows)
        codes, names = _machine_codes(rows)
        held = [self.machines.get(name) for name in names]
        last = np.fromiter((-1 if m is None else m.last_ts for m in held), np.int64, len(held))
        home = np.fromiter((-1 if m is None else m.partition for m in held), np.int64, len(held))
        order = np.argsort(codes, kind="stable")
        code, times = codes[order], ts[order]
        first = np.ones(n, bool)
        first[1:] = code[1:] != code[:-1]
        before = np.empty(n, np.int64)
        before[1:] = times[:-1]
        before[first] = last[code[first]]
        fine = clean[order] & (before >= 0) & (times > before) & (parts[order] == home[code])
        fine &= times - before <= self.quality.max_gap_ms
        idle_ms = self.quality.idle_ms
        if idle_ms is not None:
            # Each row's partition clock, counting every row: a machine not idle by it is
            # not idle by the partition's real clock (accepted rows only) either.
            fine &= self._clock(ts, parts)[order] - before <= idle_ms
        starts = np.flatnonzero(first)
        good = np.logical_and.reduceat(fine, starts) if n else np.zeros(0, bool)
        return _Steady(order, starts, good, held, code, self.lookback)

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
            batch.ready_rows.append(i)
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
            self._forget(machine_id)
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
            self._forget(machine_id)
        return len(gone)

    def _forget(self, machine_id: str) -> None:
        self._slots.free.append(self.machines.pop(machine_id).slot)

    def idle_cut(self, rows: Sequence[Row], partitions: Sequence[int]) -> int | None:
        """The first of ``rows`` whose machine it finds idle although the machine has an
        earlier row among them (None when there is none): a batch is cut there, so that
        each piece holds at most one stretch of each machine."""
        idle_ms, n = self.quality.idle_ms, len(rows)
        if idle_ms is None or n < 2:
            return None
        ts = np.fromiter((row.ts_ms for row in rows), np.int64, n)
        now = self._clock(ts, np.asarray(partitions, np.int64).reshape(n))
        # Each row's machine's newest earlier time in the batch (-1: its first row). Times
        # lie below 2**43 ms, so lifting each machine's by 2**43 per machine keeps one
        # running maximum from reaching across machines.
        codes, _ = _machine_codes(rows)
        order = np.argsort(codes, kind="stable")
        lift = codes[order] << 43
        newest = np.maximum.accumulate(ts[order] + lift) - lift
        before = np.full(n, -1, np.int64)
        same = codes[order][1:] == codes[order][:-1]
        before[order[1:][same]] = newest[:-1][same]
        found = np.flatnonzero((before >= 0) & (now - before > idle_ms))
        return int(found[0]) if len(found) else None

    def _clock(self, ts: np.ndarray, parts: np.ndarray) -> np.ndarray:
        """Each row's partition clock as of it, as if every row before it (and it) counted:
        the newest of its partition's time before the batch and the rows' times so far."""
        clock = np.empty(len(ts), np.int64)
        for partition in np.unique(parts).tolist():
            mine = parts == partition
            clock[mine] = np.maximum.accumulate(
                np.maximum(ts[mine], self.progress.get(partition, -1))
            )
        return clock

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


def _machine_codes(rows: Sequence[Row]) -> tuple[np.ndarray, list[str]]:
    """Each row's machine as a number (0, 1, ... in order of first appearance), and the
    machines in that order."""
    codes_of: dict[str, int] = {}
    codes = np.fromiter(
        (codes_of.setdefault(row.machine_id, len(codes_of)) for row in rows), np.int64, len(rows)
    )
    return codes, list(codes_of)


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
        self.ready: list[list[int]] = []  # the READY rows' windows
        self.ready_rows: list[int] = []  # and the rows they are of

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

    def source(self) -> np.ndarray:
        """The rows the batch's row numbers point at: its own, then the windows before it."""
        if not self.before:
            return self.vectors
        width = self.vectors.shape[1]
        return np.concatenate([self.vectors, np.stack(self.before).reshape(-1, width)])

    def finish(self, source: np.ndarray) -> None:
        """Leave every machine as row-by-row pushes would (``source`` begins as
        :meth:`source` does)."""
        for machine_id, recent in self.recent.items():
            self.machines[machine_id].window[:] = source[recent]
        for machine_id in list(self.fresh):
            self.settle(machine_id)


class _Steady:
    """The rows of a batch's steady machines, grouped by machine in the batch's order.

    ``order`` sorts the batch by machine (rows of one machine keep their order); group
    ``g`` is ``order[starts[g]:starts[g + 1]]``, and ``good[g]`` says it is steady.
    """

    def __init__(
        self,
        order: np.ndarray,
        starts: np.ndarray,
        good: np.ndarray,
        held: list[Machine | None],
        code: np.ndarray,
        lookback: int,
    ) -> None:
        n = len(order)
        sizes = np.diff(np.append(starts, n))
        self.order = order
        chosen = np.repeat(good, sizes)  # per sorted position
        self.rows = np.zeros(n, bool)
        self.rows[order[chosen]] = True
        groups = np.flatnonzero(good)
        # A steady machine is held, so none of these is None.
        self.machines = [m for m in (held[c] for c in code[starts[groups]].tolist()) if m]
        self.slots = np.fromiter((m.slot for m in self.machines), np.int64, len(groups))
        self.sizes = sizes[groups]
        # Per steady row, in machine order: the batch row it is, its machine's place among
        # the steady machines, its rank among its machine's rows and the machine's count
        # of rows after it.
        positions = np.flatnonzero(chosen)
        self.row_index = order[positions]
        self.group_of = np.repeat(np.arange(len(groups)), self.sizes)
        self.group_start = starts[groups]
        self.rank = positions - self.group_start[self.group_of]
        counts = np.fromiter((m.count for m in self.machines), np.int64, len(groups))
        self.count = counts[self.group_of] + self.rank + 1
        self.last = np.cumsum(self.sizes) - 1  # each machine's last steady row
        self.ready = np.flatnonzero(self.count >= lookback)  # steady rows that are READY
        self.lookback = lookback

    def clock_before(self, ts: np.ndarray, parts: np.ndarray) -> np.ndarray:
        """For each row, the newest steady row's time before it on its partition (-1)."""
        stamps = np.where(self.rows, ts, -1)
        clock = np.full(len(ts), -1, np.int64)
        if not self.rows.any() or self.rows.all():
            return clock
        for partition in np.unique(parts).tolist():
            mine = np.flatnonzero(parts == partition)
            reached = np.maximum.accumulate(stamps[mine])
            clock[mine[1:]] = reached[:-1]
        return clock

    def advance(
        self,
        windows: MachineWindows,
        out: list[Observation | RowRejected | None],
        vectors: np.ndarray,
        ts: np.ndarray,
        parts: np.ndarray,
    ) -> None:
        """Count the steady rows into their machines and give each its observation."""
        if not self.machines:
            return
        rows, lookback = self.row_index, self.lookback
        for machine, size, stamp in zip(
            self.machines, self.sizes.tolist(), ts[rows[self.last]].tolist(), strict=True
        ):
            machine.count += size
            machine.last_ts = stamp
        for i, count in zip(rows.tolist(), self.count.tolist(), strict=True):
            if count >= lookback:
                out[i] = Observation(READY, vectors[i], "", count)
            else:
                out[i] = Observation(WARMING, vectors[i])
        stamps = ts[rows]
        for partition in np.unique(parts[rows]).tolist():
            newest = int(stamps[parts[rows] == partition].max())
            if newest > windows.progress.get(partition, -1):
                windows.progress[partition] = newest

    def picks(self, base: int, length: int) -> np.ndarray:
        """Row numbers of each steady row's window, as the batch's rows (below ``base``)
        and then the steady machines' windows before the batch (from ``base`` on)."""
        # Step j of the window after rank r is position r + 1 + j of the sequence: the
        # machine's window before the batch, then its rows in the batch.
        place = self.rank[:, None] + 1 + np.arange(length)[None, :]
        earlier = place < length
        old = base + self.group_of[:, None] * length + place
        new_at = np.where(earlier, 0, place - length) + self.group_start[self.group_of][:, None]
        return np.where(earlier, old, self.order[new_at])
