"""An uninterrupted ``streamer run`` against one SIGKILLed again and again, on the same rows,
compared field for field."""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Producer
from fault_helpers import GroupWatcher, Pacer, StreamerProcess, committed_alerts, cycle_rows
from stream_helpers import Scenario, wait_until

from streamer.broker import create_topics
from streamer.settings import StreamerSettings

PARTITIONS = 4
START_SECONDS = 180.0  # a streamer process imports TensorFlow and loads the model
WALL_CLOCK_FIELDS = frozenset({"emitted_at"})
"""When the alert was published: the only field that may differ between two runs."""


def presence_rows(
    scenario: Scenario, machines: int, cycles: int, seed: int, growth: float
) -> list[dict[str, Any]]:
    """:func:`cycle_rows`, with each machine sitting out a seeded share of the cycles: it is
    silent for over two hours then, so its partition's rows leave it idle."""
    rng = random.Random(seed)
    away = {(m, c) for m in range(machines) for c in range(1, cycles) if rng.random() < 0.2}
    length = len(scenario.normal)
    rows = cycle_rows(scenario, machines, cycles, seed, growth=growth)
    kept = []
    for index, row in enumerate(rows):
        cycle, machine = index // (length * machines), index % machines
        if (machine, cycle) not in away:
            kept.append(row)
    return kept


class ExactPacer(Pacer):
    """A :class:`Pacer` whose producer is idempotent: a retried request (a topic's leader
    not yet known, a slow broker) neither repeats nor reorders rows, so two runs read the
    very same rows in the same order."""

    def __init__(self, bootstrap: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(bootstrap, *args, **kwargs)
        self.producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "linger.ms": 5,
                "message.timeout.ms": 300_000,
                "enable.idempotence": True,
            }
        )


def produce_rows(bootstrap: str, topic: str, rows: list[dict[str, Any]]) -> dict[int, int]:
    """Send every row at once; each partition's end offset."""
    pacer = ExactPacer(bootstrap, topic, rows, rate=1e9)
    pacer.start()
    return pacer.finish(300)


@dataclass
class Run:
    """What one way of streaming the rows published, and how it went."""

    alerts: list[dict[str, Any]]
    seconds: float
    kills: list[str]


class Streaming:
    """``streamer run`` processes on one test's topics, group and flags."""

    def __init__(self, bootstrap: str, settings: StreamerSettings, extra: tuple[str, ...]):
        self.bootstrap, self.settings, self.extra = bootstrap, settings, extra
        create_topics(
            bootstrap,
            {
                settings.topic: PARTITIONS,
                settings.alerts_topic: 1,
                settings.dlq_topic: 1,
            },
        )

    def start(self) -> StreamerProcess:
        s = self.settings
        flags = ("--state-topic", s.state_topic, *self.extra)
        return StreamerProcess(
            self.bootstrap,
            *(s.registry, s.topic, s.alerts_topic, s.dlq_topic, s.group_id),
            "a",  # the same transactional id each time, as a restarted pod has
            flags,
        )

    def finish(self, process: StreamerProcess, ends: dict[int, int]) -> None:
        """Wait until every row is committed, then stop the process as a rollout does."""
        s = self.settings
        watcher = GroupWatcher(self.bootstrap, s.group_id, s.topic, PARTITIONS)
        try:
            wait_until(lambda: watcher.reached(ends), 600, "every row committed")
        finally:
            watcher.close()
        assert process.terminate() == 0, process.tail()

    def alerts(self) -> list[dict[str, Any]]:
        return committed_alerts(self.bootstrap, self.settings.alerts_topic)


def uninterrupted(streaming: Streaming, rows: list[dict[str, Any]], rate: float | None) -> Run:
    """One process sees every row: produced first (``rate`` None) or while it runs."""
    process = streaming.start()
    pacer = None
    try:
        if rate is None:
            ends = produce_rows(streaming.bootstrap, streaming.settings.topic, rows)
        process.wait_serving(START_SECONDS)
        started = time.monotonic()
        if rate is not None:
            pacer = ExactPacer(streaming.bootstrap, streaming.settings.topic, rows, rate)
            pacer.start()
            ends = pacer.finish(600)
        streaming.finish(process, ends)
        seconds = time.monotonic() - started
    finally:
        if pacer is not None:
            pacer.halt.set()
        process.close()
    return Run(streaming.alerts(), seconds, [])


def killed(
    streaming: Streaming, rows: list[dict[str, Any]], rate: float | None, kills: int, seed: int
) -> Run:
    """SIGKILL ``kills`` processes at seeded random moments (some while joining, most while
    scoring), then let one more finish. Live rows (a ``rate``) flow while a process serves."""
    rng = random.Random(seed)
    phases: list[str] = []
    holds = tuple(len(rows) * k // (kills + 1) for k in range(1, kills + 1))
    pacer, ends = None, {}
    if rate is None:
        ends = produce_rows(streaming.bootstrap, streaming.settings.topic, rows)
    else:
        pacer = ExactPacer(streaming.bootstrap, streaming.settings.topic, rows, rate, holds)
        pacer.start()
    started = time.monotonic()
    try:
        for _ in range(kills):
            process = streaming.start()
            try:
                process.wait_serving(START_SECONDS)
                if rng.random() >= 0.25:
                    wait_until(lambda p=process: _assigned(p), 60, "the member to join")
                if pacer is not None:
                    pacer.release()
                time.sleep(rng.uniform(0.3, 5.0))
                assert process.alive(), process.tail()
                phases.append(_phase(process))
                process.kill()
            finally:
                process.close()
        last = streaming.start()
        try:
            last.wait_serving(START_SECONDS)
            ends = ends if pacer is None else pacer.finish(600)
            streaming.finish(last, ends)
        finally:
            last.close()
    finally:
        if pacer is not None:
            pacer.halt.set()
            pacer.release(len(holds))
    return Run(streaming.alerts(), time.monotonic() - started, phases)


def _assigned(process: StreamerProcess) -> bool:
    assert process.alive(), process.tail()
    return process.value("sheetbreak_rebalances_total", kind="assigned") >= 1


def _phase(process: StreamerProcess) -> str:
    if process.value("sheetbreak_rebalances_total", kind="assigned") < 1:
        return "joining"
    if process.value("sheetbreak_rows_consumed_total") < 1:
        return "rebuilding"
    return "scoring"


@dataclass(frozen=True)
class FieldCheck:
    """Alerts of a run against the reference's, each field compared."""

    compared: int
    lost: int
    extra: int
    repeated: int
    differing: dict[str, int]


def compare(got: list[dict[str, Any]], reference: list[dict[str, Any]]) -> FieldCheck:
    """By alert_id; every field but :data:`WALL_CLOCK_FIELDS`, copies included."""
    expected = {a["alert_id"]: _fields(a) for a in reference}
    assert len(expected) == len(reference), "the reference run repeated an alert"
    differing: Counter[str] = Counter()
    for alert in got:
        want = expected.get(alert["alert_id"])
        if want is not None:
            mine = _fields(alert)
            differing.update(k for k in want.keys() | mine.keys() if mine.get(k) != want.get(k))
    ids = Counter(a["alert_id"] for a in got)
    return FieldCheck(
        compared=len(expected.keys() & ids.keys()),
        lost=len(expected.keys() - ids.keys()),
        extra=len(ids.keys() - expected.keys()),
        repeated=sum(n - 1 for n in ids.values()),
        differing=dict(differing),
    )


def _fields(alert: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in alert.items() if k not in WALL_CLOCK_FIELDS}
