"""The bundle-named score: the trainer's table form and the streamer's per-machine windows
give the same numbers, the short-history inputs mean what they say, and a composite
bundle round-trips while a tampered one is refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from tiny_bundle import LOOKBACK, SENSORS, manifest, save_model

from streamer.bundle import MANIFEST_FILE, MODEL_FILE, Registry, load_bundle
from streamer.detector import Detector, Reconstruction, Trees, load_detector, percentile
from streamer.errors import BundleError
from streamer.errorscore import ErrorScore
from streamer.features import FeatureSpec, Scaler
from streamer.history import ShortFeatures, deviation_table, feature_table, local_deviation
from streamer.machines import READY, DataQuality, MachineWindows
from streamer.rows import Row
from streamer.score_spec import PartSpec, ScoreSpec
from streamer.scoring import Scorer
from streamer.windows import segment_ids
from trainer.parts import part_table, score_table
from trainer.prepare import Prepared
from trainer.supervised import export_trees

pytestmark = pytest.mark.unit
MIN = 60_000
DEVIATION = 4
RECIPE = ShortFeatures(back=5, volatility=3, lags=(1, 2))


def _rows() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two machines' rows every 2 minutes; machine 1 has a 30-minute gap (a restart)."""
    rng = np.random.default_rng(3)
    times, groups = [], []
    for machine, count in ((0, 40), (1, 45)):
        t = np.arange(count) * 2.0
        if machine == 1:
            t[20:] += 30.0
        times.append(t)
        groups.append(np.full(count, machine))
    rows = rng.normal(size=(85, len(SENSORS))).cumsum(axis=0).astype(np.float32)
    return rows, np.concatenate(times), np.concatenate(groups)


def _prepared(rows: np.ndarray, times: np.ndarray, groups: np.ndarray) -> Prepared:
    segments = segment_ids(times, groups, np.zeros(len(rows)), 10.0)
    empty = np.zeros(0)
    return Prepared(
        rows, np.zeros(len(rows), np.int8), times, groups, segments,
        np.arange(len(rows)), empty, empty, 2.0, 10.0,
    )  # fmt: skip


@pytest.fixture(scope="module")
def detector(tmp_path_factory) -> Detector:
    path = tmp_path_factory.mktemp("model") / MODEL_FILE
    save_model(path)
    rng = np.random.default_rng(0)
    features = rng.normal(size=(400, RECIPE.width(len(SENSORS))))
    labels = (features[:, 0] + features[:, -1] > 1).astype(int)
    head = HistGradientBoostingClassifier(max_iter=20, max_leaf_nodes=7).fit(features, labels)
    reconstruction = Reconstruction(
        Scorer.load(path, LOOKBACK),
        Scaler(np.full(3, 0.5, np.float32), np.full(3, 2.0, np.float32)),
        ErrorScore(),
        DEVIATION,
    )
    references = (rng.gamma(1.0, size=200), rng.normal(size=200))
    return Detector((reconstruction, Trees(RECIPE, export_trees(head))), references)


def _streamed(detector: Detector, rows, times, groups) -> np.ndarray:
    """Score the rows one machine row at a time through the streamer's windows."""
    quality = DataQuality(10 * MIN, 10 * MIN)
    windows = MachineWindows(FeatureSpec(SENSORS), LOOKBACK, quality, detector.history)
    out = np.full(len(rows), np.nan)
    for i in np.argsort(times, kind="stable"):
        values = dict(zip(SENSORS, rows[i].tolist(), strict=True))
        row = Row(f"M{groups[i]}", int(times[i] * MIN), values, 0)
        ready = np.empty((1, windows.length, windows.width), np.float32)
        (obs,) = windows.observe_many([row], [0], ready)
        if obs.kind == READY:
            age = np.array([obs.age])
            out[i] = detector.score(ready, np.minimum(age, windows.length), age).scores[0]
    return out


def test_streaming_scores_every_row_exactly_as_the_table(detector):
    rows, times, groups = _rows()
    table = score_table(detector, _prepared(rows, times, groups))
    streamed = _streamed(detector, rows, times, groups)
    np.testing.assert_array_equal(np.isnan(table), np.isnan(streamed))
    np.testing.assert_array_equal(table, streamed)
    # Each stretch scores from its LOOKBACK-th row: machine 0, and machine 1 twice.
    assert int(np.isnan(table).sum()) == 3 * (LOOKBACK - 1)


def test_the_ensemble_averages_each_parts_percentile(detector):
    rows, times, groups = _rows()
    prepared = _prepared(rows, times, groups)
    parts = part_table(detector, prepared)
    expected = np.mean(
        [percentile(p, r) for p, r in zip(parts, detector.references, strict=True)], axis=0
    )
    np.testing.assert_array_equal(score_table(detector, prepared), expected)


def test_local_deviation_is_the_row_minus_the_mean_of_the_rows_before_it_in_its_stretch():
    rows = np.arange(12, dtype=np.float32).reshape(6, 2) ** 2
    segments = np.array([0, 0, 0, 0, 1, 1])
    dev = deviation_table(rows, segments, back=2)
    assert dev[0].tolist() == [0.0, 0.0]  # a stretch's first row has nothing before it
    np.testing.assert_allclose(dev[1], rows[1] - rows[0])
    np.testing.assert_allclose(dev[3], rows[3] - rows[1:3].mean(axis=0))
    assert dev[4].tolist() == [0.0, 0.0]  # the restart forgets the rows before it
    np.testing.assert_allclose(dev[5], rows[5] - rows[4])
    # Positions outside the stretch are masked, whatever they hold.
    slices = np.stack([rows[:3], rows[:3] + 1e30]).astype(np.float32)
    slices[1, 0] = np.nan
    out = local_deviation(slices, np.array([2, 2]))
    np.testing.assert_allclose(out[0], rows[2] - rows[1])
    assert np.isfinite(out[1]).all()


def test_short_features_are_volatility_changes_and_zscores_of_the_stretch():
    rows = np.array([[1.0], [3.0], [2.0], [6.0], [4.0], [9.0], [5.0]], np.float32)
    recipe = ShortFeatures(back=4, volatility=3, lags=(1, 2))
    segments = np.array([0, 0, 0, 0, 0, 0, 1])
    table = feature_table(rows, segments, recipe)
    assert recipe.names(("a",)) == (
        "std3:a", "diff1:a", "diff2:a", "z4:a", "log_rows_since_restart",
    )  # fmt: skip
    last = table[5]
    np.testing.assert_allclose(last[0], np.std([6.0, 4.0, 9.0]))
    np.testing.assert_allclose(last[1:3], [9.0 - 4.0, 9.0 - 6.0])
    before = np.array([3.0, 2.0, 6.0, 4.0])
    np.testing.assert_allclose(last[3], (9.0 - before.mean()) / before.std())
    np.testing.assert_allclose(last[4], np.log1p(6))
    # A restart's first row: no volatility, no change, no z-score; one row so far.
    np.testing.assert_allclose(table[6], [0.0, 0.0, 0.0, 0.0, np.log1p(1)])


def _write_composite(registry: Registry, version: str, detector: Detector, edit=None) -> Path:
    recon, trees = detector.parts
    spec = ScoreSpec(
        (
            PartSpec("reconstruction", MODEL_FILE, LOOKBACK, DEVIATION, recon.scaler, recon.errors),
            PartSpec("trees", "trees-1.npz", recipe=RECIPE),
        ),
        detector.references,
    )

    def fill(folder: Path) -> None:
        recon.scorer.model.save(folder / MODEL_FILE)
        trees.trees.save(folder / "trees-1.npz")
        content = manifest(version, 0.5) | {"score": spec.to_dict()}
        if edit is not None:
            edit(folder, content)
        (folder / MANIFEST_FILE).write_text(json.dumps(content), encoding="utf-8")

    return registry.write(version, fill)


def test_a_composite_bundle_scores_as_the_detector_it_was_written_from(detector, tmp_path):
    folder = _write_composite(Registry(tmp_path), "v1", detector)
    bundle = load_bundle(folder)
    assert bundle.history == DEVIATION + LOOKBACK
    loaded = load_detector(bundle)
    rows, times, groups = _rows()
    prepared = _prepared(rows, times, groups)
    np.testing.assert_array_equal(score_table(loaded, prepared), score_table(detector, prepared))


def _bad_feature(folder: Path, content: dict) -> None:
    with np.load(folder / "trees-1.npz") as data:
        arrays = dict(data)
    arrays["feature"] = np.where(arrays["leaf"], arrays["feature"], 10_000)
    np.savez(folder / "trees-1.npz", **arrays)


def _pickled_trees(folder: Path, content: dict) -> None:
    np.save(folder / "trees-1.npz", np.array([object()], dtype=object), allow_pickle=True)
    (folder / "trees-1.npz.npy").rename(folder / "trees-1.npz")


def _part(index: int, **changes):
    def edit(folder: Path, content: dict) -> None:
        content["score"]["parts"][index].update(changes)

    return edit


def _section(**changes):
    def edit(folder: Path, content: dict) -> None:
        content["score"].update(changes)

    return edit


@pytest.mark.parametrize(
    ("name", "edit"),
    [
        ("split on a feature that does not exist", _bad_feature),
        ("pickled trees", _pickled_trees),
        ("unknown part kind", _part(1, kind="forest")),
        ("part file outside the bundle", _part(1, file="../elsewhere.npz")),
        ("missing part file", _part(1, file="absent.npz")),
        ("scaler of the wrong width", _part(0, scaler={"mean": [0.0], "scale": [1.0]})),
        ("zero scale", _part(0, scaler={"mean": [0.0] * 3, "scale": [1.0, 0.0, 1.0]})),
        ("negative deviation rows", _part(0, deviation_rows=-3)),
        ("unknown error score", _part(0, errors={"kind": "cubic"})),
        ("one reference for two parts", _section(references=[[1.0, 2.0]])),
        ("a NaN reference", _section(references=[[1.0, float("nan")], [0.0]])),
        ("no parts", _section(parts=[])),
    ],
)
def test_a_tampered_composite_bundle_is_refused(name, edit, detector, tmp_path):
    folder = _write_composite(Registry(tmp_path), "v1", detector, edit)
    with pytest.raises(BundleError):
        load_detector(load_bundle(folder))


def test_a_window_scores_the_same_among_few_windows_as_among_many(detector):
    scorer = detector.parts[0].scorer
    windows = np.random.default_rng(5).normal(size=(700, LOOKBACK, len(SENSORS)))
    windows = windows.astype(np.float32)
    alone = np.concatenate([scorer.reconstruct(windows[i : i + 7]) for i in range(0, 700, 7)])
    np.testing.assert_array_equal(scorer.reconstruct(windows), alone)
