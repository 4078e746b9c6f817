"""Building blocks of the streamer's integration tests: a bundle, scenario rows, runners."""

from __future__ import annotations

import contextlib
import json
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from confluent_kafka import Consumer, Producer
from prometheus_client import CollectorRegistry

from streamer.archive import Archiver
from streamer.archive_metrics import ArchiveMetrics
from streamer.archive_settings import ArchiveSettings
from streamer.bundle import MANIFEST_FILE, Registry, load_bundle
from streamer.calibrate import Calibration, reference_prior, tail_edges
from streamer.metrics import StreamerMetrics
from streamer.runner import Streamer
from streamer.scoring import Scorer
from streamer.settings import KafkaSettings, StreamerSettings
from streamer.simulate import PlantParams, simulate_history
from streamer.windows import make_windows
from trainer.data import LABEL, MACHINE, TIME, Table
from trainer.fit import FitSettings, fit
from trainer.models import ModelConfig

STEP_MS = 120_000
START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` until true; fail the test with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@dataclass(frozen=True)
class Scenario:
    """A registry with a bundle, and the normal stretch of rows its threshold clears."""

    registry: Path
    normal: np.ndarray
    sensors: tuple[str, ...]
    scale: np.ndarray


def build_scenario(root: Path) -> Scenario:
    """Fit a PCA bundle on simulated history and set its threshold above a normal stretch."""
    history = simulate_history(PlantParams.load(), machines=2, days=3, seed=5)
    frame = history.rename(columns={"ts": TIME, "break": LABEL, "machine_id": MACHINE})
    sensors = tuple(c for c in frame.columns if c not in (TIME, LABEL, MACHINE))
    table = Table(frame=frame, sensors=sensors, sources=("simulated",))
    staging = root / "staging"
    # A fixed threshold: these scenarios need alerts on the drifting machines only, and
    # decisions that a rebuilt streamer makes exactly as an uninterrupted one does.
    settings = FitSettings(
        data=(),
        registry=staging,
        model=ModelConfig(kind="pca"),
        threshold_mode="fixed",
        progress=False,
    )
    result = fit(settings, table=table)
    normal = _normal_stretch(history, sensors, 60)
    bundle = load_bundle(result.bundle)
    scorer = Scorer.load(bundle.model_path, bundle.lookback)
    rows = bundle.spec.matrix(_frame(normal, sensors))
    windows, _ = make_windows(
        bundle.scaler.transform(rows), np.zeros(len(rows), int), bundle.lookback
    )
    threshold = 1.5 * float(scorer.score(windows)[0].max())
    registry = root / "registry"
    copy_bundle(result.bundle, Registry(registry), "v1", threshold=threshold)
    Registry(registry).set_current("v1")
    return Scenario(registry, normal, sensors, bundle.scaler.scale)


def adaptive_scenario(scenario: Scenario, root: Path, rate: float = 0.03) -> Scenario:
    """The scenario's bundle with a per-machine adaptive threshold that a few rows of the
    normal stretch cross: its decisions depend on each machine's whole history of scores."""
    bundle = load_bundle(scenario.registry / "v1")
    scorer = Scorer.load(bundle.model_path, bundle.lookback)
    rows = bundle.spec.matrix(_frame(scenario.normal, scenario.sensors))
    windows, _ = make_windows(
        bundle.scaler.transform(rows), np.zeros(len(rows), int), bundle.lookback
    )
    reference = scorer.score(windows)[0]
    edges = tail_edges(reference)
    calibration = Calibration(
        edges,
        rate,
        minutes=240.0,
        min_weight=20.0,
        fallback=bundle.threshold,
        prior=reference_prior(edges, reference, 60.0),
    )
    registry = root / "registry"
    copy_bundle(scenario.registry / "v1", Registry(registry), "v1", adaptive=calibration.to_dict())
    Registry(registry).set_current("v1")
    return Scenario(registry, scenario.normal, scenario.sensors, scenario.scale)


def copy_bundle(source: Path, registry: Registry, version: str, **changes: Any) -> Path:
    """A new version from an existing bundle, with manifest fields changed (``threshold``
    and ``adaptive`` go to the threshold section)."""
    manifest = json.loads((source / MANIFEST_FILE).read_text())
    manifest["version"] = version
    if "threshold" in changes:
        manifest["threshold"]["value"] = changes.pop("threshold")
    if "adaptive" in changes:
        manifest["threshold"]["adaptive"] = changes.pop("adaptive")
    manifest.update(changes)

    def fill(folder: Path) -> None:
        for item in source.iterdir():
            if item.is_file():
                shutil.copy(item, folder / item.name)
        (folder / MANIFEST_FILE).write_text(json.dumps(manifest))

    return registry.write(version, fill)


def _frame(values: np.ndarray, sensors: tuple[str, ...]) -> Any:
    import pandas as pd  # noqa: PLC0415

    return pd.DataFrame(values, columns=list(sensors))


def _normal_stretch(history: Any, sensors: tuple[str, ...], length: int) -> np.ndarray:
    """``length`` contiguous rows of one machine, at least an hour away from any break."""
    one = history[history["machine_id"] == history["machine_id"].iloc[0]].reset_index()
    ts = one["ts"].astype("int64").to_numpy() // 1_000_000
    breaks = ts[one["break"].to_numpy() == 1]
    for start in range(0, len(one) - length, 10):
        span = ts[start : start + length]
        steady = np.all(np.diff(span) == STEP_MS)
        far = not np.any((breaks > span[0] - 3_600_000) & (breaks < span[-1] + 3_600_000))
        if steady and far:
            return one.loc[start : start + length - 1, list(sensors)].to_numpy(float)
    raise AssertionError("no quiet stretch in the simulated history")


def scenario_rows(
    scenario: Scenario, normal_machines: int, drift_machines: int
) -> list[dict[str, Any]]:
    """Rows of machines in time order: normal ones repeat the stretch; drifting ones ramp
    away from it over their last six rows and then break."""
    rows: list[dict[str, Any]] = []
    length = len(scenario.normal)
    # The first 20 sensors (continuous in the simulated plant) move against each other.
    push = np.zeros(len(scenario.sensors))
    push[:20:2], push[1:20:2] = 1.0, -1.0
    push[:20] *= scenario.scale[:20]
    for i in range(length):
        for m in range(normal_machines + drift_machines):
            drifting = m >= normal_machines
            name = f"D-{m - normal_machines + 1}" if drifting else f"N-{m + 1}"
            values = scenario.normal[i].copy()
            if drifting and i >= length - 7:
                values += (i - (length - 8)) * 2.0 * push
            rows.append(
                {
                    "machine_id": name,
                    "ts": START_MS + i * STEP_MS,
                    "values": dict(zip(scenario.sensors, values.tolist(), strict=True)),
                    "break": int(drifting and i == length - 1),
                }
            )
    return rows


def produce_rows(bootstrap: str, topic: str, rows: list[dict[str, Any]]) -> None:
    """Send rows keyed by machine and wait until all are delivered, each once and in order
    (a plain producer's retry under load can land a batch twice or after a later one)."""
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 2, "enable.idempotence": True}
    )
    for row in rows:
        producer.produce(topic, key=row["machine_id"].encode(), value=orjson.dumps(row))
    assert producer.flush(30) == 0


def produce_raw(bootstrap: str, topic: str, items: list[tuple[bytes | None, bytes | None]]) -> None:
    """Send raw key/value pairs (for malformed rows), each once and in order."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for key, value in items:
        producer.produce(topic, key=key, value=value)
    assert producer.flush(30) == 0


def read_all(bootstrap: str, topic: str, quiet: float = 2.0, timeout: float = 30.0) -> list[Any]:
    """Every committed message of ``topic`` from the beginning, once it has gone quiet."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{time.time_ns()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "session.timeout.ms": 6000,
        }
    )
    consumer.subscribe([topic])
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    last_new = time.monotonic()
    try:
        while time.monotonic() < deadline and time.monotonic() - last_new < quiet + 4:
            message = consumer.poll(0.2)
            if message is not None and message.error() is None:
                out.append(message)
                last_new = time.monotonic()
            elif out and time.monotonic() - last_new > quiet:
                break
    finally:
        consumer.close()
    return out


def alerts_of(messages: list[Any]) -> list[dict[str, Any]]:
    """Decoded alert values."""
    return [orjson.loads(m.value()) for m in messages]


def settings_for(
    bootstrap: str,
    registry: Path,
    name: Callable[[str], str],
    tag: str,
    instance: str = "a",
    **overrides: Any,
) -> StreamerSettings:
    """Streamer settings on topics and a group of this test's own (``tag`` tells runs apart)."""
    values: dict[str, Any] = {
        "kafka": KafkaSettings(bootstrap),
        "registry": registry,
        "topic": name(f"{tag}-sensors"),
        "alerts_topic": name(f"{tag}-breaks"),
        "dlq_topic": name(f"{tag}-dlq"),
        "state_topic": name(f"{tag}-state"),
        "group_id": name(f"{tag}-group"),
        "instance_id": instance,
        "session_timeout_ms": 6000,
        "reload_seconds": 0.3,
        "metrics_port": None,
    }
    values.update(overrides)
    return StreamerSettings(**values)


@dataclass
class Running:
    """A streamer running in a thread, with its metrics registry."""

    streamer: Streamer
    registry: CollectorRegistry

    def value(self, name: str, **labels: str) -> float:
        """A metric sample (0 when absent)."""
        return self.registry.get_sample_value(name, labels or None) or 0.0


@contextlib.contextmanager
def running(settings: StreamerSettings) -> Iterator[Running]:
    """Run a streamer until the block ends; then stop it as SIGTERM would."""
    stop = threading.Event()
    registry = CollectorRegistry()
    streamer = Streamer(settings, StreamerMetrics(registry), stop)
    thread = threading.Thread(target=streamer.run, daemon=True)
    thread.start()
    try:
        yield Running(streamer, registry)
    finally:
        stop.set()
        thread.join(60)
        assert not thread.is_alive(), "the streamer did not stop within 60 s"


@contextlib.contextmanager
def archiving(
    settings: ArchiveSettings, registry: CollectorRegistry | None = None
) -> Iterator[Archiver]:
    """An archiver running in a thread until the block ends; then stopped as SIGTERM would."""
    stop = threading.Event()
    archiver = Archiver(settings, ArchiveMetrics(registry or CollectorRegistry()), stop)
    thread = threading.Thread(target=archiver.run, daemon=True)
    thread.start()
    try:
        yield archiver
    finally:
        stop.set()
        thread.join(60)
        assert not thread.is_alive(), "the archiver did not stop within 60 s"
