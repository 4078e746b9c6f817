"""Prometheus metrics of the streamer, on a registry that is passed in (never the global one)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from streamer.leadtime import Verdict
from streamer.rows import REASONS
from streamer.shadow import ShadowOutcome

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
# Whole minutes around the usual warning window (2 to 20 minutes ahead).
_LEAD_BUCKETS = (30, 60, 90, 120, 180, 240, 300, 420, 600, 900, 1200, 1800, 3600, float("inf"))
STATUSES = ("open", "update", "resolved")
OUTCOMES = ("warned", "missed")


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
            name("threshold"),
            "Alert threshold of the model in use; where it adapts per machine, the median "
            "of those the latest batch's rows met",
            registry=registry,
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
            "Breaks signalled by the rows, by outcome: warned (an episode opened within the "
            "bundle's warning window before the break) or missed",
            ["outcome"],
            registry=registry,
        )
        self.lead = Histogram(
            name("warning_lead_seconds"),
            "From the opening of a break's earliest recent episode to the break (leads under "
            "the warning window's minimum count as missed)",
            buckets=_LEAD_BUCKETS,
            registry=registry,
        )
        self.shadow = ShadowMetrics(registry, name)
        for outcome in OUTCOMES:
            self.breaks.labels(outcome)
        for reason in REASONS:
            self.rows_dead_lettered.labels(reason)
        for status in STATUSES:
            self.alerts.labels(status)

    def count_breaks(self, verdicts: Sequence[Verdict]) -> None:
        """Count a batch's judged breaks as warned or missed, and observe their leads."""
        _count_breaks(
            verdicts, self.breaks.labels("warned"), self.breaks.labels("missed"), self.lead
        )

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


class ShadowMetrics:
    """A shadow candidate's figures, labelled by its version (only one version at a time)."""

    def __init__(self, registry: CollectorRegistry, name: Callable[[str], str]) -> None:
        self.loads = Counter(
            name("shadow_loads"),
            "Shadow candidate bundles loaded or refused (does not load, does not fit)",
            ["result"],
            registry=registry,
        )
        self.alerts = Counter(
            name("shadow_alerts"),
            "Alert messages the shadow candidate would have published, by status",
            ["model_version", "status"],
            registry=registry,
        )
        self.reconstruction_error = Histogram(
            name("shadow_reconstruction_error"),
            "Reconstruction error of scored rows under the shadow candidate",
            ["model_version"],
            buckets=_ERROR_BUCKETS,
            registry=registry,
        )
        self.threshold = Gauge(
            name("shadow_threshold"),
            "Alert threshold of the shadow candidate being scored; where it adapts per "
            "machine, the median of those the latest batch's rows met",
            ["model_version"],
            registry=registry,
        )
        self.breaks = Counter(
            name("shadow_breaks"),
            "Breaks signalled by the rows, by the shadow candidate's outcome (warned, missed)",
            ["model_version", "outcome"],
            registry=registry,
        )
        self.lead = Histogram(
            name("shadow_warning_lead_seconds"),
            "Warning lead of breaks under the shadow candidate's episodes",
            ["model_version"],
            buckets=_LEAD_BUCKETS,
            registry=registry,
        )

    def watching(self) -> None:
        """A candidate folder is configured: export its load results, zero until they happen."""
        for result in ("loaded", "refused"):
            self.loads.labels(result)

    def use(self, version: str | None, threshold: float = 0.0) -> None:
        """Export ``version`` from now on, or no candidate (None); earlier versions go away."""
        for family in (
            self.alerts,
            self.reconstruction_error,
            self.threshold,
            self.breaks,
            self.lead,
        ):
            family.clear()
        if version is None:
            return
        self.threshold.labels(version).set(threshold)
        for status in STATUSES:
            self.alerts.labels(version, status)
        for outcome in OUTCOMES:
            self.breaks.labels(version, outcome)

    def record(self, outcome: ShadowOutcome) -> None:
        """Observe what the candidate made of one batch."""
        version = outcome.version
        observe_many(self.reconstruction_error.labels(version), outcome.scores)
        if len(outcome.thresholds):
            self.threshold.labels(version).set(float(np.median(outcome.thresholds)))
        for status, count in outcome.events.items():
            self.alerts.labels(version, status).inc(count)
        _count_breaks(
            outcome.breaks,
            self.breaks.labels(version, "warned"),
            self.breaks.labels(version, "missed"),
            self.lead.labels(version),
        )


def _count_breaks(
    verdicts: Sequence[Verdict], warned: Counter, missed: Counter, lead: Histogram
) -> None:
    if not verdicts:
        return
    hits = sum(v.warned for v in verdicts)
    warned.inc(hits)
    missed.inc(len(verdicts) - hits)
    observe_many(lead, np.array([v.lead_seconds for v in verdicts if v.lead_seconds is not None]))
