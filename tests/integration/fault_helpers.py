"""Building blocks of the fault and soak tests: long runs of rows, streamer processes, checks."""

from __future__ import annotations

import functools
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from confluent_kafka import Consumer, Producer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families
from stream_helpers import START_MS, STEP_MS, Scenario, alerts_of, build_scenario, read_all

ROOT = Path(__file__).resolve().parents[2]
GAP_MS = 20 * 60_000  # longer than the bundle's gap limit: each cycle starts a fresh window
HTTP_TIMEOUT = 3.0


_SCENARIOS: dict[int, Scenario] = {}


def shared_scenario(factory: Any) -> Scenario:
    """One scenario (a fitted bundle) per session's temporary-path factory, for every module
    that asks: fitting takes a while on a busy machine."""
    key = id(factory)
    if key not in _SCENARIOS:
        _SCENARIOS[key] = build_scenario(factory.mktemp("faults-scenario"))
    return _SCENARIOS[key]


def cycle_rows(
    scenario: Scenario,
    machines: int,
    cycles: int,
    seed: int,
    drift_share: float = 0.35,
    growth: float = 0.0,
) -> list[dict[str, Any]]:
    """Rows of ``machines`` in time order over ``cycles`` runs of the normal stretch.

    In each cycle a seeded share of the machines drifts over its last six rows and breaks
    on the last; a gap longer than the bundle's gap limit separates the cycles, so every
    machine starts each cycle with a fresh window and episodes spread over the whole run.
    With ``growth``, the stretch's spread widens by that share each cycle, so the later
    cycles score ever higher than the first.
    """
    rng = random.Random(seed)
    length = len(scenario.normal)
    centre = scenario.normal.mean(axis=0)
    push = np.zeros(len(scenario.sensors))
    push[:20:2], push[1:20:2] = 1.0, -1.0
    push[:20] *= scenario.scale[:20]
    rows: list[dict[str, Any]] = []
    for cycle in range(cycles):
        drifting = {m for m in range(machines) if rng.random() < drift_share} or {cycle % machines}
        base = START_MS + cycle * (length * STEP_MS + GAP_MS)
        for i in range(length):
            for m in range(machines):
                values = centre + (scenario.normal[i] - centre) * (1.0 + growth * cycle)
                drifts = m in drifting and i >= length - 7
                if drifts:
                    values += (i - (length - 8)) * 2.0 * push
                rows.append(
                    {
                        "machine_id": f"M-{m + 1:02d}",
                        "ts": base + i * STEP_MS,
                        "values": dict(zip(scenario.sensors, values.tolist(), strict=True)),
                        "break": int(m in drifting and i == length - 1),
                    }
                )
    return rows


def free_port() -> int:
    """A loopback port free at the time of asking."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# Producing at a steady pace ------------------------------------------------------------


class Pacer(threading.Thread):
    """Produces rows keyed by machine at ``rate`` rows per second from a thread.

    ``offsets[i]`` is where row ``i`` landed (partition, offset), once delivered. Sending
    stops before each row index in ``holds`` until ``release()`` is called once more.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        rows: list[dict[str, Any]],
        rate: float,
        holds: tuple[int, ...] = (),
    ) -> None:
        super().__init__(name="pacer", daemon=True)
        self.topic, self.rows, self.rate, self.holds = topic, rows, rate, set(holds)
        self.producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "linger.ms": 5,
                "message.timeout.ms": 300_000,
                "enable.idempotence": True,  # retried across an outage: once, in order
            }
        )
        self.sent = 0
        self.failed = 0
        self.offsets: dict[int, tuple[int, int]] = {}
        self.lock = threading.Lock()  # delivery callbacks write offsets; tests read them
        self.halt = threading.Event()
        self.released = threading.Semaphore(0)
        self.error: BaseException | None = None

    def _delivered(self, index: int, error: Any, message: Any) -> None:
        if error is not None:
            self.failed += 1
            return
        with self.lock:
            self.offsets[index] = (message.partition(), message.offset())

    def release(self, times: int = 1) -> None:
        """Let the pacer pass the next hold (or ``times`` holds)."""
        if times > 0:
            self.released.release(times)

    def run(self) -> None:
        """Send every row on schedule, then wait for every delivery."""
        try:
            started = time.monotonic()
            for index, row in enumerate(self.rows):
                if index in self.holds:
                    while not self.released.acquire(timeout=0.05) and not self.halt.is_set():
                        self.producer.poll(0)
                    started = time.monotonic() - index / self.rate
                if self.halt.is_set():
                    return
                delay = started + index / self.rate - time.monotonic()
                if delay > 0:
                    self.producer.poll(delay)
                self.producer.produce(
                    self.topic,
                    key=row["machine_id"].encode(),
                    value=orjson.dumps(row),
                    on_delivery=functools.partial(self._delivered, index),
                )
                self.sent += 1
                self.producer.poll(0)
            self.failed += self.producer.flush(300)
        except BaseException as exc:
            self.error = exc
            raise

    def ends(self, before: int | None = None) -> dict[int, int]:
        """Per partition, one past the offset of the last delivered row before ``before``."""
        out: dict[int, int] = {}
        with self.lock:
            delivered = list(self.offsets.items())
        for index, (partition, offset) in delivered:
            if before is None or index < before:
                out[partition] = max(out.get(partition, 0), offset + 1)
        return out

    def finish(self, timeout: float) -> dict[int, int]:
        """Wait for the last delivery; the end offsets per partition."""
        self.release(len(self.holds))
        self.join(timeout)
        assert not self.is_alive(), f"the producer did not finish within {timeout} s"
        assert self.error is None, f"the producer failed: {self.error!r}"
        assert self.failed == 0, f"{self.failed} rows were not delivered"
        assert self.sent == len(self.rows) == len(self.offsets)
        return self.ends()


# The group's progress --------------------------------------------------------------------


class GroupWatcher:
    """Reads a group's committed offsets (a consumer that never joins the group)."""

    def __init__(self, bootstrap: str, group: str, topic: str, partitions: int) -> None:
        self.topic, self.partitions = topic, partitions
        self.consumer = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False}
        )

    def committed(self) -> dict[int, int]:
        """Committed offset per partition (-1 when none yet)."""
        wanted = [TopicPartition(self.topic, p) for p in range(self.partitions)]
        try:
            return {tp.partition: tp.offset for tp in self.consumer.committed(wanted, 5.0)}
        except Exception:
            return {}

    def reached(self, ends: dict[int, int]) -> bool:
        """Whether every partition's committed offset is at its end."""
        now = self.committed()
        return bool(now) and all(now.get(p, -1) >= end for p, end in ends.items())

    def close(self) -> None:
        """Close the consumer."""
        self.consumer.close()


# A ``python -m streamer run`` process ----------------------------------------------------


@dataclass
class Sample:
    """Resources of a process at one moment."""

    seconds: float
    rss_kib: int
    fds: int
    threads: int


def sample_process(pid: int, since: float) -> Sample:
    """Resident memory, open files and threads of ``pid`` from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    rss = re.search(r"VmRSS:\s+(\d+)", status)
    threads = re.search(r"Threads:\s+(\d+)", status)
    assert rss is not None and threads is not None
    fds = sum(1 for _ in Path(f"/proc/{pid}/fd").iterdir())
    return Sample(time.monotonic() - since, int(rss.group(1)), fds, int(threads.group(1)))


@dataclass
class StreamerProcess:
    """``python -m streamer run`` in a child process, watched through its HTTP routes."""

    bootstrap: str
    registry: Path
    topic: str
    alerts_topic: str
    dlq_topic: str
    group: str
    instance: str
    extra: tuple[str, ...] = ()
    port: int = field(default_factory=free_port)

    def __post_init__(self) -> None:
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in close()
            prefix=f"streamer-{self.instance}-", suffix=".log"
        )
        command = [
            sys.executable,
            "-m",
            "streamer",
            "run",
            *("--bootstrap-servers", self.bootstrap),
            *("--registry", str(self.registry)),
            *("--topic", self.topic),
            *("--alerts-topic", self.alerts_topic),
            *("--dlq-topic", self.dlq_topic),
            *("--group-id", self.group),
            *("--instance-id", self.instance),
            *("--metrics-port", str(self.port)),
            *("--session-timeout-ms", "6000"),
            *self.extra,
        ]
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        self.process = subprocess.Popen(
            command, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT, env=env
        )

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.process.pid

    def alive(self) -> bool:
        """Whether the child still runs."""
        return self.process.poll() is None

    def get(self, path: str) -> tuple[int, bytes]:
        """Status and body of a GET on the child's server (0 when it does not answer)."""
        url = f"http://127.0.0.1:{self.port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT) as reply:
                return reply.status, reply.read()
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, exc.read()
        except OSError:
            return 0, b""

    def probe(self, path: str) -> tuple[int, dict[str, Any]]:
        """Status and JSON of /healthz or /readyz."""
        status, body = self.get(path)
        return status, (orjson.loads(body) if status else {})

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample of /metrics, by name and sorted labels ({} when it does not answer)."""
        status, body = self.get("/metrics")
        if status != 200:
            return {}
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body.decode())
            for s in family.samples
        }

    def value(self, name: str, **labels: str) -> float:
        """One sample (0 when absent, -1 when /metrics does not answer)."""
        samples = self.metrics()
        if not samples:
            return -1.0
        return samples.get((name, tuple(sorted(labels.items()))), 0.0)

    def wait_serving(self, timeout: float) -> None:
        """Wait until /metrics answers (the model is loaded and the loop about to start)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.alive(), f"the streamer exited early:\n{self.tail()}"
            if self.get("/metrics")[0] == 200:
                return
            time.sleep(0.1)
        raise AssertionError(f"the streamer did not serve /metrics in {timeout} s:\n{self.tail()}")

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind, as when a node dies."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)
        self.log.flush()

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait for the exit code (what a rolling restart does)."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
            raise AssertionError(
                f"the streamer ignored SIGTERM for {timeout} s:\n{self.tail()}"
            ) from None

    def tail(self, chars: int = 4000) -> str:
        """The end of the child's log."""
        text = Path(self.log.name).read_text(errors="replace")
        return text[-chars:]

    def log_text(self) -> str:
        """The child's whole log."""
        return Path(self.log.name).read_text(errors="replace")

    def close(self) -> None:
        """Kill the child if it still runs and remove its log."""
        if self.alive():
            self.process.kill()
            self.process.wait(10)
        self.log.close()


# Checking the outcome --------------------------------------------------------------------


@dataclass(frozen=True)
class AlertCheck:
    """What a read_committed reader of the alerts topic saw, against the reference run."""

    distinct: int
    copies: int
    duplicates: int
    missing: frozenset[str]
    extra: frozenset[str]


def identity(alert: dict[str, Any]) -> tuple[str, str, str, str]:
    """What any copy of one alert must agree on, whoever published it and when."""
    return alert["alert_id"], alert["status"], alert["machine_id"], alert["ts"]


def committed_alerts(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    """Every alert a read_committed consumer of ``topic`` sees, in order."""
    return alerts_of(read_all(bootstrap, topic, quiet=3.0, timeout=60.0))


def compare_alerts(got: list[dict[str, Any]], reference: list[dict[str, Any]]) -> AlertCheck:
    """Compare by alert_id; copies of one id must be the same event of the same row."""
    by_id: dict[str, set[tuple[str, str, str, str]]] = {}
    for alert in got:
        by_id.setdefault(alert["alert_id"], set()).add(identity(alert))
    differing = {k: v for k, v in by_id.items() if len(v) > 1}
    assert not differing, f"copies of one alert_id disagree: {differing}"
    expected = {identity(a) for a in reference}
    seen = {next(iter(v)) for v in by_id.values()}
    counts = Counter(a["alert_id"] for a in got)
    return AlertCheck(
        distinct=len(by_id),
        copies=len(got),
        duplicates=sum(n - 1 for n in counts.values()),
        missing=frozenset(i[0] for i in expected - seen),
        extra=frozenset(i[0] for i in seen - expected),
    )


# Resources over a long run ---------------------------------------------------------------


@dataclass(frozen=True)
class Trend:
    """How a process's memory, open files and threads moved after its warm-up."""

    samples: int
    rss_start_mib: float
    rss_end_mib: float
    rss_slope_mib_per_hour: float
    fd_growth: int
    thread_growth: int


def trend(samples: list[Sample], warmup_seconds: float) -> Trend:
    """The trend of the samples taken after ``warmup_seconds``.

    RSS: the least-squares slope over the second half (allocators settle in the first);
    open files and threads: the most seen in the last quarter against the most seen in
    the first quarter, so a file or thread open for a moment in both does not count.
    """
    steady = [s for s in samples if s.seconds >= warmup_seconds]
    assert len(steady) >= 8, f"only {len(steady)} samples after the warm-up"
    half = steady[len(steady) // 2 :]
    quarter = max(1, len(steady) // 4)
    hours = np.array([s.seconds for s in half]) / 3600
    rss = np.array([s.rss_kib for s in half]) / 1024
    slope = float(np.polyfit(hours, rss, 1)[0])
    return Trend(
        samples=len(steady),
        rss_start_mib=steady[0].rss_kib / 1024,
        rss_end_mib=steady[-1].rss_kib / 1024,
        rss_slope_mib_per_hour=slope,
        fd_growth=max(s.fds for s in steady[-quarter:]) - max(s.fds for s in steady[:quarter]),
        thread_growth=max(s.threads for s in steady[-quarter:])
        - max(s.threads for s in steady[:quarter]),
    )


def sample_table(samples: list[Sample], consumed: list[float]) -> str:
    """The samples as a fixed-width table, one line each."""
    lines = [f"{'seconds':>8} {'RSS MiB':>8} {'fds':>5} {'threads':>7} {'rows':>10}"]
    for sample, rows in zip(samples, consumed, strict=True):
        lines.append(
            f"{sample.seconds:8.0f} {sample.rss_kib / 1024:8.1f} {sample.fds:5d} "
            f"{sample.threads:7d} {rows:10.0f}"
        )
    return "\n".join(lines)


def simulator(
    bootstrap: str, topic: str, machines: int, rate: float, log: Any, seed: int = 3
) -> subprocess.Popen[bytes]:
    """``python -m streamer simulate``: a plant producing at a steady rate until SIGTERM."""
    command = [
        sys.executable,
        "-m",
        "streamer",
        "simulate",
        *("--bootstrap-servers", bootstrap),
        *("--topic", topic),
        *("--machines", str(machines)),
        *("--rate", str(rate)),
        *("--seed", str(seed)),
    ]
    return subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)


def watch(
    process: StreamerProcess, seconds: float, every: float, report: Any = None
) -> tuple[list[Sample], list[float]]:
    """Sample the process's resources and rows consumed every ``every`` seconds.

    /proc is read before /metrics is asked, so the request's own socket and thread are
    not counted.
    """
    started = time.monotonic()
    samples: list[Sample] = []
    consumed: list[float] = []
    while time.monotonic() - started < seconds:
        due = started + len(samples) * every
        time.sleep(max(0.0, due - time.monotonic()))
        assert process.alive(), f"the streamer exited:\n{process.tail()}"
        samples.append(sample_process(process.pid, started))
        consumed.append(process.value("sheetbreak_rows_consumed_total"))
        if report is not None:
            report(samples[-1], consumed[-1])
    return samples, consumed
