"""Liveness, readiness and the server of /metrics, /healthz and /readyz, over real loopback HTTP."""

import json
import urllib.error
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, Counter

from streamer.health import Health, HealthCollector, HealthServer
from streamer.metrics import StreamerMetrics

pytestmark = pytest.mark.unit
TIMEOUT = 5.0


class Clock:
    """A hand-moved monotonic clock."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def get(port, path):
    """Status, content type and body of a GET on the loopback server."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=TIMEOUT) as reply:
            return reply.status, reply.headers["Content-Type"], reply.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.headers["Content-Type"], exc.read()


def ready_health(clock):
    health = Health(lambda: "v1", live_seconds=10, ready_seconds=5, clock=clock)
    health.joined()
    health.broker_answered()
    health.polled()
    return health


def test_readiness_needs_model_group_and_a_recent_broker_answer():
    clock = Clock()
    health = Health(lambda: None, live_seconds=10, ready_seconds=5, clock=clock)
    assert health.liveness().ok
    detail = health.readiness().detail
    assert not health.readiness().ok
    assert (detail["model_loaded"], detail["joined_group"], detail["broker_reachable"]) == (
        False,
        False,
        False,
    )
    assert ready_health(clock).readiness().ok
    health = ready_health(clock)
    clock.now += 6  # the broker has not answered for longer than ready_seconds
    health.polled()
    assert health.liveness().ok
    assert not health.readiness().ok
    assert health.readiness().detail["broker_reachable"] is False


def test_liveness_fails_when_the_loop_stops_polling():
    clock = Clock()
    health = ready_health(clock)
    clock.now += 11
    assert not health.liveness().ok
    assert not health.readiness().ok
    health.polled()
    assert health.liveness().ok


def test_probe_notes_only_a_successful_broker_answer():
    class Broker:
        up = False

        def list_topics(self, topic, timeout):
            if not self.up:
                raise RuntimeError("all brokers down")

    clock, broker = Clock(), Broker()
    health = Health(lambda: "v1", clock=clock)
    health.probe(broker, "sensors")
    assert health.last_broker is None
    broker.up = True
    health.probe(broker, "sensors")
    assert health.last_broker == clock.now


def test_a_lost_broker_is_not_ready_at_once_and_ready_again_when_it_answers():
    class Broker:
        up = False

        def list_topics(self, topic, timeout):
            if not self.up:
                raise RuntimeError("all brokers down")

    clock, broker = Clock(), Broker()
    health = ready_health(clock)
    registry = CollectorRegistry()
    registry.register(HealthCollector(health))
    assert registry.get_sample_value("sheetbreak_broker_reachable") == 1
    health.broker_lost()  # e.g. librdkafka's "all brokers down", long before ready_seconds
    assert not health.readiness().ok
    assert health.readiness().detail["broker_reachable"] is False
    assert health.liveness().ok
    assert registry.get_sample_value("sheetbreak_broker_reachable") == 0
    health.probe(broker, "sensors")
    health.probe(broker, "sensors")
    assert not health.broker_reachable()
    broker.up = True
    health.probe(broker, "sensors")
    assert health.readiness().ok
    assert registry.get_sample_value("sheetbreak_broker_reachable") == 1
    broker.up = False
    health.probe(broker, "sensors")  # one slow answer is not an outage
    assert health.readiness().ok
    health.probe(broker, "sensors")  # two unanswered probes in a row are
    assert not health.readiness().ok
    assert registry.get_sample_value("sheetbreak_broker_reachable") == 0


def test_server_serves_metrics_and_both_probes_on_one_port():
    clock = Clock()
    registry = CollectorRegistry()
    metrics = StreamerMetrics(registry)
    health = ready_health(clock)
    registry.register(HealthCollector(health))
    metrics.rows_consumed.inc(3)
    with HealthServer("127.0.0.1", 0, registry, health) as server:
        status, kind, body = get(server.port, "/metrics")
        assert status == 200 and kind.startswith("text/plain")
        text = body.decode()
        assert "sheetbreak_rows_consumed_total 3.0" in text
        assert 'sheetbreak_healthy{probe="readiness"} 1.0' in text
        status, kind, body = get(server.port, "/readyz")
        assert (status, kind) == (200, "application/json")
        assert json.loads(body)["model_version"] == "v1"
        assert get(server.port, "/healthz")[0] == 200
        clock.now += 6
        status, _, body = get(server.port, "/readyz")
        assert status == 503 and json.loads(body)["broker_reachable"] is False
        assert get(server.port, "/healthz")[0] == 200
        assert (
            'sheetbreak_healthy{probe="readiness"} 0.0' in get(server.port, "/metrics")[2].decode()
        )
        clock.now += 20
        assert get(server.port, "/healthz")[0] == 503
        assert get(server.port, "/nowhere")[0] == 404


def test_server_without_health_serves_metrics_only_and_closes():
    registry = CollectorRegistry()
    Counter("things", "things", registry=registry).inc()
    server = HealthServer("127.0.0.1", 0, registry)
    port = server.port
    assert b"things_total 1.0" in get(port, "/metrics")[2]
    assert get(port, "/readyz")[0] == 404
    server.close()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=TIMEOUT)
