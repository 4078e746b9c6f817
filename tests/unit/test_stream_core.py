"""The streamer's pure core with plain lists: rows, windows, data quality, episodes, alerts."""

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram

from streamer import rows as r
from streamer.alerts import (
    CONTRACT_FIELDS,
    alert_id,
    alert_message,
    describe,
    episode_id,
    top_sensors,
)
from streamer.episodes import EpisodePolicy, EpisodeState, advance, close, episode_starts
from streamer.features import FeatureSpec
from streamer.machines import BREAK, DEGRADED, READY, WARMING, DataQuality, MachineWindows
from streamer.metrics import observe_many
from streamer.windows import make_windows, segment_ids

pytestmark = pytest.mark.unit
MIN = 60_000


def raw(**fields):
    return orjson.dumps(fields)


def good(ts=0, **values):
    return raw(machine_id="PM1", ts=ts, values=values or {"a": 1.0, "b": 2.0})


@pytest.mark.parametrize(
    ("payload", "key", "reason"),
    [
        (b"x" * 300, None, r.TOO_LARGE),
        (b"{nope", None, r.INVALID_JSON),
        (b"[1, 2]", None, r.INVALID_JSON),
        (None, None, r.INVALID_JSON),
        (raw(ts=0, values={}), None, r.MISSING_MACHINE_ID),
        (raw(machine_id="", ts=0, values={}), None, r.MISSING_MACHINE_ID),
        (raw(machine_id="PM1", ts=0, values={}), b"PM2", r.KEY_MISMATCH),
        (raw(machine_id="PM1", values={}), None, r.MISSING_TIMESTAMP),
        (raw(machine_id="PM1", ts="yesterday", values={}), None, r.BAD_TIMESTAMP),
        (raw(machine_id="PM1", ts="2024-01-01T00:00:00", values={}), None, r.BAD_TIMESTAMP),
        (raw(machine_id="PM1", ts=-5, values={}), None, r.BAD_TIMESTAMP),
        (raw(machine_id="PM1", ts=1e300, values={}), None, r.BAD_TIMESTAMP),
        (raw(machine_id="PM1", ts=True, values={}), None, r.BAD_TIMESTAMP),
        (raw(machine_id="PM1", ts=0, values={"a": "high"}), None, r.NON_NUMERIC),
        (raw(machine_id="PM1", ts=0, values={"a": True}), None, r.NON_NUMERIC),
        (raw(machine_id="PM1", ts=0, values=[1.0]), None, r.NON_NUMERIC),
        (b'{"machine_id":"PM1","ts":0,"values":{"a":1e400}}', None, r.INVALID_JSON),
        (raw(machine_id="PM1", ts=0, values={}, **{"break": 2}), None, r.BAD_BREAK),
    ],
)
def test_bad_rows_are_rejected_with_their_reason(payload, key, reason):
    with pytest.raises(r.RowRejected) as caught:
        r.decode_row(payload, key, max_bytes=256)
    assert caught.value.reason == reason
    assert caught.value.reason in r.REASONS


def test_good_rows_decode_with_either_timestamp_form():
    row = r.decode_row(
        raw(
            machine_id="PM1",
            ts="1999-05-01T00:02:00Z",
            values={"a": 1, "b": None, "zz": 3.5},
            **{"break": 1},
        ),
        b"PM1",
        1024,
    )
    assert row.ts_ms == 925516920000
    assert row.values == {"a": 1.0, "b": None, "zz": 3.5}
    assert row.brk == 1
    assert r.decode_row(good(ts=925516920000), None, 1024).ts_ms == 925516920000


def windows(lookback=3, carry=4 * MIN):
    return MachineWindows(FeatureSpec(("a", "b")), lookback, DataQuality(10 * MIN, carry))


def row(ts_min, brk=0, machine="PM1", **values):
    return r.Row(machine, ts_min * MIN, values or {"a": float(ts_min), "b": 2.0}, brk)


def test_window_fills_then_scores_every_row():
    w = windows()
    kinds = [w.observe(row(t), partition=0).kind for t in (0, 2, 4, 6)]
    assert kinds == [WARMING, WARMING, READY, READY]
    assert w.machines["PM1"].window.tolist() == [[2.0, 2.0], [4.0, 2.0], [6.0, 2.0]]


def test_a_long_gap_or_a_break_restarts_the_window():
    w = windows()
    for t in (0, 2, 4):
        w.observe(row(t), 0)
    gap = w.observe(row(20), 0)
    assert (gap.kind, gap.restarted) == (WARMING, "gap")
    assert w.observe(row(22), 0).kind == WARMING
    assert w.observe(row(24), 0).kind == READY
    assert w.observe(row(26, brk=1), 0).kind == BREAK
    assert [w.observe(row(t), 0).kind for t in (28, 30, 32)] == [WARMING, WARMING, READY]


def test_missing_sensors_carry_forward_for_a_bounded_time_then_degrade():
    w = windows(carry=4 * MIN)
    w.observe(row(0, a=1.0, b=5.0), 0)
    carried = w.observe(row(2, a=2.0, b=None), 0)
    assert carried.raw.tolist() == [2.0, 5.0]
    assert w.observe(row(4, a=3.0), 0).raw.tolist() == [3.0, 5.0]
    stale = w.observe(row(6, a=4.0), 0)
    assert stale.kind == DEGRADED
    assert w.machines["PM1"].count == 0


def test_out_of_order_and_foreign_sensor_rows_are_rejected():
    w = windows()
    w.observe(row(4), 0)
    with pytest.raises(r.RowRejected) as late:
        w.observe(row(4), 0)
    assert late.value.reason == r.OUT_OF_ORDER
    with pytest.raises(r.RowRejected) as foreign:
        w.observe(row(6, flow=1.0, speed=2.0), 0)
    assert foreign.value.reason == r.INCOMPATIBLE_SENSORS


def test_streaming_windows_equal_the_trainers_windows():
    rng = np.random.default_rng(3)
    times = np.cumsum(rng.choice([2, 2, 2, 30], size=60)).astype(float)
    breaks = (rng.random(60) < 0.05).astype(int)
    a = rng.normal(size=60)
    w = windows(lookback=3)
    streamed = []
    for t, brk, value in zip(times, breaks, a, strict=True):
        obs = w.observe(r.Row("PM1", int(t * MIN), {"a": float(value), "b": 2.0}, int(brk)), 0)
        if obs.kind == READY:
            streamed.append(w.machines["PM1"].window.copy())
    keep = breaks == 0
    seg = segment_ids(times, np.zeros(60, int), breaks, max_gap_minutes=10)[keep]
    rows = np.stack([a, np.full(60, 2.0)], axis=1)[keep].astype(np.float32)
    batch, _ = make_windows(rows, seg, 3)
    np.testing.assert_allclose(np.stack(streamed), batch)


def test_partitions_and_idle_machines_are_forgotten():
    quality = DataQuality(10 * MIN, 10 * MIN, idle_ms=50 * MIN)
    w = MachineWindows(FeatureSpec(("a", "b")), 3, quality)
    w.observe(row(0, machine="A"), partition=0)
    w.observe(row(0, machine="C"), partition=1)
    w.observe(row(100, machine="B"), partition=1)
    # Idle on its own partition's clock: A's partition has not moved on, C's has.
    assert w.evict_idle() == 1
    assert sorted(w.machines) == ["A", "B"]
    assert w.drop_partitions({1}) == 1
    assert list(w.machines) == ["A"]


def run_episodes(flags, clear):
    state, opens = EpisodeState(), []
    for i, flag in enumerate(flags):
        state, event = advance(state, i, 2.0 if flag else 0.5, 1.0, EpisodePolicy(clear))
        if event is not None and event.status == "open":
            opens.append(i)
    return opens


@settings(max_examples=300, deadline=None)
@given(st.lists(st.booleans(), max_size=60), st.integers(min_value=1, max_value=5))
def test_streaming_episodes_open_exactly_where_the_evaluation_says(flags, clear):
    expected = episode_starts(
        np.array(flags, bool), np.zeros(len(flags), int), EpisodePolicy(clear)
    ).tolist()
    assert run_episodes(flags, clear) == expected


def test_episode_lifecycle_open_update_resolved():
    policy = EpisodePolicy(clear_rows=2)
    state, events = EpisodeState(), []
    for ts, score in enumerate([0.5, 1.2, 3.0, 2.5, 0.1, 0.1, 0.2]):
        state, event = advance(state, ts, score, 1.0, policy)
        events.append(event and (event.status, event.severity, event.sequence))
    assert events == [
        None,
        ("open", "warning", 0),
        ("update", "high", 1),
        None,
        None,
        ("resolved", "high", 2),
        None,
    ]
    opened, _ = advance(EpisodeState(), 7, 9.0, 1.0, policy)
    closed, event = close(opened, "break")
    assert closed == EpisodeState()
    assert (event.status, event.reason) == ("resolved", "break")
    assert close(closed, "gap") == (closed, None)


def test_alert_ids_are_deterministic_and_distinct_per_event():
    _, opened = advance(EpisodeState(), 1000, 5.0, 1.0, EpisodePolicy())
    again = alert_id("PM1", opened)
    assert again == alert_id("PM1", opened)
    assert again != alert_id("PM2", opened)
    assert episode_id("PM1", 1000) == episode_id("PM1", 1000) != episode_id("PM1", 1001)
    errors = np.array([0.1, 3.0, 0.9])
    sensors = top_sensors(
        errors, np.array([1.0, 2.0, 3.0]), np.array([1.1, 0.5, 2.0]), ["a", "b", "c"], count=2
    )
    assert [s["sensor"] for s in sensors] == ["b", "c"]
    assert sensors[0]["share"] == pytest.approx(0.75)
    message = alert_message("PM1", opened, 1000, 2000, 5.0, 1.0, sensors, "v1", 4.0, (2, 20))
    assert set(message) >= CONTRACT_FIELDS
    assert message["ts"] == "1970-01-01T00:00:01.000Z"
    # The operator's line names the window the model was judged on, not the label horizon.
    line = describe(message)
    assert line.startswith("[OPEN    ] PM1 at 1970-01-01T00:00:01.000Z")
    assert "in the next 2-20 min; b 2 (expected 0.5), c 3 (expected 2)" in line


def test_a_batch_with_many_rows_per_machine_equals_rows_one_at_a_time():
    rng = np.random.default_rng(9)
    rows = []
    for step in range(40):
        for machine in ("A", "B", "C"):
            values = {"a": float(rng.normal()), "b": None if rng.random() < 0.2 else 2.0}
            brk = int(rng.random() < 0.04)
            ts = step * 2 + (30 if step > 25 and machine == "B" else 0)
            rows.append(r.Row(machine, ts * MIN, values, brk))
    rows.insert(50, r.Row("A", 0, {"a": 1.0, "b": 2.0}, 0))  # out of order
    one, many = windows(), windows()
    singles = []
    for row in rows:
        try:
            singles.append(one.observe(row, 0))
        except r.RowRejected as exc:
            singles.append(exc)
    ready = np.zeros((len(rows), 3, 2), np.float32)
    batch = many.observe_many(rows, [0] * len(rows), ready)
    assert [type(x).__name__ for x in batch] == [type(x).__name__ for x in singles]
    kinds = [(x.kind, x.restarted) for x in batch if not isinstance(x, r.RowRejected)]
    assert kinds == [(x.kind, x.restarted) for x in singles if not isinstance(x, r.RowRejected)]
    for name in ("A", "B", "C"):
        np.testing.assert_array_equal(one.machines[name].window, many.machines[name].window)
        assert one.machines[name].count == many.machines[name].count


def test_bulk_histogram_observe_matches_one_by_one():
    values = np.random.default_rng(2).lognormal(size=500)
    values[::50] = 1.0  # exactly on a bucket bound
    one = Histogram("one", "x", buckets=(0.5, 1.0, 2.0, 5.0), registry=CollectorRegistry())
    bulk = Histogram("bulk", "x", buckets=(0.5, 1.0, 2.0, 5.0), registry=CollectorRegistry())
    for v in values:
        one.observe(float(v))
    observe_many(bulk, values)
    samples = [
        (s.name.replace("one", ""), s.labels.get("le"), s.value)
        for s in one.collect()[0].samples
        if not s.name.endswith("_created")
    ]
    bulk_samples = [
        (s.name.replace("bulk", ""), s.labels.get("le"), s.value)
        for s in bulk.collect()[0].samples
        if not s.name.endswith("_created")
    ]
    assert [x[:2] for x in samples] == [x[:2] for x in bulk_samples]
    np.testing.assert_allclose([x[2] for x in samples], [x[2] for x in bulk_samples])


def _messy_rows(seed: int) -> list[tuple[r.Row, int]]:
    """Rows of eight machines on three partitions: mostly steady, with breaks, gaps, idle
    spells, missing and infinite sensors, repeated times and machines new mid-stream."""
    rng = np.random.default_rng(seed)
    clock = {m: int(rng.integers(0, 5)) for m in range(8)}
    out = []
    for _ in range(600):
        m = int(rng.integers(0, 8 if len(out) > 100 else 5))
        # Minutes to its next row: mostly one, sometimes a gap, an idle spell or a repeat.
        step = rng.choice([1, 2, 15, 70, 0, -1], p=[0.85, 0.05, 0.03, 0.03, 0.02, 0.02])
        clock[m] += int(step)
        values: dict[str, float | None] = {"a": float(rng.normal()), "b": float(rng.normal())}
        if rng.random() < 0.05:
            values["b"] = None
        if rng.random() < 0.01:
            values["a"] = 1e300  # beyond 32-bit floats
        if rng.random() < 0.02:
            del values["a"]
        out.append((r.Row(f"M{m}", clock[m] * MIN, values, int(rng.random() < 0.02)), m % 3))
    return out


@pytest.mark.parametrize("seed", range(6))
def test_steady_machines_taken_in_bulk_end_as_rows_taken_by_the_rule(seed, monkeypatch):
    # The bulk path takes only the machines whose rows need no rule; whatever it takes, every
    # outcome, READY window, machine state and partition clock equals the row-by-row rule's.
    rows = _messy_rows(seed)
    rng = np.random.default_rng(100 + seed)
    cuts = sorted(set(rng.integers(1, len(rows), 40).tolist()))
    bounds = list(zip([0, *cuts], [*cuts, len(rows)], strict=True))

    def run() -> tuple[list, np.ndarray, MachineWindows]:
        w = MachineWindows(
            FeatureSpec(("a", "b")), 3, DataQuality(10 * MIN, 4 * MIN, idle_ms=40 * MIN), 4
        )
        found, windows_seen = [], []
        for lo, hi in bounds:
            part = rows[lo:hi]
            ready = np.zeros((len(part), 4, 2), np.float32)
            outcomes = w.observe_many([x for x, _ in part], [p for _, p in part], ready)
            for outcome in outcomes:
                if isinstance(outcome, r.RowRejected):
                    found.append((outcome.reason, str(outcome)))
                else:
                    found.append((outcome.kind, outcome.restarted, outcome.age, outcome.started))
                    found.append(outcome.raw.tobytes())
            kept = sum(1 for o in outcomes if not isinstance(o, r.RowRejected) and o.kind == READY)
            windows_seen.append(ready[:kept].copy())
        return found, np.concatenate(windows_seen), w

    bulk = run()
    original = MachineWindows._steady
    monkeypatch.setattr(
        MachineWindows,
        "_steady",
        lambda self, rows, ts, parts, clean: original(self, rows, ts, parts, clean & False),
    )
    rule = run()
    assert bulk[0] == rule[0]
    np.testing.assert_array_equal(bulk[1], rule[1])
    assert bulk[2].progress == rule[2].progress
    assert set(bulk[2].machines) == set(rule[2].machines)
    for name, machine in rule[2].machines.items():
        twin = bulk[2].machines[name]
        assert (twin.count, twin.last_ts, twin.partition) == (
            machine.count,
            machine.last_ts,
            machine.partition,
        )
        np.testing.assert_array_equal(twin.window, machine.window)
        np.testing.assert_array_equal(twin.last_raw, machine.last_raw)
        np.testing.assert_array_equal(twin.seen_ts, machine.seen_ts)
    assert len(rule[1]) > 200  # most rows were scored, so the bulk path had work
