"""Idle machines are judged on their own partition's event time, so batch boundaries, the
order partitions are read in and when eviction runs never change what a machine becomes."""

import random

import numpy as np
import orjson
import pytest
from fake_kafka import Record
from tiny_bundle import SENSORS, save_model, write_version

from streamer.bundle import Registry
from streamer.calibrate import CalibrationState
from streamer.checkpoint import Checkpoint
from streamer.features import FeatureSpec
from streamer.machines import READY, WARMING, DataQuality, MachineWindows
from streamer.pipeline import Model, process
from streamer.rows import Row, RowRejected

pytestmark = pytest.mark.unit

MIN = 60_000
IDLE = 90 * MIN


def windows(idle_ms: int | None = IDLE) -> MachineWindows:
    return MachineWindows(FeatureSpec(("a", "b")), 3, DataQuality(20 * MIN, 20 * MIN, 0.5, idle_ms))


def row(machine: str, ts_min: float) -> Row:
    return Row(machine, int(ts_min * MIN), {"a": ts_min, "b": 1.0}, 0)


def test_a_machine_is_idle_on_its_own_partitions_clock_only():
    w = windows()
    w.observe(row("A", 0), 0)
    w.observe(row("B", 0), 1)
    for minute in range(2, 200, 2):  # partition 1 moves on; partition 0 is read later
        w.observe(row("B", minute), 1)
    assert w.evict_idle() == 0, "A's partition has not moved on: A is not idle"
    w.observe(row("C", 100), 0)
    assert w.evict_idle({1}) == 0 and "A" in w.machines  # only partition 0's clock can
    assert w.evict_idle({0}) == 1 and sorted(w.machines) == ["B", "C"]


def test_a_machine_back_after_idling_starts_afresh_whether_or_not_eviction_ran():
    swept, lazy = windows(), windows()
    for w, sweep in ((swept, True), (lazy, False)):
        w.observe(row("A", 0), 0)
        w.observe(row("B", 95), 0)  # the partition's clock passes A's last row + idle
        if sweep:
            assert w.evict_idle() == 1
        w.observe(row("A", 96), 0)
    assert swept.machines["A"].count == lazy.machines["A"].count == 1
    # Within the idle time a machine keeps its state (its window restarts on the gap).
    w = windows()
    w.observe(row("A", 0), 0)
    w.observe(row("B", 80), 0)
    w.observe(row("A", 85), 0)
    assert w.machines["A"].count == 1 and w.evict_idle() == 0


def test_a_machine_silent_longer_than_the_idle_time_on_its_own_starts_afresh():
    w = windows()
    assert w.observe(row("A", 0), 0).started
    assert not w.observe(row("A", 2), 0).started
    assert w.observe(row("A", 93), 0).started  # its decisions start afresh with it
    with pytest.raises(RowRejected):  # and out-of-order rows are still refused
        w.observe(row("A", 50), 0)


def test_without_an_idle_time_no_machine_is_forgotten():
    w = windows(None)
    w.observe(row("A", 0), 0)
    w.observe(row("B", 10_000), 0)
    assert w.evict_idle() == 0 and len(w) == 2


def test_a_checkpoint_of_a_machine_that_was_idle_is_not_resumed():
    state = CalibrationState(np.ones(3), 10.0)  # taken at the machine's row at minute 10
    w = windows()
    w.resume(0, {"A": Checkpoint("A", 5, "v1", state), "B": Checkpoint("B", 6, "v1", state)})
    w.observe(row("C", 95), 0)  # rebuilt rows show the partition 85 minutes on
    a = w.observe(row("A", 99), 0)  # 89 minutes after A's checkpointed row: A was not idle
    w.observe(row("C", 101), 0)
    b = w.observe(row("B", 102), 0)  # 92 minutes: B was, and starts from the prior
    assert a.started and a.checkpoint is not None and a.checkpoint.state is state
    assert b.started and b.checkpoint is None
    assert not w.observe(row("A", 100), 0).started


def stream(machines: int, rows_each: int, seed: int) -> list[tuple[Row, int]]:
    """Rows of machines on two partitions, in time order, some silent for hours."""
    rng = random.Random(seed)
    out: list[tuple[Row, int]] = []
    silent = {m: (rng.randrange(rows_each), rng.randrange(20, 80)) for m in range(machines)}
    for i in range(rows_each):
        for m in range(machines):
            start, length = silent[m]
            if not start <= i < start + length:
                out.append((row(f"M{m}", i * 2 + m * 0.01), m % 2))
    return out


def replay(rows: list[tuple[Row, int]], order: list[int], cuts: set[int], sweeps: float):
    """Feed the rows partition by partition in ``order`` (each partition's own order kept),
    in batches cut at ``cuts``, evicting after a random share of batches; what each row
    found, and each machine's state at the end."""
    by_partition = {p: [r for r in rows if r[1] == p] for p in (0, 1)}
    fed = [item for p in order for item in by_partition[p][: len(by_partition[p]) // 2]]
    fed += [item for p in order for item in by_partition[p][len(by_partition[p]) // 2 :]]
    rng = random.Random(len(cuts))
    w, batch, found = windows(), [], {}
    for i, item in enumerate(fed):
        batch.append(item)
        if i in cuts or i == len(fed) - 1:
            outcomes = w.observe_many([r for r, _ in batch], [p for _, p in batch])
            for outcome, (r, _) in zip(outcomes, batch, strict=True):
                assert not isinstance(outcome, RowRejected)
                found[r.machine_id, r.ts_ms] = (outcome.kind, outcome.restarted)
            batch = []
            if rng.random() < sweeps:
                w.evict_idle({p for _, p in fed[max(0, i - 8) : i + 1]})
    w.evict_idle()  # what memory holds differs until the idle are swept
    final = {m: (s.count, s.last_ts, s.window.tobytes()) for m, s in w.machines.items()}
    return found, final


def test_what_each_row_finds_depends_on_its_partition_alone_not_on_batches_or_timing():
    rows = stream(machines=6, rows_each=300, seed=7)
    expected = replay(rows, [0, 1], set(), 0.0)  # in one go, never swept
    last: dict[str, str] = {}
    fresh = 0  # rows that found their machine forgotten: warming anew straight after READY
    for (machine, _), (kind, restarted) in sorted(expected[0].items(), key=lambda kv: kv[0][1]):
        fresh += last.get(machine) == READY and (kind, restarted) == (WARMING, "")
        last[machine] = kind
    assert fresh >= 3, f"only {fresh} machines came back after idling"
    rng = random.Random(11)
    for trial in range(6):
        cuts = set(rng.sample(range(len(rows)), 40 * (trial + 1)))
        order = [0, 1] if trial % 2 else [1, 0]
        assert replay(rows, order, cuts, sweeps=trial / 5) == expected


def test_a_batch_holding_a_machine_before_and_after_its_idle_time_decides_as_row_by_row(
    tmp_path,
):
    model_path = tmp_path / "model.keras"
    save_model(model_path)
    registry = Registry(tmp_path / "registry")
    model = Model.load(write_version(registry, "v1", model_path, 0.0))  # every score alarms
    rng = np.random.default_rng(3)
    rows = [("A", m) for m in range(0, 20, 2)]
    rows += [("B", m) for m in range(20, 130, 2)]  # A is silent for 110 minutes
    rows += [("A", m) for m in range(130, 150, 2)]
    messages = []
    for offset, (machine, minute) in enumerate(rows):
        values = dict(zip(SENSORS, rng.normal(size=len(SENSORS)).tolist(), strict=True))
        value = orjson.dumps({"machine_id": machine, "ts": minute * MIN, "values": values})
        messages.append(Record("sensors", 0, offset, machine.encode(), value))

    def alerts(batch: int) -> list[tuple[str, str]]:
        quality = DataQuality(10 * MIN, 10 * MIN, 0.5, IDLE)
        w = MachineWindows(model.bundle.spec, model.bundle.lookback, quality)
        out = []
        for start in range(0, len(messages), batch):
            outcome = process(model, w, messages[start : start + batch], 1 << 16, 1)
            out += [(a["alert_id"], a["status"]) for a in outcome.alerts]
        return out

    one_by_one = alerts(1)
    assert [status for _, status in one_by_one].count("open") == 3  # A twice, B once
    assert alerts(len(messages)) == alerts(7) == one_by_one


def _first_idle_row(w: MachineWindows, rows: list[Row], partitions: list[int]) -> int | None:
    """The cut by its definition, one row at a time."""
    progress, last = dict(w.progress), {}
    for i, (r, partition) in enumerate(zip(rows, partitions, strict=True)):
        now = max(progress.get(partition, -1), r.ts_ms)
        before = last.get(r.machine_id)
        if before is not None and now - before > IDLE:
            return i
        last[r.machine_id] = max(r.ts_ms, -1 if before is None else before)
        progress[partition] = now
    return None


@pytest.mark.parametrize("seed", range(20))
def test_the_batch_is_cut_at_the_first_row_whose_machine_went_idle_within_it(seed):
    rng = random.Random(seed)
    w = windows()
    w.progress = {0: rng.randrange(0, 50) * MIN, 1: rng.randrange(0, 50) * MIN}
    rows, partitions = [], []
    for _ in range(rng.randrange(2, 60)):
        machine = rng.randrange(6)
        # Odd seeds spread rows over 300 minutes (cuts likely), even seeds over 60 (none).
        spread = rng.choice([0, 1, 30, 95, 200]) + rng.random() * 100 if seed % 2 else 0.0
        rows.append(row(f"M{machine}", spread + rng.random() * 60))
        partitions.append(machine % 2)
    assert w.idle_cut(rows, partitions) == _first_idle_row(w, rows, partitions)
