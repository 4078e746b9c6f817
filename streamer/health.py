"""Liveness and readiness of the streamer, and the HTTP server of /metrics, /healthz, /readyz."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

LIVE_SECONDS = 120.0
"""The loop must have polled within this long to be alive (a window rebuild can take a while)."""
READY_SECONDS = 30.0
"""The broker must have answered within this long for the member to be ready."""
PROBE_TIMEOUT = 1.0
"""How long a metadata probe waits for the broker's answer."""
PROBE_MISSES = 2
"""Unanswered probes in a row that count as the broker lost."""
PROBE_EVERY = 2.0
"""Seconds between the broker prober's metadata requests."""


@dataclass(frozen=True)
class Check:
    """The answer of one probe: whether it passes, and why, as a small JSON-able mapping."""

    ok: bool
    detail: dict[str, Any]


class Health:
    """What the probes read: written by the consume loop, read by the server's threads."""

    def __init__(
        self,
        model_version: Callable[[], str | None],
        live_seconds: float = LIVE_SECONDS,
        ready_seconds: float = READY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.model_version = model_version
        self.live_seconds, self.ready_seconds, self.clock = live_seconds, ready_seconds, clock
        self.last_poll = clock()
        self.last_broker: float | None = None
        self.broker_lost_at: float | None = None
        self.probe_misses = 0
        self.has_joined = False

    def polled(self) -> None:
        """The loop came round (called once per poll)."""
        self.last_poll = self.clock()

    def joined(self) -> None:
        """The group gave this member its (possibly empty) share of partitions."""
        self.has_joined = True

    def broker_answered(self) -> None:
        """A request to the broker succeeded."""
        self.last_broker = self.clock()
        self.broker_lost_at = None
        self.probe_misses = 0

    def broker_lost(self) -> None:
        """The broker is known to be unreachable now (the client lost every connection, or
        a probe went unanswered): not ready until it answers again, without waiting for
        ``ready_seconds`` to run out."""
        if self.broker_lost_at is None:
            self.broker_lost_at = self.clock()

    def probe(self, consumer: Any, topic: str) -> None:
        """Ask the broker for the topic's metadata through ``consumer`` (any client with
        ``list_topics``); note the answer.
        ``PROBE_MISSES`` unanswered probes in a row count as lost: one slow answer on a busy
        broker is not an outage."""
        try:
            consumer.list_topics(topic, timeout=PROBE_TIMEOUT)
        except Exception as exc:  # any failure means the broker did not answer in time
            log.debug("broker probe failed: %s", exc)
            self.probe_misses += 1
            if self.probe_misses >= PROBE_MISSES:
                self.broker_lost()
            return
        self.broker_answered()

    def broker_reachable(self) -> bool:
        """The broker answered within ``ready_seconds`` and has not been lost since."""
        if self.last_broker is None or self.broker_lost_at is not None:
            return False
        return self.clock() - self.last_broker <= self.ready_seconds

    def liveness(self) -> Check:
        """Alive: the consume loop polled within ``live_seconds``."""
        since = self.clock() - self.last_poll
        return Check(since <= self.live_seconds, {"seconds_since_poll": round(since, 3)})

    def readiness(self) -> Check:
        """Ready: alive, a model loaded, joined the group, the broker answered recently."""
        now, version = self.clock(), self.model_version()
        broker = None if self.last_broker is None else now - self.last_broker
        checks = {
            "live": self.liveness().ok,
            "model_loaded": version is not None,
            "joined_group": self.has_joined,
            "broker_reachable": self.broker_reachable(),
        }
        detail: dict[str, Any] = {
            **checks,
            "model_version": version,
            "seconds_since_broker": None if broker is None else round(broker, 3),
        }
        return Check(all(checks.values()), detail)


class BrokerProber(threading.Thread):
    """Probes the broker every ``every`` seconds from a thread of its own, through a client
    of its own, so readiness follows the broker whatever the consume loop is waiting on (a
    commit, a rebuild's read, a model reload). Stops with ``stop`` or :meth:`close`."""

    def __init__(
        self, health: Health, client: Any, topic: str, stop: threading.Event, every: float
    ) -> None:
        super().__init__(name="broker-probe", daemon=True)
        self.health, self.client, self.topic, self.every = health, client, topic, every
        self.stop, self.done = stop, threading.Event()

    def run(self) -> None:
        while not (self.done.wait(self.every) or self.stop.is_set()):
            self.health.probe(self.client, self.topic)

    def close(self) -> None:
        """Stop probing and wait for the thread."""
        self.done.set()
        self.join(PROBE_TIMEOUT + 1.0)


class HealthCollector(Collector):
    """``<prefix>_healthy{probe}``: 1 when liveness or readiness passes, else 0; and
    ``<prefix>_broker_reachable``: 1 while the broker answers."""

    def __init__(self, health: Health, prefix: str = "sheetbreak") -> None:
        self.health, self.prefix = health, prefix

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """One sample per probe, computed at scrape time."""
        family = GaugeMetricFamily(
            f"{self.prefix}_healthy",
            "1 when the probe (liveness, readiness) passes",
            labels=["probe"],
        )
        family.add_metric(["liveness"], float(self.health.liveness().ok))
        family.add_metric(["readiness"], float(self.health.readiness().ok))
        yield family
        yield GaugeMetricFamily(
            f"{self.prefix}_broker_reachable",
            "1 when the Kafka broker answered recently and has not been lost since",
            value=float(self.health.broker_reachable()),
        )


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    registry: CollectorRegistry
    health: Health | None


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        """Route /metrics, /healthz and /readyz; anything else is 404."""
        path = self.path.split("?", 1)[0]
        health = self.server.health
        if path == "/metrics":
            self._send(HTTPStatus.OK, generate_latest(self.server.registry), CONTENT_TYPE_LATEST)
        elif path in ("/healthz", "/readyz") and health is not None:
            check = health.liveness() if path == "/healthz" else health.readiness()
            status = HTTPStatus.OK if check.ok else HTTPStatus.SERVICE_UNAVAILABLE
            body = orjson.dumps({"ok": check.ok, **check.detail})
            self._send(status, body, "application/json")
        else:
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")

    def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Requests go to debug logging, not stderr (probes come every few seconds)."""
        log.debug("%s %s", self.address_string(), format % args)


class HealthServer:
    """/metrics, /healthz and /readyz on one address, served by threads until ``close``."""

    def __init__(
        self, host: str, port: int, registry: CollectorRegistry, health: Health | None = None
    ) -> None:
        server_class = type("Server", (_Server,), {"address_family": _family(host)})
        self._server: _Server = server_class((host, port), _Handler)
        self._server.registry, self._server.health = registry, health
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="health-server", daemon=True
        )
        self._thread.start()

    @property
    def port(self) -> int:
        """The port bound (useful when 0 asked for a free one)."""
        return int(self._server.server_address[1])

    def close(self) -> None:
        """Stop serving and release the socket."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5.0)

    shutdown = close

    def __enter__(self) -> HealthServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET
