"""Truncated, corrupt, incompatible and crafted bundles are refused, both when loaded and when
a running streamer is pointed at them, and the streamer goes on with the model it serves.

A crafted bundle must never run code: Keras loads in safe mode, so a Lambda layer carrying
marshalled Python and a layer naming a module outside Keras are refused before they run.

A bundle is self-contained: its model file must lie inside its folder once symbolic links are
resolved. A link to a file elsewhere is refused, because a version must not change after it
was written; a link to another file inside the bundle is fine.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from tiny_bundle import LOOKBACK, SENSORS, save_model, write_version

from streamer import quiet_tf
from streamer.bundle import MODEL_FILE, Registry, load_bundle
from streamer.errors import BundleError
from streamer.metrics import StreamerMetrics
from streamer.pipeline import Model, process
from streamer.runner import Streamer
from streamer.settings import KafkaSettings, StreamerSettings

pytestmark = pytest.mark.unit
THRESHOLD = 1.0
START_MS = 1_767_225_600_000


@dataclass(frozen=True)
class Models:
    """Model files, good and bad, outside any registry."""

    good: Path
    wide: Path
    narrow_output: Path
    flat: Path
    any_steps: Path
    lambda_code: Path
    foreign_module: Path
    marker: Path
    canary_model: Path
    canary: Path


def _keras_model(path: Path, build: Callable[[Any], tuple[Any, Any]]) -> Path:
    keras = quiet_tf.keras()

    keras.utils.set_random_seed(0)
    inputs, outputs = build(keras)
    keras.Model(inputs, outputs).save(path)
    return path


def _code_running(path: Path, marker: Path) -> Path:
    """An autoencoder whose Lambda layer creates ``marker`` whenever it runs."""

    def build(keras: Any) -> tuple[Any, Any]:
        inputs = keras.Input(shape=(LOOKBACK, len(SENSORS)))
        # The marker's path is a constant of the compiled code, so the code alone does harm.
        touch = eval(f"lambda t: (open({str(marker)!r}, 'w').close(), t)[1]")
        hidden = keras.layers.Lambda(touch)(inputs)
        return inputs, keras.layers.Dense(len(SENSORS))(hidden)

    _keras_model(path, build)
    marker.unlink(missing_ok=True)  # building it ran the code once; that is not a load
    return path


def _foreign_module(source: Path, path: Path, marker: Path) -> Path:
    """The good model with its last layer naming ``subprocess.Popen``, a command its config."""
    with zipfile.ZipFile(source) as original:
        parts = {name: original.read(name) for name in original.namelist()}
    config = json.loads(parts["config.json"])
    config["config"]["layers"][-1].update(
        module="subprocess",
        class_name="Popen",
        registered_name=None,
        config={"args": ["touch", str(marker)]},
    )
    parts["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(path, "w") as crafted:
        for name, data in parts.items():
            crafted.writestr(name, data)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Models:
    root = tmp_path_factory.mktemp("models")
    width = len(SENSORS)
    good = root / "good.keras"
    save_model(good, seed=0)
    save_model(root / "wide.keras", seed=0, width=width + 1)

    def narrow(keras: Any) -> tuple[Any, Any]:
        inputs = keras.Input(shape=(LOOKBACK, width))
        return inputs, keras.layers.Dense(width - 1)(inputs)

    def flat(keras: Any) -> tuple[Any, Any]:
        inputs = keras.Input(shape=(width,))
        return inputs, keras.layers.Dense(width)(inputs)

    def any_steps(keras: Any) -> tuple[Any, Any]:
        inputs = keras.Input(shape=(None, width))
        return inputs, keras.layers.Dense(width)(inputs)

    marker = root / "code-ran"
    canary = root / "canary-code-ran"
    return Models(
        good=good,
        wide=root / "wide.keras",
        narrow_output=_keras_model(root / "narrow.keras", narrow),
        flat=_keras_model(root / "flat.keras", flat),
        any_steps=_keras_model(root / "any-steps.keras", any_steps),
        lambda_code=_code_running(root / "lambda.keras", marker),
        foreign_module=_foreign_module(good, root / "foreign.keras", marker),
        marker=marker,
        canary_model=_code_running(root / "canary.keras", canary),
        canary=canary,
    )


# Each bad bundle: how it is spoiled (given the models, the staging folder and the manifest;
# it may return the manifest's text) and words of the refusal.
Edit = Callable[[Models, Path, dict[str, Any]], str | bytes | None]


def _model_from(pick: Callable[[Models], Path]) -> Edit:
    def edit(models: Models, folder: Path, manifest: dict[str, Any]) -> None:
        (folder / MODEL_FILE).write_bytes(pick(models).read_bytes())

    return edit


def _manifest(change: Callable[[dict[str, Any]], None]) -> Edit:
    def edit(models: Models, folder: Path, manifest: dict[str, Any]) -> None:
        change(manifest)

    return edit


def _truncated(models: Models, folder: Path, manifest: dict[str, Any]) -> None:
    data = models.good.read_bytes()
    (folder / MODEL_FILE).write_bytes(data[: len(data) // 2])


def _random_bytes(models: Models, folder: Path, manifest: dict[str, Any]) -> None:
    size = models.good.stat().st_size
    (folder / MODEL_FILE).write_bytes(np.random.default_rng(0).bytes(size))


def _without_weights(models: Models, folder: Path, manifest: dict[str, Any]) -> None:
    with zipfile.ZipFile(models.good) as original, zipfile.ZipFile(folder / MODEL_FILE, "w") as out:
        for name in original.namelist():
            if not name.endswith(".h5"):
                out.writestr(name, original.read(name))


def _outside(models: Models, folder: Path, manifest: dict[str, Any]) -> None:
    # A good model two levels up (outside the registry): followed, it would load fine.
    target = folder.parent.parent / "elsewhere.keras"
    target.write_bytes(models.good.read_bytes())
    manifest["model"]["file"] = "../../elsewhere.keras"


def _absolute(models: Models, folder: Path, manifest: dict[str, Any]) -> None:
    manifest["model"]["file"] = str(models.good)


def _linked_out(models: Models, folder: Path, manifest: dict[str, Any]) -> None:
    (folder / MODEL_FILE).unlink()
    (folder / MODEL_FILE).symlink_to(models.good)


def _empty(models: Models, folder: Path, manifest: dict[str, Any]) -> None:
    (folder / MODEL_FILE).write_bytes(b"")


def _link_loop(models: Models, folder: Path, manifest: dict[str, Any]) -> None:
    (folder / MODEL_FILE).unlink()
    (folder / MODEL_FILE).symlink_to(MODEL_FILE)


def _missing(models: Models, folder: Path, manifest: dict[str, Any]) -> None:
    (folder / MODEL_FILE).unlink()


def _directory(models: Models, folder: Path, manifest: dict[str, Any]) -> None:
    (folder / MODEL_FILE).unlink()
    (folder / MODEL_FILE).mkdir()


def _set(section: str, key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda manifest: manifest[section].__setitem__(key, value)


GOOD_ADAPTIVE = {
    "edges": [0.0, 0.5, 1.0, 2.0],
    "rate": 0.05,
    "minutes": 60.0,
    "min_weight": 10.0,
    "fallback": None,
    "prior": [4.0, 4.0, 2.0],
}


def _adaptive(**changes: Any) -> Edit:
    return _manifest(_set("threshold", "adaptive", {**GOOD_ADAPTIVE, **changes}))


BAD: dict[str, tuple[Edit, str]] = {
    "truncated-model": (_truncated, "does not load"),
    "empty-model": (_empty, "does not load"),
    "random-bytes": (_random_bytes, "does not load"),
    "model-without-weights": (_without_weights, "does not load"),
    "model-missing": (_missing, "missing"),
    "model-is-a-folder": (_directory, "missing"),
    "manifest-not-json": (lambda m, f, d: "{not json", "unreadable manifest"),
    "manifest-not-utf8": (lambda m, f, d: b'{"version": "\xff"}', "unreadable manifest"),
    "manifest-a-list": (lambda m, f, d: "[1, 2]", "not a JSON object"),
    "manifest-without-scaler": (_manifest(lambda d: d.pop("scaler")), "invalid manifest"),
    "manifest-without-model": (_manifest(lambda d: d.pop("model")), "invalid manifest"),
    "format-version": (_manifest(lambda d: d.update(format_version=99)), "format_version"),
    "other-features": (
        _manifest(lambda d: d["features"].update(sensors=["y1", "y2", "y3"], feature_names=[])),
        "invalid manifest",
    ),
    "renamed-features": (
        _manifest(
            lambda d: d["features"].update(
                sensors=["y1", "y2", "y3"], feature_names=["y1", "y2", "y3"]
            )
        ),
        "do not match",
    ),
    "scaler-too-short": (_manifest(_set("scaler", "mean", [0.0, 0.0])), "scaler length"),
    "scaler-zero-scale": (_manifest(_set("scaler", "scale", [1.0, 0.0, 1.0])), "scale"),
    "scaler-not-finite": (_manifest(_set("scaler", "mean", [0.0, float("nan"), 0.0])), "scaler"),
    "threshold-nan": (_manifest(_set("threshold", "value", float("nan"))), "threshold"),
    "threshold-infinite": (_manifest(_set("threshold", "value", float("-inf"))), "threshold"),
    "lookback-other-than-the-models": (
        _manifest(_set("preprocessing", "lookback", LOOKBACK + 2)),
        "windows of 3 rows",
    ),
    "lookback-zero": (
        lambda m, f, d: (
            _set("preprocessing", "lookback", 0)(d) or _model_from(lambda x: x.any_steps)(m, f, d)
        ),
        "lookback",
    ),
    "lookback-text": (_manifest(_set("preprocessing", "lookback", "three")), "invalid manifest"),
    "max-gap-not-finite": (
        _manifest(_set("preprocessing", "max_gap_minutes", float("nan"))),
        "gap",
    ),
    "clear-rows-zero": (_manifest(_set("episodes", "clear_rows", 0)), "clear_rows"),
    "calibration-rate-above-one": (_adaptive(rate=2.0), "alert rate"),
    "calibration-edges-decreasing": (_adaptive(edges=[0.0, 2.0, 1.0, 3.0]), "increasing"),
    "calibration-edges-not-finite": (_adaptive(edges=[0.0, 1.0, 2.0, float("inf")]), "finite"),
    "calibration-edges-nan": (_adaptive(edges=[0.0, float("nan"), 1.0, 2.0]), "edges"),
    "calibration-prior-wrong-length": (_adaptive(prior=[1.0, 1.0]), "prior"),
    "calibration-prior-negative": (_adaptive(prior=[1.0, -1.0, 1.0]), "prior"),
    "calibration-period-zero": (_adaptive(minutes=0.0), "calibration period"),
    "calibration-fallback-nan": (_adaptive(fallback=float("nan")), "fallback"),
    "calibration-not-an-object": (_manifest(_set("threshold", "adaptive", [1, 2])), "invalid"),
    "model-wider-than-features": (_model_from(lambda m: m.wide), "features"),
    "model-output-narrower": (_model_from(lambda m: m.narrow_output), "autoencoder"),
    "model-without-time-axis": (_model_from(lambda m: m.flat), "autoencoder"),
    "lambda-with-code": (_model_from(lambda m: m.lambda_code), "does not load"),
    "layer-from-another-module": (_model_from(lambda m: m.foreign_module), "does not load"),
    "model-file-outside-the-bundle": (_outside, "outside the bundle"),
    "model-file-absolute": (_absolute, "outside the bundle"),
    "model-file-linked-outside": (_linked_out, "outside the bundle"),
    "model-file-link-loop": (_link_loop, "does not resolve"),
}


def bad_version(registry: Registry, name: str, models: Models) -> Path:
    edit, _ = BAD[name]
    return write_version(registry, name, models.good, THRESHOLD, lambda f, d: edit(models, f, d))


@pytest.fixture(scope="module")
def registry(models: Models, tmp_path_factory: pytest.TempPathFactory) -> Registry:
    registry = Registry(tmp_path_factory.mktemp("bad") / "registry")
    write_version(registry, "v1", models.good, THRESHOLD)
    registry.set_current("v1")
    for name in BAD:
        bad_version(registry, name, models)
    return registry


@pytest.mark.parametrize("name", list(BAD))
def test_a_bad_bundle_is_refused_on_load(name, registry, models):
    with pytest.raises(BundleError, match=BAD[name][1]):
        Model.load(registry.root / name, expected_features=SENSORS)
    assert not models.marker.exists()


@dataclass
class Serving:
    streamer: Streamer
    metrics: CollectorRegistry

    def refusals(self) -> float:
        value = self.metrics.get_sample_value(
            "sheetbreak_model_reloads_total", {"result": "refused"}
        )
        return value or 0.0


@pytest.fixture(scope="module")
def serving(registry: Registry) -> Serving:
    metrics = CollectorRegistry()
    settings = StreamerSettings(
        kafka=KafkaSettings("127.0.0.1:1"), registry=registry.root, metrics_port=None
    )
    return Serving(Streamer(settings, StreamerMetrics(metrics), threading.Event()), metrics)


class Message:
    def __init__(self, value: bytes, key: bytes) -> None:
        self._value, self._key = value, key

    def value(self) -> bytes:
        return self._value

    def key(self) -> bytes:
        return self._key

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return 0


def _rows(start: int, count: int) -> list[Message]:
    rng = np.random.default_rng(start)
    return [
        Message(
            orjson.dumps(
                {
                    "machine_id": "PM1",
                    "ts": START_MS + (start + i) * 120_000,
                    "values": dict(zip(SENSORS, rng.normal(size=3).tolist(), strict=True)),
                }
            ),
            b"PM1",
        )
        for i in range(count)
    ]


@pytest.mark.parametrize("name", list(BAD))
def test_a_serving_streamer_refuses_a_bad_bundle_and_keeps_its_model(
    name, registry, models, serving, caplog
):
    streamer = serving.streamer
    before, refused = streamer.model, serving.refusals()
    offset = len(streamer.refused) * 10
    registry.set_current(name)
    with caplog.at_level(logging.ERROR, logger="streamer.runner"):
        streamer._maybe_reload()
        streamer._maybe_reload()  # refused once, not retried on every check
    assert streamer.model is before
    assert streamer.model.bundle.version == "v1"
    assert serving.refusals() == refused + 1
    assert len(caplog.records) == 1
    assert caplog.records[0].getMessage().startswith(f"refused model {name}, keeping v1: ")
    assert BAD[name][1] in caplog.records[0].getMessage()
    assert serving.metrics.get_sample_value("sheetbreak_model_info", {"version": "v1"}) == 1.0
    outcome = process(streamer.model, streamer.windows, _rows(offset, 10), 65_536, START_MS)
    assert len(outcome.scored) >= 10 - LOOKBACK and not outcome.dead
    assert not models.marker.exists()


def test_a_good_bundle_after_bad_ones_is_taken_up(registry, models, tmp_path):
    metrics = CollectorRegistry()
    local = Registry(tmp_path / "registry")
    write_version(local, "v1", models.good, THRESHOLD)
    local.set_current("v1")
    settings = StreamerSettings(
        kafka=KafkaSettings("127.0.0.1:1"), registry=local.root, metrics_port=None
    )
    streamer = Streamer(settings, StreamerMetrics(metrics), threading.Event())
    bad_version(local, "model-file-linked-outside", models)
    local.set_current("model-file-linked-outside")
    streamer._maybe_reload()
    write_version(local, "v2", models.good, THRESHOLD * 2)
    local.set_current("v2")
    streamer._maybe_reload()
    assert streamer.model.bundle.version == "v2"
    assert metrics.get_sample_value("sheetbreak_model_reloads_total", {"result": "loaded"}) == 1.0
    assert metrics.get_sample_value("sheetbreak_model_reloads_total", {"result": "refused"}) == 1.0


def test_a_model_file_linked_inside_the_bundle_is_accepted(registry, models, tmp_path):
    def linked(folder: Path, manifest: dict[str, Any]) -> None:
        (folder / MODEL_FILE).rename(folder / "weights-v3.keras")
        (folder / MODEL_FILE).symlink_to("weights-v3.keras")

    local = Registry(tmp_path / "registry")
    folder = write_version(local, "v3", models.good, THRESHOLD, linked)
    assert Model.load(folder, expected_features=SENSORS).bundle.version == "v3"


def test_the_crafted_model_would_run_its_code_outside_safe_mode(models):
    # Proof that the Lambda bundles above are live: unsafe loading runs the embedded code.
    keras = quiet_tf.keras()

    assert not models.canary.exists()
    with pytest.raises(BundleError):
        Model.load(_bundle_around(models.canary_model))
    assert not models.canary.exists()
    keras.saving.load_model(models.canary_model, compile=False, safe_mode=False)
    assert models.canary.exists()


def _bundle_around(model: Path) -> Path:
    registry = Registry(model.parent / "canary-registry")
    return write_version(registry, "canary", model, THRESHOLD)


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats()
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a JSON document, as a path of keys and indices."""
    out = [prefix]
    if isinstance(node, dict):
        for key, child in node.items():
            out.extend(_paths(child, (*prefix, key)))
    elif isinstance(node, list):
        for i, child in enumerate(node):
            out.extend(_paths(child, (*prefix, i)))
    return out


def test_a_manifest_spoiled_anywhere_is_refused_or_still_sound(models, tmp_path):
    folder = write_version(Registry(tmp_path / "registry"), "v1", models.good, THRESHOLD)
    good = json.loads((folder / "manifest.json").read_text())
    good["threshold"]["adaptive"] = GOOD_ADAPTIVE
    places = [p for p in _paths(good) if p]
    tally: Counter[str] = Counter()

    # Derandomized: the same examples every run, so the tally asserted below is stable.
    @settings(max_examples=400, deadline=None, derandomize=True, database=None)
    @given(st.sampled_from(places), JSON, st.booleans())
    def check(place: tuple[Any, ...], value: Any, remove: bool) -> None:
        manifest = json.loads(json.dumps(good))
        parent = manifest
        for step in place[:-1]:
            parent = parent[step]
        if remove:
            del parent[place[-1]]
        else:
            parent[place[-1]] = value
        (folder / "manifest.json").write_text(json.dumps(manifest))
        try:
            bundle = load_bundle(folder, expected_features=SENSORS)
        except BundleError:
            tally["refused"] += 1
            return
        tally["accepted"] += 1
        # What was accepted is what the streamer needs to run.
        assert bundle.lookback >= 1 and math.isfinite(bundle.threshold)
        assert bundle.spec.feature_names == SENSORS
        assert bundle.model_path.resolve().parent == folder.resolve()
        calibration = bundle.calibration
        if calibration is not None:
            assert np.isfinite(calibration.edges).all() and 0 < calibration.rate < 1
            assert calibration.prior is None or calibration.prior.shape == (calibration.bins,)

    check()
    print(f"\nspoiled manifests: {dict(tally)}")
    assert tally["refused"] > 0 and tally["accepted"] > 0
