"""A tiny seeded model trained on a sample: bundle, registry, round trip and refusals."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from streamer.bundle import Registry, load_bundle
from streamer.errors import BundleError
from streamer.labels import Horizon
from streamer.scoring import BLOCKS, Scorer
from streamer.windows import make_windows
from trainer.data import read_table
from trainer.evaluate import score_rows
from trainer.evaluate_job import evaluate
from trainer.fit import FitSettings, fit
from trainer.models import ModelConfig
from trainer.prepare import prepare

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def trained(tmp_path_factory, make_plant):
    folder = tmp_path_factory.mktemp("fit")
    csv = folder / "plant.csv"
    make_plant().to_csv(csv, index=False)
    settings = FitSettings(
        data=(str(csv),),
        registry=folder / "registry",
        model=ModelConfig(kind="lstm", units=(8, 4), epochs=4, learning_rate=1e-2),
        progress=False,
    )
    return settings, fit(settings)


def test_fit_writes_a_complete_bundle_and_makes_it_current(trained):
    settings, result = trained
    registry = Registry(settings.registry)
    assert registry.current() == result.version
    assert registry.versions() == [result.version]
    manifest = json.loads((result.bundle / "manifest.json").read_text())
    for key in ("features", "scaler", "threshold", "metrics", "data", "libraries", "labels"):
        assert key in manifest
    assert manifest["features"]["feature_names"] == [f"x{i}" for i in range(1, 7)]
    assert manifest["features"]["categoricals"] == {"grade": [3.0, 7.0]}
    assert manifest["threshold"]["objective"] == "events"
    adaptive = manifest["threshold"]["adaptive"]  # the default: a per-machine threshold
    assert 0 < adaptive["rate"] < 1 and adaptive["minutes"] == 1440
    assert len(adaptive["prior"]) == len(adaptive["edges"]) - 1
    assert load_bundle(result.bundle).calibration is not None
    assert manifest["preprocessing"]["lookback"] == 5
    report = result.bundle / "report"
    for name in (
        "loss.png",
        "threshold.png",
        "errors.png",
        "roc_pr.png",
        "confusion.png",
        "timeline.png",
    ):
        assert (report / name).stat().st_size > 0
    card = (result.bundle / "MODEL_CARD.md").read_text()
    for heading in ("Why this method", "What to expect", "Known failure modes"):
        assert f"## {heading}" in card
    assert "| **lstm-at** |" in card  # the walk-forward table, this bundle's row marked
    assert not [p for p in settings.registry.iterdir() if p.name.startswith(".")]


def test_scaler_is_fitted_on_training_normal_rows_only(trained):
    settings, result = trained
    bundle = load_bundle(result.bundle)
    table = read_table(settings.data)
    prepared = prepare(
        table, bundle.spec, Horizon(minutes=bundle.horizon_minutes), "event", bundle.max_gap_minutes
    )
    val_from = pd.Timestamp(result_split(result)["validation_from"]).value / 6e10
    train_normal = (prepared.times < val_from) & (prepared.labels == 0)
    # Rows without a full window (segment starts) are not training samples either.
    _, ends = make_windows(prepared.rows, prepared.segments, bundle.lookback)
    has_window = np.zeros(len(prepared), bool)
    has_window[ends] = True
    expected = prepared.rows[train_normal & has_window].mean(axis=0)
    np.testing.assert_allclose(bundle.scaler.mean, expected, rtol=1e-5, atol=1e-5)
    everything = prepared.rows.mean(axis=0)
    assert not np.allclose(bundle.scaler.mean, everything, atol=1e-4)


def result_split(result):
    return json.loads((result.bundle / "manifest.json").read_text())["data"]["split"]


def test_saved_bundle_scores_exactly_like_the_trained_model(trained):
    settings, result = trained
    split = result_split(result)
    again = evaluate(
        result.bundle, None, settings.data, settings.data_options, from_time=split["test_from"]
    )
    # The fit judged its test rows with the in-memory model; the reloaded bundle agrees.
    for key in ("rows", "roc_auc", "pr_auc", "tp", "fp", "breaks_warned", "episodes"):
        assert again[key] == result.figures[key], key
    assert again["rows"] > 100


def test_scores_do_not_depend_on_the_batch_size(trained):
    settings, result = trained
    bundle = load_bundle(result.bundle)
    prepared = prepare(
        read_table(settings.data),
        bundle.spec,
        Horizon(minutes=bundle.horizon_minutes),
        "event",
        bundle.max_gap_minutes,
    )
    big, small = (
        score_rows(
            prepared,
            bundle.scaler,
            bundle.lookback,
            Scorer.load(bundle.model_path, bundle.lookback, batch_size=size),
        )
        for size in (1024, 7)
    )
    np.testing.assert_allclose(big, small, rtol=1e-5)
    assert np.isfinite(big).sum() > 1000


def test_long_and_short_model_batches_give_identical_scores(trained):
    # A long batch runs in blocks of four base batches, a short one in base batches only;
    # the trainer and the streamer cut the same windows differently, so these must agree
    # to the bit, not just closely.
    _, result = trained
    bundle = load_bundle(result.bundle)
    scorer = Scorer.load(bundle.model_path, bundle.lookback, batch_size=16)
    rng = np.random.default_rng(3)
    windows = rng.normal(size=(16 * 9 + 5, bundle.lookback, scorer.width)).astype(np.float32)
    whole = scorer.reconstruct(windows)
    assert (scorer.batch_size * BLOCKS) < len(windows)
    pieces = np.concatenate([scorer.reconstruct(windows[i : i + 16]) for i in range(0, 149, 16)])
    np.testing.assert_array_equal(whole, pieces)


def test_a_perturbed_window_scores_higher(trained):
    _, result = trained
    bundle = load_bundle(result.bundle)
    scorer = Scorer.load(bundle.model_path, bundle.lookback)
    rng = np.random.default_rng(0)
    normal = (rng.normal(size=(64, 1, 1)) + 0.3 * rng.normal(size=(64, 5, 6))).astype(np.float32)
    broken = normal.copy()
    broken[:, -1, :] += np.where(np.arange(6) % 2, 3.0, -3.0).astype(np.float32)
    assert scorer.score(broken)[0].mean() > 2 * scorer.score(normal)[0].mean()


def test_bundle_from_another_feature_set_is_refused(trained):
    _, result = trained
    with pytest.raises(BundleError, match="do not match"):
        load_bundle(result.bundle, expected_features=["x1", "x2"])


def test_corrupt_or_incomplete_bundles_are_refused(trained, tmp_path):
    _, result = trained
    broken = tmp_path / "broken"
    shutil.copytree(result.bundle, broken)
    (broken / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="unreadable manifest"):
        load_bundle(broken)
    manifest = json.loads((result.bundle / "manifest.json").read_text())
    del manifest["scaler"]
    (broken / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="incomplete or invalid manifest"):
        load_bundle(broken)
    shutil.copy(result.bundle / "manifest.json", broken / "manifest.json")
    (broken / "model.keras").write_bytes(b"truncated")
    with pytest.raises(BundleError, match="does not load"):
        Scorer.load(broken / "model.keras", 5)


def test_registry_pointer_moves_atomically_and_refuses_unknown_versions(tmp_path):
    registry = Registry(tmp_path / "reg")
    assert registry.current() is None
    with pytest.raises(BundleError, match="no current model"):
        registry.current_path()
    for name in ("v1", "v2"):
        registry.write(name, lambda folder: (folder / "manifest.json").write_text("{}"))
    registry.set_current("v1")
    registry.set_current("v2")
    assert registry.current() == "v2"
    with pytest.raises(BundleError, match="no complete version"):
        registry.set_current("v3")
    with pytest.raises(BundleError, match="never overwritten"):
        registry.write("v1", lambda folder: None)


def test_a_failed_write_leaves_nothing_behind(tmp_path):
    registry = Registry(tmp_path / "reg")

    def fail(folder):
        (folder / "manifest.json").write_text("{}")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        registry.write("v1", fail)
    assert list((tmp_path / "reg").iterdir()) == []
