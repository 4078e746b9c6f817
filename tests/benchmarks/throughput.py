"""End-to-end throughput, latency and memory of one ``streamer run`` process.

    .venv/bin/python tests/benchmarks/throughput.py [--broker kafka|tansu|both]
        [--rows 1000000] [--machines 1000] [--json]

What it does, in one run, all on loopback:

1. trains a reference LSTM autoencoder bundle (59 features, lookback 5, units 5-16-1) for
   one epoch on simulated history (convergence does not matter for speed);
2. for each broker (``--broker both``, the default: the local Apache Kafka, then the
   embedded Tansu), starts it fresh in its own process and pre-produces ``--rows``
   simulated rows of ``--machines`` machines (59 sensors and 2 categoricals each), then
   runs steps 3 to 6 on it;
3. the broker ceiling: a plain consumer reads every row, no processing;
4. throughput: a real ``python -m streamer run`` subprocess (transactions on, the
   default) consumes the backlog; rows scored per second come from its /metrics, CPU
   seconds from /proc/PID/stat, peak resident memory from /proc/PID/status (VmHWM);
5. the broker's own latency at ``--rate``, seen by a plain ``read_committed`` consumer;
6. latency: rows are produced at a steady ``--rate`` for ``--seconds``; each row's latency
   runs from its produce timestamp to the moment the streamer's transaction commits the
   offsets past it (its score is final and any alert is published then). A watcher
   reads the group's committed offsets every few milliseconds, so each figure is late by
   at most one watch period plus one offset fetch: an upper bound, never flattered. On
   Tansu the consumers get ``fetch.wait.max.ms=10`` (``--fetch-wait-ms``): Tansu does not
   answer a waiting fetch when records arrive, so librdkafka's default of 500 ms would be
   the latency floor there; Kafka answers a waiting fetch as soon as data is there, so it
   keeps librdkafka's default, as a production consumer would;
7. the naive path: the reference notebooks' one ``model.predict`` per row, on a bounded
   number of rows;
8. memory: windows of ``--memory-machines`` machines with the model loaded, in a fresh
   process.

Not collected by pytest (its name does not start with ``test_``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from confluent_kafka import Consumer, Producer, TopicPartition

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from streamer import quiet_tf  # noqa: E402
from streamer.broker import EmbeddedBroker  # noqa: E402
from streamer.simulate import MachineSimulator, PlantParams  # noqa: E402

PARTITIONS = 4
TOPIC, ALERTS, DLQ = "bench-sensors", "bench-breaks", "bench-dlq"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- the bundle


def build_bundle(registry: Path) -> Path:
    """A real LSTM bundle: one epoch on two simulated machines' three days."""
    from streamer.simulate import simulate_history  # noqa: PLC0415
    from trainer.data import LABEL, MACHINE, TIME, Table  # noqa: PLC0415
    from trainer.fit import FitSettings, fit  # noqa: PLC0415
    from trainer.models import ModelConfig  # noqa: PLC0415

    history = simulate_history(PlantParams.load(), machines=2, days=3, seed=5)
    frame = history.rename(columns={"ts": TIME, "break": LABEL, "machine_id": MACHINE})
    sensors = tuple(c for c in frame.columns if c not in (TIME, LABEL, MACHINE))
    table = Table(frame=frame, sensors=sensors, sources=("simulated",))
    settings = FitSettings(
        data=(), registry=registry, model=ModelConfig(kind="lstm", epochs=1), progress=False
    )
    return fit(settings, table=table).bundle


# ---------------------------------------------------------------------------- rows


class RowSource:
    """Simulated rows encoded straight from the simulator's arrays, in time order."""

    def __init__(self, machines: int, seed: int = 11) -> None:
        params = PlantParams.load()
        self.sim = MachineSimulator(params, machines=machines, seed=seed, start="2026-01-01")
        self.names = list(params.sensors)
        self.keys = [m.encode() for m in self.sim.machine_ids]
        self.heads = [b'{"machine_id":"' + k + b'","ts":' for k in self.keys]
        self._pending: deque[tuple[bytes, bytes]] = deque()

    def _refill(self) -> None:
        block = self.sim.block(min(self.sim.block_steps, 64))
        names = self.names
        for t, ts in enumerate(block.ts_ms.tolist()):
            stamp = str(ts).encode()
            values = block.values[t].tolist()
            present = block.present[t].tolist()
            breaks = block.breaks[t].tolist()
            for m, here in enumerate(present):
                if not here:
                    continue
                body = orjson.dumps(dict(zip(names, values[m], strict=True)))
                value = b"".join(
                    (
                        self.heads[m],
                        stamp,
                        b',"values":',
                        body,
                        b',"break":',
                        b"1}" if breaks[m] else b"0}",
                    )
                )
                self._pending.append((self.keys[m], value))

    def prepare(self, n: int) -> None:
        """Encode at least ``n`` rows ahead, so a timed phase does no encoding of its own."""
        while len(self._pending) < n:
            self._refill()

    def take(self, n: int) -> list[tuple[bytes, bytes]]:
        """The next ``n`` rows as (key, value)."""
        while len(self._pending) < n:
            self._refill()
        return [self._pending.popleft() for _ in range(n)]


def produce_backlog(bootstrap: str, source: RowSource, rows: int) -> float:
    """Produce ``rows`` rows as fast as the broker takes them; returns seconds."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 20,
            "batch.size": 1_000_000,
            "queue.buffering.max.messages": 500_000,
            "queue.buffering.max.kbytes": 1_000_000,
        }
    )
    started = time.perf_counter()
    sent = 0
    while sent < rows:
        for key, value in source.take(min(20_000, rows - sent)):
            while True:
                try:
                    producer.produce(TOPIC, key=key, value=value)
                    break
                except BufferError:
                    producer.poll(0.05)
        sent = min(rows, sent + 20_000)
        producer.poll(0)
        say(f"  produced {sent:,} rows")
    assert producer.flush(120) == 0, "the backlog was not fully delivered"
    return time.perf_counter() - started


# ---------------------------------------------------------------------------- ceiling


def broker_ceiling(bootstrap: str, rows: int) -> float:
    """Rows per second a plain consumer reads from the broker, no processing."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-ceiling-{time.time_ns()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
        }
    )
    consumer.subscribe([TOPIC])
    count, started = 0, None
    deadline = time.monotonic() + 600
    try:
        while count < rows and time.monotonic() < deadline:
            batch = consumer.consume(10_000, 0.5)
            good = sum(1 for m in batch if m.error() is None)
            if good and started is None:
                started = time.perf_counter()
            count += good
    finally:
        consumer.close()
    assert started is not None and count >= rows, f"the ceiling reader got {count} rows"
    return count / (time.perf_counter() - started)


# ---------------------------------------------------------------------------- the streamer


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class StreamerProcess:
    """``python -m streamer run`` in a child process, watched through /metrics and /proc."""

    def __init__(self, bootstrap: str, registry: Path, group: str, extra: list[str]) -> None:
        self.port = free_port()
        self.log = tempfile.NamedTemporaryFile(prefix="bench-streamer-", suffix=".log")  # noqa: SIM115
        command = [
            sys.executable,
            "-m",
            "streamer",
            "run",
            "--bootstrap-servers",
            bootstrap,
            "--registry",
            str(registry),
            "--topic",
            TOPIC,
            "--alerts-topic",
            ALERTS,
            "--dlq-topic",
            DLQ,
            "--group-id",
            group,
            "--instance-id",
            "bench",
            "--metrics-port",
            str(self.port),
            "--session-timeout-ms",
            "6000",
            *extra,
        ]
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        self.process = subprocess.Popen(
            command, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT, env=env
        )

    def metrics(self) -> dict[str, float]:
        """Every sample of /metrics by its full name with labels."""
        url = f"http://127.0.0.1:{self.port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as reply:
            text = reply.read().decode()
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    def value(self, name: str) -> float:
        try:
            return self.metrics().get(name, 0.0)
        except OSError:
            return -1.0

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def peak_rss_mib(self) -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) / 1024

    def wait_ready(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the streamer exited:\n{self.tail()}")
            if self.value("sheetbreak_rows_consumed_total") >= 0:
                return
            time.sleep(0.5)
        raise RuntimeError(f"the streamer's /metrics did not answer:\n{self.tail()}")

    def tail(self) -> str:
        return Path(self.log.name).read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.log.close()


def throughput(streamer: StreamerProcess, rows: int) -> dict[str, float]:
    """Consume the backlog; rates over the time from the first consumed row to the last."""
    samples: list[tuple[float, float, float, float]] = []
    deadline = time.monotonic() + 1800
    last_print = 0.0
    while time.monotonic() < deadline:
        m = streamer.metrics()
        now = time.perf_counter()
        consumed = m.get("sheetbreak_rows_consumed_total", 0.0)
        scored = m.get("sheetbreak_rows_scored_total", 0.0)
        samples.append((now, consumed, scored, streamer.cpu_seconds()))
        if now - last_print > 5:
            say(f"  consumed {consumed:,.0f} of {rows:,}")
            last_print = now
        if consumed >= rows:
            break
        # The embedded broker may hold back the tail of the last record batch from
        # read_committed readers until more arrives: stop once it has been still for 5 s.
        still = [c for _, c, _, _ in samples[-26:]]
        if consumed >= 0.999 * rows and len(still) == 26 and still[0] == consumed:
            samples = samples[: len(samples) - 25]
            break
        if streamer.process.poll() is not None:
            raise RuntimeError(f"the streamer exited:\n{streamer.tail()}")
        time.sleep(0.2)
    first = next(i for i, s in enumerate(samples) if s[1] > 0)
    # The sample just before the first consumed row bounds the start from below.
    t0, c0, s0, cpu0 = samples[max(0, first - 1)]
    t1, c1, s1, cpu1 = samples[-1]
    return {
        "rows_per_second": (s1 - s0) / (t1 - t0),
        "consumed_per_second": (c1 - c0) / (t1 - t0),
        "cpu_seconds_per_million_rows": (cpu1 - cpu0) / (c1 - c0) * 1e6,
        "cpu_cores": (cpu1 - cpu0) / (t1 - t0),
        "rows_scored": s1,
        "seconds": t1 - t0,
    }


# ---------------------------------------------------------------------------- latency


class CommitWatcher(threading.Thread):
    """Reads the group's committed offsets every ``period`` seconds, with the wall time."""

    def __init__(self, bootstrap: str, group: str, period: float = 0.005) -> None:
        super().__init__(daemon=True)
        # read_uncommitted: OffsetFetch then returns the last committed offsets at once.
        # A read_committed client asks for stable offsets, and while the streamer's next
        # transaction holds pending offsets Kafka answers UNSTABLE_OFFSET_COMMIT and the
        # client retries: back-to-back transactions would hide every commit for 100 ms or
        # more, and the watcher would measure its own retries, not the streamer.
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": group,
                "enable.auto.commit": False,
                "isolation.level": "read_uncommitted",
            }
        )
        self.period = period
        self.snapshots: list[tuple[float, list[int]]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        partitions = [TopicPartition(TOPIC, p) for p in range(PARTITIONS)]
        while not self.halt.is_set():
            committed = self.consumer.committed(partitions, 10)
            now = time.time()
            self.snapshots.append((now, [tp.offset for tp in committed]))
            time.sleep(self.period)
        self.consumer.close()


def pace(
    producer: Producer,
    source: RowSource,
    rate: float,
    done: Any,
    on_delivery: Any = None,
    tick: float = 0.01,
) -> int:
    """Produce at ``rate`` rows per second, a tick's rows at a time, until ``done(sent)``."""
    per_tick = rate * tick
    started = time.perf_counter()
    sent = 0
    while not done(sent):
        due = int((time.perf_counter() - started) / tick * per_tick + per_tick)
        if due > sent:
            for key, value in source.take(due - sent):
                if on_delivery is None:
                    producer.produce(TOPIC, key=key, value=value)
                else:
                    producer.produce(TOPIC, key=key, value=value, on_delivery=on_delivery)
            sent = due
        producer.poll(0)
        time.sleep(max(0.0, started + (sent / per_tick) * tick - time.perf_counter()))
    return sent


def latency(
    bootstrap: str, group: str, source: RowSource, rate: float, seconds: float
) -> dict[str, Any]:
    """Per-row latency at a steady rate: produce timestamp to the commit of its offset."""
    delivered: list[tuple[int, int, int]] = []

    def on_delivery(error: Any, message: Any) -> None:
        if error is None:
            delivered.append((message.partition(), message.offset(), message.timestamp()[1]))

    source.prepare(int(rate * (seconds + 15)))
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1})
    watcher = CommitWatcher(bootstrap, group)
    watcher.start()
    total = int(rate * seconds)
    started = time.perf_counter()
    pace(producer, source, rate, lambda sent: sent >= total, on_delivery)
    producer.flush(30)
    produce_seconds = time.perf_counter() - started
    ends: dict[int, int] = {}
    for p, o, _ in delivered:
        ends[p] = max(ends.get(p, -1), o + 1)
    deadline = time.monotonic() + 60

    def committed_all(_: int) -> bool:
        if time.monotonic() > deadline:
            return True
        last = watcher.snapshots[-1][1] if watcher.snapshots else None
        return last is not None and all(last[p] >= end for p, end in ends.items())

    # The load goes on (unmeasured) until every measured row is committed, so the last
    # measured rows see the same traffic as the others.
    pace(producer, source, rate, committed_all)
    producer.flush(30)
    watcher.halt.set()
    watcher.join(15)
    times = np.array([s[0] for s in watcher.snapshots])
    committed = np.array([s[1] for s in watcher.snapshots])
    rows = np.array(delivered, dtype=np.int64)
    lat = np.full(len(rows), np.nan)
    for p in range(PARTITIONS):
        mine = rows[:, 0] == p
        # The first snapshot whose committed offset is past the row's offset.
        first = np.searchsorted(committed[:, p], rows[mine, 1], side="right")
        seen = first < len(times)
        out = np.full(mine.sum(), np.nan)
        out[seen] = times[first[seen]] - rows[mine, 2][seen] / 1000
        lat[mine] = out
    done = lat[np.isfinite(lat)]
    gaps = np.diff(times)
    return {
        "rows": len(rows),
        "uncommitted": int(np.isnan(lat).sum()),
        "achieved_rate": len(rows) / produce_seconds,
        "p50_ms": float(np.percentile(done, 50) * 1000),
        "p99_ms": float(np.percentile(done, 99) * 1000),
        "max_ms": float(done.max() * 1000),
        "watch_period_ms": float(np.median(gaps) * 1000) if len(gaps) else float("nan"),
    }


def broker_latency(
    bootstrap: str, source: RowSource, rate: float, seconds: float, fetch_wait_ms: int
) -> dict[str, float]:
    """The broker's own latency at ``rate``: produce timestamp to a plain ``read_committed``
    consumer receiving the row (no processing, no commit), with the streamer's fetch wait."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-floor-{time.time_ns()}",
            "auto.offset.reset": "latest",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "session.timeout.ms": 6000,
            **({"fetch.wait.max.ms": fetch_wait_ms} if fetch_wait_ms else {}),
        }
    )
    assigned = threading.Event()
    consumer.subscribe([TOPIC], on_assign=lambda c, parts: assigned.set())
    deadline = time.monotonic() + 60
    while not assigned.is_set() and time.monotonic() < deadline:
        consumer.consume(100, 0.2)
    consumer.consume(100_000, 1.0)  # whatever is still arriving from before
    seen: list[float] = []
    halt = threading.Event()

    def read() -> None:
        while not halt.is_set():
            for message in consumer.consume(10_000, 0.05):
                if message.error() is None:
                    seen.append(time.time() - message.timestamp()[1] / 1000)

    total = int(rate * seconds)
    source.prepare(total)
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1})
    sent = pace(producer, source, rate, lambda n: n >= total)
    producer.flush(30)
    time.sleep(2)
    halt.set()
    reader.join(10)
    consumer.close()
    lat = np.array(seen) * 1000
    return {
        "rows": sent,
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
        "max_ms": float(lat.max()),
    }


# ---------------------------------------------------------------------------- naive path


def naive(bundle: Path, source: RowSource, rows: int) -> float:
    """The notebooks' way: decode a row, keep its window, ``model.predict`` on that one."""
    keras = quiet_tf.keras()

    from streamer.bundle import load_bundle  # noqa: PLC0415

    loaded = load_bundle(bundle)
    model = keras.saving.load_model(loaded.model_path, compile=False, safe_mode=True)
    names = loaded.spec.feature_names
    lookback = loaded.lookback
    windows: dict[str, deque[np.ndarray]] = {}
    mean, scale = loaded.scaler.mean, loaded.scaler.scale
    scored = 0
    started = None
    while scored < rows:
        for _, value in source.take(1000):
            row = orjson.loads(value)
            vector = np.array([row["values"][n] for n in names], np.float32)
            window = windows.setdefault(row["machine_id"], deque(maxlen=lookback))
            window.append((vector - mean) / scale)
            if len(window) < lookback:
                continue
            if started is None:
                started = time.perf_counter()
            x = np.stack(window)[None]
            recon = model.predict(x, verbose=0)
            float(np.mean((x[0, -1] - recon[0, -1]) ** 2))
            scored += 1
            if scored >= rows:
                break
    assert started is not None
    return rows / (time.perf_counter() - started)


# ---------------------------------------------------------------------------- memory


class BenchMessage:
    """The parts of a Kafka message the pipeline reads, for runs without a broker."""

    __slots__ = ("_key", "_offset", "_value")

    def __init__(self, key: bytes, value: bytes, offset: int) -> None:
        self._key, self._value, self._offset = key, value, offset

    def key(self) -> bytes:
        return self._key

    def value(self) -> bytes:
        return self._value

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset


def memory_child(bundle: Path, machines: int) -> None:
    """Fill windows of ``machines`` machines with the model loaded; print RSS as JSON."""
    from streamer.machines import DataQuality, MachineWindows  # noqa: PLC0415
    from streamer.pipeline import Model, process  # noqa: PLC0415

    model = Model.load(bundle)
    b = model.bundle
    gap = int(b.max_gap_minutes * 60_000)
    windows = MachineWindows(b.spec, b.lookback, DataQuality(gap, gap, 0.5))
    source = RowSource(1000, seed=3)

    # Rows of 1,000 simulated machines renamed into ``machines`` distinct ones.
    base = [orjson.loads(v) for _, v in source.take(1000 * (b.lookback + 1))]
    base.sort(key=lambda row: (row["machine_id"], row["ts"]))
    by_machine: dict[str, list[dict[str, Any]]] = {}
    for row in base:
        by_machine.setdefault(row["machine_id"], []).append(row)
    templates = [rows[: b.lookback] for rows in by_machine.values() if len(rows) >= b.lookback]
    scored = 0
    for start in range(0, machines, 1000):
        batch = []
        for m in range(start, min(machines, start + 1000)):
            name = f"M-{m:06d}"
            for row in templates[m % len(templates)]:
                value = orjson.dumps({**row, "machine_id": name})
                batch.append(BenchMessage(name.encode(), value, 0))
        scored += len(process(model, windows, batch, 65_536, 0).scored)
    status = Path("/proc/self/status").read_text()
    rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024
    hwm = int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) / 1024
    print(json.dumps({"machines": len(windows), "scored": scored, "rss": rss, "hwm": hwm}))


def memory(bundle: Path, machines: int) -> dict[str, float]:
    result = subprocess.run(
        [
            sys.executable,
            __file__,
            "--memory-child",
            str(bundle),
            "--memory-machines",
            str(machines),
        ],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="backlog rows to score")
    parser.add_argument("--machines", type=int, default=1000, help="simulated machines")
    parser.add_argument("--rate", type=float, default=5000, help="rows/s of the latency phase")
    parser.add_argument("--seconds", type=float, default=25, help="length of the latency phase")
    parser.add_argument("--naive-rows", type=int, default=200, help="rows of the naive path")
    parser.add_argument("--memory-machines", type=int, default=100_000, help="windows to hold")
    parser.add_argument("--no-transactions", action="store_true", help="at-least-once streamer")
    parser.add_argument(
        "--broker",
        choices=("kafka", "tansu", "both"),
        default="both",
        help="the local Apache Kafka, the embedded Tansu, or both one after the other",
    )
    parser.add_argument(
        "--fetch-wait-ms",
        type=int,
        default=None,
        help="the consumers' fetch.wait.max.ms (default: 10 on Tansu, librdkafka's 500 on "
        "Kafka; 0: librdkafka's default everywhere)",
    )
    parser.add_argument("--streamer-arg", action="append", default=[], help="extra run flag")
    parser.add_argument("--registry", type=Path, help="use this registry's current bundle")
    parser.add_argument("--json", action="store_true", help="end with one JSON line per broker")
    parser.add_argument("--memory-child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child is not None:
        memory_child(args.memory_child, args.memory_machines)
        return 0

    kinds = ("kafka", "tansu") if args.broker == "both" else (args.broker,)
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        registry = args.registry or Path(tmp) / "registry"
        if args.registry is None:
            say("training a one-epoch reference LSTM bundle on simulated history ...")
            build_bundle(registry)
        version = (registry / "CURRENT").read_text().strip()
        bundle = registry / version
        per_broker = {kind: broker_phases(args, kind, registry) for kind in kinds}
        say(f"naive path: one model.predict per row for {args.naive_rows} rows ...")
        naive_rate = naive(bundle, RowSource(args.machines, seed=5), args.naive_rows)
        say(f"memory: windows of {args.memory_machines:,} machines with the model loaded ...")
        held = memory(bundle, args.memory_machines)
    report(args, version, per_broker, naive_rate, held)
    return 0


def fetch_wait(args: argparse.Namespace, kind: str) -> int:
    """The consumers' ``fetch.wait.max.ms`` on a broker kind (0: librdkafka's default).

    Tansu does not answer a waiting fetch when records arrive, so librdkafka's 500 ms would
    be its latency floor; Kafka answers as soon as data is there, so it keeps the default.
    """
    if args.fetch_wait_ms is not None:
        return args.fetch_wait_ms
    return 10 if kind == "tansu" else 0


def broker_phases(args: argparse.Namespace, kind: str, registry: Path) -> dict[str, Any]:
    """Every broker-bound figure on one fresh broker of ``kind``."""
    out: dict[str, Any] = {"fetch_wait_ms": fetch_wait(args, kind)}
    extra = [*args.streamer_arg] + (["--no-transactions"] if args.no_transactions else [])
    if out["fetch_wait_ms"]:
        extra += ["--kafka-config", f"fetch.wait.max.ms={out['fetch_wait_ms']}"]
    source = RowSource(args.machines)
    started = time.perf_counter()
    with EmbeddedBroker(kind) as broker:
        out["start_seconds"] = time.perf_counter() - started
        bootstrap = broker.bootstrap_servers
        broker.create_topics({TOPIC: PARTITIONS, ALERTS: 1, DLQ: 1})
        say(f"{kind} at {bootstrap} (pid {broker.pid}); producing {args.rows:,} rows ...")
        out["produce_seconds"] = produce_backlog(bootstrap, source, args.rows)
        say(f"{kind} ceiling: a plain consumer reads everything ...")
        out["ceiling"] = broker_ceiling(bootstrap, args.rows)
        say(f"{kind} latency: a plain consumer at {args.rate:,.0f} rows/s ...")
        out["floor"] = broker_latency(
            bootstrap, source, args.rate, min(args.seconds, 10), out["fetch_wait_ms"]
        )
        group = f"bench-streamer-{time.time_ns()}"
        say(f"starting python -m streamer run on {kind} ...")
        streamer = StreamerProcess(bootstrap, registry, group, extra)
        try:
            streamer.wait_ready()
            out["throughput"] = throughput(streamer, args.rows + out["floor"]["rows"])
            say(f"latency phase on {kind}: {args.rate:,.0f} rows/s for {args.seconds:.0f} s ...")
            out["latency"] = latency(bootstrap, group, source, args.rate, args.seconds)
            out["peak_rss_mib"] = streamer.peak_rss_mib()
            out["max_batch_seen"] = batch_histogram(streamer)
        finally:
            streamer.stop()
    return out


def batch_histogram(streamer: StreamerProcess) -> float:
    """Mean windows per model call over the whole run."""
    m = streamer.metrics()
    count = m.get("sheetbreak_inference_batch_size_count", 0.0)
    return m.get("sheetbreak_inference_batch_size_sum", 0.0) / count if count else 0.0


def broker_lines(args: argparse.Namespace, r: dict[str, Any], naive_rate: float) -> list[Any]:
    """The figures of one broker, as (name, value) lines."""
    t, lat, fl = r["throughput"], r["latency"], r["floor"]
    wait = f"{r['fetch_wait_ms']} ms" if r["fetch_wait_ms"] else "librdkafka's default (500 ms)"
    return [
        ("broker started in", f"{r['start_seconds']:.1f} s"),
        ("pre-produced in", f"{r['produce_seconds']:.1f} s"),
        ("consumers' fetch.wait.max.ms", wait),
        ("broker ceiling (plain consumer)", f"{r['ceiling']:,.0f} rows/s"),
        ("rows scored per second", f"{t['rows_per_second']:,.0f} rows/s"),
        ("rows consumed per second", f"{t['consumed_per_second']:,.0f} rows/s"),
        ("CPU per million rows", f"{t['cpu_seconds_per_million_rows']:,.1f} s"),
        ("CPU cores busy (streamer)", f"{t['cpu_cores']:.2f}"),
        ("mean windows per model call", f"{r['max_batch_seen']:,.0f}"),
        ("peak RSS (streamer)", f"{r['peak_rss_mib']:,.0f} MiB"),
        (
            f"latency at {args.rate:,.0f} rows/s",
            f"p50 {lat['p50_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms, max {lat['max_ms']:.1f} ms"
            f" ({lat['rows']:,} rows at {lat['achieved_rate']:,.0f}/s, watched every "
            f"{lat['watch_period_ms']:.1f} ms, {lat['uncommitted']} uncommitted)",
        ),
        (
            "broker alone at the same rate",
            f"p50 {fl['p50_ms']:.1f} ms, p99 {fl['p99_ms']:.1f} ms, max {fl['max_ms']:.1f} ms"
            " (plain read_committed consumer, no processing)",
        ),
        ("ratio to naive", f"{t['rows_per_second'] / naive_rate:,.0f}x"),
    ]


def report(
    args: argparse.Namespace,
    version: str,
    per_broker: dict[str, dict[str, Any]],
    naive_rate: float,
    mem: dict[str, float],
) -> None:
    mode = "at-least-once" if args.no_transactions else "exactly-once (transactions)"
    names = {"kafka": "local Apache Kafka", "tansu": "embedded Tansu"}
    common = [
        ("backlog", f"{args.rows:,} rows, {args.machines:,} machines, bundle {version}"),
        ("streamer delivery", mode),
        ("naive one-row model.predict", f"{naive_rate:,.1f} rows/s"),
        (
            f"memory, {mem['machines']:,} machines' windows",
            f"RSS {mem['rss']:,.0f} MiB (peak {mem['hwm']:,.0f} MiB) with the model loaded",
        ),
    ]
    sections = [("", common)]
    sections += [(names[k], broker_lines(args, r, naive_rate)) for k, r in per_broker.items()]
    width = max(len(k) for _, lines in sections for k, _ in lines)
    for title, lines in sections:
        print(f"\n{title}" if title else "")
        for key, value in lines:
            print(f"  {key:<{width}}  {value}")
    if args.json:
        for kind, r in per_broker.items():
            print(json.dumps(summary_json(args, kind, r, naive_rate, mem)))


def summary_json(
    args: argparse.Namespace, kind: str, r: dict[str, Any], naive_rate: float, mem: Any
) -> dict[str, Any]:
    """One broker's figures as one JSON object."""
    t, lat, fl = r["throughput"], r["latency"], r["floor"]
    return {
        "broker": kind,
        "broker_start_seconds": round(r["start_seconds"], 1),
        "rows_per_second": round(t["rows_per_second"], 1),
        "consumed_per_second": round(t["consumed_per_second"], 1),
        "cpu_seconds_per_million_rows": round(t["cpu_seconds_per_million_rows"], 2),
        "peak_rss_mib": round(r["peak_rss_mib"], 1),
        "p50_latency_ms": round(lat["p50_ms"], 2),
        "p99_latency_ms": round(lat["p99_ms"], 2),
        "max_latency_ms": round(lat["max_ms"], 2),
        "latency_rate_rows_per_second": round(lat["achieved_rate"], 1),
        "naive_rows_per_second": round(naive_rate, 2),
        "ratio_to_naive": round(t["rows_per_second"] / naive_rate, 1),
        "broker_ceiling_rows_per_second": round(r["ceiling"], 1),
        "broker_p99_latency_ms": round(fl["p99_ms"], 2),
        "fetch_wait_max_ms": r["fetch_wait_ms"],
        "memory_machines": mem["machines"],
        "memory_rss_mib": round(mem["rss"], 1),
        "transactions": not args.no_transactions,
        "rows": args.rows,
        "machines": args.machines,
    }


if __name__ == "__main__":
    sys.exit(main())
