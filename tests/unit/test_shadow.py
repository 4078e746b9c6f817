"""A candidate scored in shadow: its own episodes, refusals, swaps, and one extra model call."""

import json
import shutil
from pathlib import Path

import numpy as np
import orjson
import pytest

from streamer import quiet_tf
from streamer.bundle import FORMAT_VERSION, MANIFEST_FILE, MODEL_FILE, load_bundle
from streamer.cli import build_parser, kafka_settings, streamer_settings
from streamer.decider import Decider
from streamer.episodes import EpisodePolicy, Step
from streamer.errors import BundleError
from streamer.features import FeatureSpec
from streamer.leadtime import Verdict, WarningWindow
from streamer.machines import DataQuality, MachineWindows
from streamer.pipeline import Model, process
from streamer.shadow import (
    LOADED,
    REFUSED,
    STOPPED,
    UNCHANGED,
    Shadow,
    ShadowSource,
    check_fits,
    counted,
)

pytestmark = pytest.mark.unit
MIN = 60_000
SENSORS = ("a", "b")


def episodes(threshold=1.0, clear_rows=2):
    return Decider(threshold, EpisodePolicy(clear_rows), WarningWindow(2.0, 20.0))


def follow(decider, steps, scores):
    decision = decider.decide(steps, scores)
    return counted(decision), decision.breaks


def scored(machine, minute, position):
    return Step(machine, minute * MIN, position=position)


def test_candidate_episodes_follow_their_own_threshold_and_judge_breaks():
    track = episodes(threshold=1.0)
    steps = [scored("A", m, k) for k, m in enumerate((0, 2, 4, 6, 8))]
    events, breaks = follow(track, steps, np.array([0.5, 1.5, 3.0, 0.2, 0.2]))
    assert events == {"open": 1, "update": 1, "resolved": 1}
    assert breaks == []
    more = [scored("A", 10, 0), Step("A", 14 * MIN, reason="break")]
    events, breaks = follow(track, more, np.array([1.2]))
    assert events == {"open": 1, "resolved": 1}
    assert breaks == [Verdict(True, 720.0)]  # the earliest episode opened 12 minutes ahead


def test_a_break_without_a_candidate_episode_is_missed_and_creates_no_state():
    track = episodes(threshold=5.0)
    cuts = [Step("A", 2 * MIN, reason="break"), Step("B", 2 * MIN, reason="gap")]
    steps = [scored("A", 0, 0), *cuts]
    events, breaks = follow(track, steps, np.array([1.0]))
    assert (events, breaks) == ({}, [Verdict(False)])
    assert track.machines == {}


def test_candidate_forgets_the_machines_the_windows_forgot():
    track = episodes()
    follow(track, [scored("A", 0, 0), scored("B", 0, 1)], np.array([2.0, 2.0]))
    track.keep({"B": object()})
    assert list(track.machines) == ["B"]
    track.clear()
    assert track.machines == {}


def test_the_candidate_folder_comes_from_the_flag_or_the_environment():
    environ = {"STREAMER_SHADOW": "registry/candidate"}
    args = build_parser(environ).parse_args(["run", "--bootstrap-servers", "k:9092"])
    assert streamer_settings(args, kafka_settings(args)).shadow == Path("registry/candidate")
    args = build_parser({}).parse_args(["run", "--bootstrap-servers", "k:9092"])
    assert streamer_settings(args, kafka_settings(args)).shadow is None


def write_bundle(folder, version, threshold, lookback=3, sensors=SENSORS, broken=False):
    """A bundle whose model reconstructs zeros, so a window's score is mean(last row ** 2)."""
    keras = quiet_tf.keras()

    folder.mkdir(parents=True)
    if broken:
        (folder / MODEL_FILE).write_bytes(b"not a keras file")
    else:
        model = keras.Sequential(
            [
                keras.Input((lookback, len(sensors))),
                keras.layers.Dense(len(sensors), kernel_initializer="zeros"),
            ]
        )
        model.save(folder / MODEL_FILE)
    manifest = {
        "format_version": FORMAT_VERSION,
        "version": version,
        "model": {"file": MODEL_FILE},
        "features": FeatureSpec(tuple(sensors)).to_dict(),
        "scaler": {"mean": [0.0] * len(sensors), "scale": [1.0] * len(sensors)},
        "preprocessing": {"lookback": lookback, "max_gap_minutes": 10.0},
        "threshold": {"value": threshold},
        "episodes": {"clear_rows": 2},
        "labels": {"horizon_minutes": 4.0},
        "evaluation": {"min_lead_minutes": 2.0, "max_lead_minutes": 20.0},
    }
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest))
    return folder


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundles")
    return {
        "serving": write_bundle(root / "serving", "s1", threshold=5.0),
        "c1": write_bundle(root / "c1", "c1", threshold=1.0),
        "c2": write_bundle(root / "c2", "c2", threshold=3.0),
        "long": write_bundle(root / "long", "long", threshold=1.0, lookback=4),
        "other": write_bundle(root / "other", "other", threshold=1.0, sensors=("a", "z")),
        "broken": write_bundle(root / "broken", "broken", threshold=1.0, broken=True),
    }


def point(link, target):
    """Re-point a symlink atomically, the way an operator swaps candidates."""
    temp = link.with_name(link.name + ".new")
    temp.symlink_to(target)
    temp.replace(link)


def test_candidates_that_cannot_score_the_serving_windows_are_refused(bundles):
    serving = load_bundle(bundles["serving"])
    check_fits(load_bundle(bundles["c1"]), serving)
    for name, why in (("long", "lookback 4"), ("other", "features differ")):
        with pytest.raises(BundleError, match=why):
            check_fits(load_bundle(bundles[name]), serving)
    with pytest.raises(BundleError, match="does not load"):
        Shadow.load(bundles["broken"], serving)


def test_source_follows_the_folder_refusing_once_and_stopping_when_it_empties(bundles, tmp_path):
    serving = load_bundle(bundles["serving"])
    link = tmp_path / "candidate"
    source = ShadowSource(link)
    assert source.check(serving) == UNCHANGED and source.shadow is None
    point(link, bundles["c1"])
    assert source.check(serving) == LOADED
    first = source.shadow
    assert first is not None and first.version == "c1"
    assert source.check(serving) == UNCHANGED and source.shadow is first
    point(link, bundles["long"])
    assert source.check(serving) == REFUSED and source.shadow is None
    assert source.check(serving) == UNCHANGED  # refused once, not every few seconds
    point(link, bundles["broken"])
    assert source.check(serving) == REFUSED
    point(link, bundles["c2"])
    assert source.check(serving) == LOADED and source.shadow.version == "c2"
    assert source.active("s1") is source.shadow
    assert source.active("c2") is None  # promoted: it is the serving model now
    link.unlink()
    assert source.check(serving) == STOPPED and source.shadow is None
    assert source.check(serving) == UNCHANGED


def test_a_candidate_copied_in_place_is_loaded_once_its_model_file_lands(bundles, tmp_path):
    serving = load_bundle(bundles["serving"])
    folder = tmp_path / "candidate"
    folder.mkdir()
    shutil.copy(bundles["c1"] / MANIFEST_FILE, folder)
    source = ShadowSource(folder)
    assert source.check(serving) == REFUSED
    assert source.check(serving) == UNCHANGED
    shutil.copy(bundles["c1"] / MODEL_FILE, folder)
    assert source.check(serving) == LOADED and source.shadow.version == "c1"


def test_a_serving_model_with_other_windows_stops_the_candidate(bundles, tmp_path):
    source = ShadowSource(bundles["c1"])
    assert source.check(load_bundle(bundles["serving"])) == LOADED
    assert source.check(load_bundle(bundles["long"])) == REFUSED
    assert source.shadow is None


class Message:
    """The parts of a Kafka message the pipeline reads."""

    def __init__(self, machine, minute, value, brk=0):
        row = {"machine_id": machine, "ts": minute * MIN, "values": {"a": value, "b": value}}
        self._value = orjson.dumps({**row, "break": brk})
        self._key = machine.encode()

    def value(self):
        return self._value

    def key(self):
        return self._key

    def partition(self):
        return 0

    def offset(self):
        return 0


class Counting:
    """Wraps a detector and counts its calls."""

    def __init__(self, detector):
        self.detector, self.calls = detector, 0

    def score(self, history, valid, age):
        self.calls += 1
        return self.detector.score(history, valid, age)


def test_the_candidate_scores_the_same_windows_in_one_call_and_publishes_nothing(bundles):
    serving = Model.load(bundles["serving"])
    candidate = Shadow.load(bundles["c1"], serving.bundle)
    calls = candidate.detector = Counting(candidate.detector)
    windows = MachineWindows(serving.bundle.spec, 3, DataQuality(10 * MIN, 10 * MIN))
    # A and B run normally, then A's sensors rise: score 4 from minute 8 (over the
    # candidate's threshold of 1, under the serving one of 5) and 9 at minute 10; A breaks.
    values = {0: 0.1, 2: 0.1, 4: 0.1, 6: 0.1, 8: 2.0, 10: 3.0, 12: 3.0}
    batch = [Message(m, t, v if m == "A" else 0.1) for t, v in values.items() for m in "AB"]
    batch.append(Message("A", 14, 3.0, brk=1))
    out = process(serving, windows, batch, 65_536, 0, candidate)
    assert calls.calls == 1
    assert len(out.scored) == 10
    np.testing.assert_allclose(out.shadow.scores, out.scores, rtol=1e-6)
    assert [(a["status"], a["model_version"]) for a in out.alerts] == [
        ("open", "s1"),
        ("resolved", "s1"),
    ]
    assert out.alerts[0]["ts"] == "1970-01-01T00:10:00.000Z"
    assert out.breaks == [Verdict(True, 240.0)]
    assert out.shadow.version == "c1"
    assert out.shadow.events == {"open": 1, "update": 1, "resolved": 1}
    assert out.shadow.breaks == [Verdict(True, 360.0)]  # its episode opened at minute 8
    assert list(candidate.decider.machines) == ["A"]
    plain = process(serving, windows, [Message("B", 16, 0.1)], 65_536, 0)
    assert plain.shadow is None and calls.calls == 1
