"""The archiver's metrics (on a registry passed in) and what its probes read."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from streamer.health import Check, Health
from streamer.rows import REASONS

PREFIX = "sheetbreak_archive"
_FLUSH_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, float("inf"))


class ArchiveMetrics:
    """Every metric the archiver exports, named by Prometheus conventions."""

    def __init__(self, registry: CollectorRegistry, prefix: str = PREFIX) -> None:
        def name(text: str) -> str:
            return f"{prefix}_{text}"

        self.registry = registry
        self.rows = Counter(
            name("rows"), "Rows written to the archive and committed", registry=registry
        )
        self.skipped = Counter(
            name("rows_skipped"),
            "Rows not archived because they do not decode, by reason",
            ["reason"],
            registry=registry,
        )
        self.files = Counter(name("files"), "Parquet files written", registry=registry)
        self.written = Counter(
            name("written_bytes"), "Bytes of Parquet files written", registry=registry
        )
        self.flush_seconds = Histogram(
            name("flush_duration_seconds"),
            "Time of one flush: build tables, write, rename, commit",
            buckets=_FLUSH_BUCKETS,
            registry=registry,
        )
        self.last_flush = Gauge(
            name("last_flush_timestamp_seconds"),
            "When the last flush committed (Unix time)",
            registry=registry,
        )
        self.orphans = Counter(
            name("orphans_deleted"),
            "Uncommitted files removed on assignment, to be written again from Kafka",
            registry=registry,
        )
        self.commit_failures = Counter(
            name("commit_failures"), "Offset commits that failed after a flush", registry=registry
        )
        self.buffered = Gauge(
            name("buffered_rows"), "Rows read and not yet flushed", registry=registry
        )
        self.lag = Gauge(
            name("consumer_lag"),
            "Messages behind the partition's end, from the committed offset",
            ["partition"],
            registry=registry,
        )
        for reason in REASONS:
            self.skipped.labels(reason)

    def value(self, metric: str, **labels: str) -> float:
        """A sample's current value (0 when absent), for tests and summaries."""
        return self.registry.get_sample_value(metric, labels or None) or 0.0


class ArchiveHealth(Health):
    """Alive while the loop polls; ready once joined and the broker answers (no model)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(lambda: None, **kwargs)

    def readiness(self) -> Check:
        """Ready: alive, joined the group, the broker answered recently."""
        now = self.clock()
        broker = None if self.last_broker is None else now - self.last_broker
        checks = {
            "live": self.liveness().ok,
            "joined_group": self.has_joined,
            "broker_reachable": broker is not None and broker <= self.ready_seconds,
        }
        seconds = None if broker is None else round(broker, 3)
        return Check(all(checks.values()), {**checks, "seconds_since_broker": seconds})
