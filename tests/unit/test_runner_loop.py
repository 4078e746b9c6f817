"""The consume loop driven through fake clients: batches, transactions, a broker that comes
late, rebalances and model reloads, with no broker at all."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from fake_kafka import Cluster
from prometheus_client import CollectorRegistry
from tiny_bundle import SENSORS, save_model, write_version

import streamer.runner
from streamer.bundle import Registry
from streamer.metrics import StreamerMetrics
from streamer.runner import Streamer
from streamer.settings import KafkaSettings, StreamerSettings

pytestmark = pytest.mark.unit

TOPIC, ALERTS, PARTITIONS = "sensors", "breaks", 2
STEP_MS = 120_000


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """v1 alarms on every scored row (threshold 0); v2 on none."""
    root = tmp_path_factory.mktemp("loop")
    model = root / "model.keras"
    save_model(model)
    registry = Registry(root / "registry")
    write_version(registry, "v1", model, 0.0)
    write_version(registry, "v2", model, 1e9)
    registry.set_current("v1")
    return registry.root


def settings(registry: Path) -> StreamerSettings:
    return StreamerSettings(
        kafka=KafkaSettings("fake:9092"),
        registry=registry,
        topic=TOPIC,
        alerts_topic=ALERTS,
        instance_id="a",
        poll_seconds=0.01,
        reload_seconds=0.05,
        metrics_port=None,
        max_batch=4,
    )


def cluster_with_rows(machines: int, rows: int, seed: int = 0) -> Cluster:
    cluster = Cluster()
    for topic, partitions in ((TOPIC, PARTITIONS), (ALERTS, 1), ("sensors.dlq", 1)):
        cluster.create(topic, partitions)
    add_rows(cluster, machines, range(rows), seed)
    return cluster


def add_rows(cluster: Cluster, machines: int, steps: range, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for i in steps:
        for m in range(machines):
            values = dict(zip(SENSORS, rng.normal(size=len(SENSORS)).tolist(), strict=True))
            row = {"machine_id": f"M{m}", "ts": i * STEP_MS, "values": values}
            cluster.append(TOPIC, m % PARTITIONS, f"M{m}".encode(), orjson.dumps(row))


@contextmanager
def looping(
    cluster: Cluster, registry: Path, **overrides: Any
) -> Iterator[tuple[Streamer, threading.Event]]:
    stop = threading.Event()
    streamer = Streamer(
        dataclasses.replace(settings(registry), **overrides),
        StreamerMetrics(CollectorRegistry()),
        stop,
        clients=cluster.clients(),
    )
    thread = threading.Thread(target=streamer.run, daemon=True)
    thread.start()
    try:
        yield streamer, stop
    finally:
        stop.set()
        thread.join(10)
        assert not thread.is_alive(), "the loop did not stop"


def wait(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def caught_up(cluster: Cluster) -> bool:
    return all(cluster.committed.get((TOPIC, p), 0) == e for p, e in cluster.ends(TOPIC).items())


def alerts(cluster: Cluster) -> list[dict]:
    return [orjson.loads(r.value() or b"") for r in cluster.topics[ALERTS][0]]


def test_each_batch_is_one_transaction_with_its_offsets_one_partition_per_request(registry):
    cluster = cluster_with_rows(machines=3, rows=12)
    with looping(cluster, registry) as (streamer, _):
        wait(lambda: caught_up(cluster), "every row committed")
    calls = [name for name, _ in cluster.calls]
    assert calls[0] == "init" and "commit outside a transaction" not in calls
    sent = [args for name, args in cluster.calls if name == "offsets"]
    assert all(len(args) == 1 for args in sent), "one partition per offsets request"
    assert calls.count("begin") == calls.count("commit") >= 36 / 4
    # Every scored row alarms under v1: one episode per machine, each alert once.
    got = alerts(cluster)
    opened = sorted(a["machine_id"] for a in got if a["status"] == "open")
    assert opened == ["M0", "M1", "M2"]
    assert len(got) == len({a["alert_id"] for a in got})
    assert {a["ts"] for a in got if a["status"] == "open"} == {"1970-01-01T00:04:00.000Z"}
    assert streamer.metrics.registry.get_sample_value("sheetbreak_rows_consumed_total") == 36


def test_a_broker_that_comes_late_is_waited_for_unready_and_a_stop_is_quick(registry):
    cluster = cluster_with_rows(machines=2, rows=6)
    cluster.up = False
    with looping(cluster, registry) as (streamer, stop):
        time.sleep(1.0)
        ready = streamer.health.readiness()
        assert not ready.ok and ready.detail["broker_reachable"] is False
        assert streamer.health.liveness().ok
        assert not cluster.calls, "nothing was sent to a broker that is down"
        cluster.up = True
        wait(lambda: caught_up(cluster), "every row committed once the broker is up")
        assert streamer.health.broker_reachable()
    # Down again at a stop: the loop does not wait for the broker to answer.
    cluster = cluster_with_rows(machines=2, rows=6)
    cluster.up = False
    with looping(cluster, registry) as (_, stop):
        time.sleep(0.5)
        started = time.monotonic()
        stop.set()
    assert time.monotonic() - started < 2.0


def test_a_broker_lost_during_a_commit_shows_unready_while_the_loop_waits_alive(registry):
    cluster = cluster_with_rows(machines=2, rows=6)
    with looping(cluster, registry) as (streamer, _):
        wait(lambda: caught_up(cluster), "the first rows committed")
        cluster.drop_at_commit = True
        add_rows(cluster, machines=2, steps=range(6, 12), seed=1)
        wait(lambda: not cluster.up, "a commit that finds the broker gone")
        wait(lambda: not streamer.health.readiness().ok, "the outage on /readyz")
        assert streamer.health.readiness().detail["broker_reachable"] is False
        assert streamer.health.liveness().ok
        cluster.up = True
        wait(lambda: caught_up(cluster), "every row committed once the broker is back")
        wait(lambda: streamer.health.readiness().ok, "ready again")
    got = alerts(cluster)
    assert len(got) == len({a["alert_id"] for a in got}), "each alert once"


def test_partitions_given_back_at_the_own_commit_keep_their_windows_others_are_rebuilt(
    registry,
):
    cluster = cluster_with_rows(machines=2, rows=8)
    with looping(cluster, registry) as (streamer, _):
        wait(lambda: caught_up(cluster), "the first rows committed")
        replayed = streamer.metrics.replayed
        cluster.reassign.append([0, 1])  # the same partitions, at this member's own commits
        add_rows(cluster, 2, range(8, 10), seed=1)
        wait(lambda: caught_up(cluster), "the rows after the first rebalance")
        assert replayed._value.get() == 0, "windows kept: nothing read back"
        cluster.committed[TOPIC, 1] -= 1  # as if another member had owned it meanwhile
        cluster.reassign.append([0, 1])
        add_rows(cluster, 2, range(10, 12), seed=2)
        wait(lambda: caught_up(cluster), "the rows after the second rebalance")
        assert replayed._value.get() > 0, "partition 1 was rebuilt from its rows"
    got = alerts(cluster)
    assert {a["machine_id"] for a in got if a["status"] == "open"} == {"M0", "M1"}


def test_a_new_bundle_is_taken_up_between_batches(registry):
    cluster = cluster_with_rows(machines=1, rows=6)
    try:
        with looping(cluster, registry) as (streamer, _):
            wait(lambda: caught_up(cluster), "the first rows committed")
            assert {a["model_version"] for a in alerts(cluster)} == {"v1"}
            Registry(registry).set_current("v2")
            wait(lambda: streamer.model.bundle.version == "v2", "the reload")
            before = len(alerts(cluster))
            add_rows(cluster, 1, range(6, 12), seed=3)
            wait(lambda: caught_up(cluster), "the rows after the reload")
    finally:
        Registry(registry).set_current("v1")
    # v2's threshold is out of reach: no episode opens, and what is said comes from v2.
    later = alerts(cluster)[before:]
    assert "open" not in [a["status"] for a in later]
    assert all(a["model_version"] == "v2" for a in later)
    assert (
        streamer.metrics.registry.get_sample_value(
            "sheetbreak_model_reloads_total", {"result": "loaded"}
        )
        == 1
    )


def test_a_slow_batch_whose_commit_failed_still_bounds_the_next_one(registry, monkeypatch):
    # A stalled batch loses the group (its commit fails); the batch replayed after it must
    # fit a quarter of the poll interval at the pace the stalled one showed, not be the
    # whole backlog at once.
    real, sizes = streamer.runner.process, []

    def slow(model, windows, messages, *rest):
        if rest[1]:  # live batches only; rebuilds pass now_ms=0
            sizes.append(len(messages))
            time.sleep(0.4 if len(sizes) == 1 else 0.0)
        return real(model, windows, messages, *rest)

    monkeypatch.setattr(streamer.runner, "process", slow)
    cluster = cluster_with_rows(machines=2, rows=40)
    cluster.fence_at_commit = True
    with looping(cluster, registry, max_batch=64, max_poll_interval_ms=400):
        wait(lambda: caught_up(cluster), "every row committed after the failed commit")
    assert [name for name, _ in cluster.calls].count("abort") == 1
    # 0.4 s or more for the first batch's 64 rows: a 0.1 s budget holds 16 at that pace.
    assert sizes[0] == 64 and sizes[1] <= 16, sizes
    assert len(alerts(cluster)) == len({a["alert_id"] for a in alerts(cluster)})
