"""The adaptive threshold in the streamer: batch by batch it equals the trainer's table form,
alerts carry the threshold their row met, and a candidate in shadow keeps its own."""

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pytest
from tiny_bundle import LOOKBACK, SENSORS, save_model, typical_threshold, write_version

from streamer.bundle import Registry
from streamer.calibrate import (
    Calibration,
    CalibrationState,
    calibrate_many,
    calibrate_step,
    reference_prior,
    tail_edges,
    thresholds_table,
)
from streamer.checkpoint import Checkpoint, decode, encode, newest
from streamer.decider import Decider
from streamer.machines import DataQuality, MachineWindows
from streamer.pipeline import Model, process
from streamer.scoring import Scorer
from streamer.shadow import Shadow

pytestmark = pytest.mark.unit
START_MS = 1_767_225_600_000
STEP_MS = 120_000


def test_batched_calibration_equals_row_by_row_with_repeats_gaps_and_nans():
    rng = np.random.default_rng(11)
    n = 3000
    keys = rng.choice(["A", "B", "C", "D"], size=n).tolist()
    clock = dict.fromkeys("ABCD", 1e7)
    minutes = np.empty(n)
    for i, key in enumerate(keys):
        clock[key] += float(rng.choice([2.0, 2.0, 6.0, 40.0]))
        if i == 1500 and key == "A":
            clock[key] += 1e6  # past the forgetting horizon: A starts again from the prior
        minutes[i] = clock[key]
    scores = rng.lognormal(size=n) * np.linspace(1.0, 3.0, n)
    scores[::53] = np.nan
    reference = rng.lognormal(size=500)
    edges = tail_edges(reference)
    calibration = Calibration(
        edges, rate=0.03, minutes=240.0, min_weight=40.0, fallback=7.0,
        prior=reference_prior(edges, reference, 50.0),
    )  # fmt: skip
    expected = np.empty(n)
    one: dict[str, CalibrationState] = {}
    for i, key in enumerate(keys):
        state = one.get(key, CalibrationState.empty(calibration))
        after, expected[i] = calibrate_step(calibration, state, float(scores[i]), minutes[i])
        if not np.isnan(scores[i]):
            one[key] = after
    batched: dict[str, CalibrationState] = {}
    got = np.empty(n)
    cuts = np.sort(rng.choice(np.arange(1, n), size=40, replace=False))
    for lo, hi in zip([0, *cuts], [*cuts, n], strict=True):
        got[lo:hi] = calibrate_many(
            calibration, batched, keys[lo:hi], scores[lo:hi], minutes[lo:hi]
        )
    np.testing.assert_allclose(got, expected, rtol=1e-9)
    assert set(batched) == set(one)


@dataclass
class Message:
    payload: bytes
    part: int = 0
    number: int = 0

    def value(self) -> bytes:
        return self.payload

    def offset(self) -> int:
        return self.number

    def key(self) -> None:
        return None

    def partition(self) -> int:
        return self.part


def _with_calibration(calibration: Calibration):
    def edit(_folder: Any, manifest: dict[str, Any]) -> None:
        manifest["threshold"]["adaptive"] = calibration.to_dict()

    return edit


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Model, Model]:
    """The same seeded model twice: with an adaptive threshold, and with a fixed one."""
    root = tmp_path_factory.mktemp("adaptive")
    save_model(root / "model.keras", seed=3)
    fixed = typical_threshold(root / "model.keras", 0.9)
    normal = np.random.default_rng(2).normal(size=(400, LOOKBACK, len(SENSORS)))
    reference = Scorer.load(root / "model.keras", LOOKBACK).score(normal.astype(np.float32))[0]
    edges = tail_edges(reference)
    calibration = Calibration(
        edges, rate=0.02, minutes=120.0, min_weight=30.0, fallback=fixed,
        prior=reference_prior(edges, reference, 60.0),
    )  # fmt: skip
    registry = Registry(root / "registry")
    adaptive = write_version(
        registry, "adaptive", root / "model.keras", fixed, _with_calibration(calibration)
    )
    plain = write_version(registry, "fixed", root / "model.keras", fixed)
    return Model.load(adaptive), Model.load(plain)


def _messages(machines: int = 3, rows: int = 240) -> list[Message]:
    """Rows of a few machines interleaved; the last machine's readings grow more and more
    unusual, so a fixed threshold would alert on it for good."""
    rng = np.random.default_rng(4)
    out = []
    for t in range(rows):
        for m in range(machines):
            scale = 1.0 + (3.0 * t / rows if m == machines - 1 else 0.0)
            values = dict(
                zip(SENSORS, (rng.normal(size=len(SENSORS)) * scale).tolist(), strict=True)
            )
            ts = START_MS + t * STEP_MS
            out.append(Message(orjson.dumps({"machine_id": f"M{m}", "ts": ts, "values": values})))
    return out


def _windows(model: Model) -> MachineWindows:
    bundle = model.bundle
    gap = int(bundle.max_gap_minutes * 60_000)
    return MachineWindows(bundle.spec, bundle.lookback, DataQuality(gap, gap), bundle.history)


def test_streamer_thresholds_equal_the_trainers_table_and_alerts_carry_them(models):
    adaptive, _ = models
    messages = _messages()
    windows = _windows(adaptive)
    scored: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
    alerts = []
    shadow = Shadow(adaptive.bundle, adaptive.detector)
    for lo in range(0, len(messages), 97):  # batches that cut machines' rows anywhere
        batch = messages[lo : lo + 97]
        outcome = process(adaptive, windows, batch, 65_536, START_MS, shadow)
        for k, index in enumerate(outcome.scored):
            row = orjson.loads(batch[index].value())
            scored[row["machine_id"]].append(
                (row["ts"] / 60_000, float(outcome.scores[k]), float(outcome.thresholds[k]))
            )
        # The same bundle in shadow follows the same thresholds with state of its own.
        np.testing.assert_allclose(outcome.shadow.thresholds, outcome.thresholds, rtol=1e-12)
        alerts.extend(outcome.alerts)
    calibration = adaptive.bundle.calibration
    for machine, rows in scored.items():
        minutes, scores, thresholds = (np.array(c) for c in zip(*rows, strict=True))
        table = thresholds_table(calibration, scores, minutes, np.zeros(len(scores), int))
        np.testing.assert_allclose(thresholds, table, rtol=1e-9, err_msg=machine)
        assert adaptive.decider.machines[machine].calibration is not None
    by_row = {(m, _iso(t)): thr for m, rows in scored.items() for t, _, thr in rows}
    opened = [a for a in alerts if a["status"] == "open"]
    assert opened
    for alert in opened:
        assert alert["threshold"] == pytest.approx(
            by_row[alert["machine_id"], alert["ts"]], abs=1e-6
        )


def _iso(minutes: float) -> str:
    stamp = dt.datetime.fromtimestamp(minutes * 60, tz=dt.UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def test_the_threshold_follows_a_drifting_machine_where_a_fixed_one_alerts_for_good(models):
    adaptive, fixed = models
    messages = _messages(rows=600)
    counts = {}
    for model in (adaptive, fixed):
        windows = _windows(model)
        rows = [process(model, windows, messages[lo : lo + 200], 65_536, START_MS)
                for lo in range(0, len(messages), 200)]  # fmt: skip
        last = rows[-1]
        drifting = [k for k, i in enumerate(last.scored) if b'"M2"' in messages[-200:][i].value()]
        counts[model.bundle.version] = float(
            np.mean(last.scores[drifting] >= last.thresholds[drifting])
        )
    # In the last stretch the fixed threshold flags most of the drifting machine's rows;
    # the adaptive one has moved up with it and flags few.
    print(f"\nshare of the drifting machine's last rows flagged: {counts}")
    assert counts["fixed"] > 0.5
    assert counts["adaptive"] < 0.25


def test_checkpoints_round_trip_and_only_usable_ones_are_resumed():
    edges = np.array([0.0, 1.0, 2.0, 4.0])
    calibration = Calibration(edges, rate=0.1, minutes=60.0)
    state = CalibrationState(np.array([3.0, 2.0, 0.5]), 1000.0)
    good = Checkpoint("M1", 41, "v1", state)
    back = decode(encode(good))
    assert back is not None and (back.machine, back.offset, back.version) == ("M1", 41, "v1")
    assert np.array_equal(back.state.counts, state.counts) and back.state.last_minutes == 1000.0
    newer = Checkpoint("M1", 57, "v1", CalibrationState(np.array([1.0, 1.0, 1.0]), 1030.0))
    values = [
        encode(good),
        encode(newer),
        encode(Checkpoint("M1", 90, "v1", state)),  # past the committed offset: uncommitted
        encode(Checkpoint("M2", 12, "v0", state)),  # another model's scores
        encode(Checkpoint("M3", 12, "v1", CalibrationState(np.ones(5), 1000.0))),  # bins
        encode(Checkpoint("M4", 12, "v1", CalibrationState(np.ones(3), 10.0))),  # too old
        b"{not json",
        None,
        orjson.dumps(
            {
                "machine_id": "M5",
                "offset": 3,
                "model_version": "v1",
                "minutes": 1e3,
                "counts": [1.0, -1.0, 1.0],
            }
        ),
    ]
    found = newest(values, before=80, version="v1", calibration=calibration, since_minutes=500)
    assert list(found) == ["M1"]
    assert found["M1"].offset == 57 and np.array_equal(found["M1"].state.counts, np.ones(3))


def test_a_resumed_machine_does_not_count_its_checkpointed_rows_twice(models):
    adaptive, _ = models
    messages = _messages(machines=1, rows=80)
    for offset, message in enumerate(messages):
        message.number = offset
    windows = _windows(adaptive)
    outcome = process(adaptive, windows, messages[:50], 65_536, START_MS)
    state = adaptive.decider.machines["M0"].calibration
    assert state is not None and len(outcome.scored) > 40
    # A rebuilt streamer resumes M0 from that state and replays some rows it already holds.
    again = Model(adaptive.bundle, adaptive.detector, Decider.for_bundle(adaptive.bundle))
    rebuilt = _windows(again)
    rebuilt.resume(0, {"M0": Checkpoint("M0", 49, adaptive.bundle.version, state)})
    process(again, rebuilt, messages[40:50], 65_536, START_MS)
    np.testing.assert_array_equal(again.decider.machines["M0"].calibration.counts, state.counts)
    after = [
        process(m, w, messages[50:], 65_536, START_MS)
        for m, w in ((adaptive, windows), (again, rebuilt))
    ]
    np.testing.assert_allclose(after[0].thresholds, after[1].thresholds, rtol=1e-12)
