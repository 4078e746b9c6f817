"""Prometheus metrics of the streamer, on a registry that is passed in (never the global one)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from streamer.rows import REASONS

_ERROR_BUCKETS = (
    0.01,
    0.02,
    0.05,
    0.1,
    0.2,
    0.5,
    1.0,
    2.0,
    5.0,
    10.0,
    20.0,
    50.0,
    100.0,
    float("inf"),
)
_SECONDS_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    float("inf"),
)
_BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, float("inf"))


class StreamerMetrics:
    """Every metric the streamer exports, named by Prometheus conventions."""

    def __init__(self, registry: CollectorRegistry, prefix: str = "sheetbreak") -> None:
        def name(text: str) -> str:
            return f"{prefix}_{text}"

        self.registry = registry
        self.rows_consumed = Counter(
            name("rows_consumed"), "Sensor rows read from Kafka", registry=registry
        )
        self.rows_scored = Counter(
            name("rows_scored"), "Rows whose window was scored", registry=registry
        )
        self.rows_unscored = Counter(
            name("rows_unscored"),
            "Accepted rows not scored, by reason (warmup, break, degraded, replay)",
            ["reason"],
            registry=registry,
        )
        self.rows_dead_lettered = Counter(
            name("rows_dead_lettered"),
            "Rows sent to the dead-letter topic, by reason",
            ["reason"],
            registry=registry,
        )
        self.alerts = Counter(
            name("alerts"), "Alert messages published, by status", ["status"], registry=registry
        )
        self.reconstruction_error = Histogram(
            name("reconstruction_error"),
            "Reconstruction error of scored rows",
            buckets=_ERROR_BUCKETS,
            registry=registry,
        )
        self.threshold = Gauge(
            name("threshold"), "Alert threshold of the model in use", registry=registry
        )
        self.model_info = Gauge(
            name("model_info"), "1 for the model version in use", ["version"], registry=registry
        )
        self.model_reloads = Counter(
            name("model_reloads"),
            "Bundle swaps, by result (loaded, refused)",
            ["result"],
            registry=registry,
        )
        self.batch_size = Histogram(
            name("inference_batch_size"),
            "Windows per model call",
            buckets=_BATCH_BUCKETS,
            registry=registry,
        )
        self.batch_seconds = Histogram(
            name("inference_duration_seconds"),
            "Time of one model call",
            buckets=_SECONDS_BUCKETS,
            registry=registry,
        )
        self.latency = Histogram(
            name("end_to_end_latency_seconds"),
            "From the row's produce time to its score being final and any alert published",
            buckets=_SECONDS_BUCKETS,
            registry=registry,
        )
        self.lag = Gauge(
            name("consumer_lag"),
            "Messages behind the partition's end",
            ["partition"],
            registry=registry,
        )
        self.machines = Gauge(
            name("machines"), "Machines with a window in memory", registry=registry
        )
        self.warming = Gauge(
            name("windows_warming"), "Machines whose window is not yet full", registry=registry
        )
        self.rebalances = Counter(
            name("rebalances"), "Partition assignments and revocations", ["kind"], registry=registry
        )
        self.replayed = Counter(
            name("rows_replayed"), "Rows read back to rebuild windows", registry=registry
        )
        self.breaks = Counter(
            name("breaks"),
            "Breaks signalled by the rows, by outcome: warned (an episode was open) or missed",
            ["outcome"],
            registry=registry,
        )
        for outcome in ("warned", "missed"):
            self.breaks.labels(outcome)
        for reason in REASONS:
            self.rows_dead_lettered.labels(reason)
        for status in ("open", "update", "resolved"):
            self.alerts.labels(status)

    def count_breaks(self, breaks: int, alerts: Sequence[Mapping[str, Any]]) -> None:
        """Count a batch's break rows as warned (an episode closed by the break) or missed."""
        warned = sum(a["status"] == "resolved" and a.get("reason") == "break" for a in alerts)
        self.breaks.labels("warned").inc(min(warned, breaks))
        self.breaks.labels("missed").inc(max(0, breaks - warned))

    def use_model(self, version: str, threshold: float) -> None:
        """Show which model and threshold are in use (one version label at a time)."""
        self.model_info.clear()
        self.model_info.labels(version).set(1)
        self.threshold.set(threshold)


def observe_many(histogram: Histogram, values: np.ndarray) -> None:
    """Observe every value at once: the same buckets, count and sum as one ``observe`` each.

    prometheus_client has no bulk observe, and one call per scored row costs more than the
    row's share of the model call; here each bucket's counter is incremented once per batch.
    """
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    if not values.size:
        return
    bounds = np.asarray(histogram._upper_bounds, dtype=np.float64)
    # observe() puts a value in the first bucket whose upper bound it does not exceed.
    counts = np.bincount(np.searchsorted(bounds, values, side="left"), minlength=len(bounds))
    histogram._sum.inc(float(values.sum()))
    for bucket, count in zip(histogram._buckets, counts.tolist(), strict=False):
        if count:
            bucket.inc(count)
