"""The archiver against a real broker: every row once, in its own day, through SIGKILLs."""

import collections
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import orjson
import pyarrow.dataset as ds
import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from prometheus_client import CollectorRegistry
from stream_helpers import archiving

from streamer.archive import Archiver
from streamer.archive_layout import DAY_MS, day_of
from streamer.archive_metrics import ArchiveMetrics
from streamer.archive_settings import ArchiveSettings
from streamer.archive_store import ArchiveStore
from streamer.broker import create_topics
from streamer.health import HealthServer
from streamer.settings import KafkaSettings

pytestmark = pytest.mark.integration
PARTITIONS = 4
ASSIGNED = b"resuming at offset"
START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
ROOT = Path(__file__).resolve().parents[2]


def wait_until(condition, timeout, what):
    """Poll ``condition`` until true; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.2)


def rows_across_midnight(count, machines):
    """Rows of several machines from 23:30 into the next day; every 7th row is six hours late."""
    base = START_MS + 23 * 3_600_000 + 30 * 60_000
    for i in range(count):
        ts = base + (i // machines) * 60_000 - (21_600_000 if i % 7 == 3 else 0)
        values = {f"x{k}": float(i % 97 + k) for k in range(5)}
        yield {"machine_id": f"M-{i % machines:02d}", "ts": ts, "values": values, "break": 0}


class Produced:
    """What a producer delivered: the rows' keys, and the last offset of each partition."""

    def __init__(self):
        self.keys = collections.Counter()
        self.last = {}
        self.delivered = 0

    def send(self, bootstrap, topic, rows, rate=0.0, extra=()):
        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})

        def delivered(error, message):
            assert error is None, error
            self.delivered += 1
            self.last[message.partition()] = max(
                message.offset(), self.last.get(message.partition(), -1)
            )

        started = time.monotonic()
        for n, row in enumerate(rows):
            producer.produce(
                topic, key=row["machine_id"].encode(), value=orjson.dumps(row), callback=delivered
            )
            self.keys[(row["machine_id"], row["ts"])] += 1
            if rate:
                time.sleep(max(0.0, started + n / rate - time.monotonic()))
                producer.poll(0)
        for key, value in extra:
            producer.produce(topic, key=key, value=value, callback=delivered)
        assert producer.flush(30) == 0


_NOT_YET = (
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError._TIMED_OUT,
)


def committed(bootstrap, topic, group):
    """The group's committed offsets; {} while the broker cannot say yet (a coordinator
    that is moving or loading answers with a retriable error, and the caller asks again)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        wanted = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        return {tp.partition: tp.offset for tp in consumer.committed(wanted, timeout=10)}
    except KafkaException as exc:
        error = exc.args[0] if exc.args else None
        if isinstance(error, KafkaError) and (error.retriable() or error.code() in _NOT_YET):
            return {}
        raise
    finally:
        consumer.close()


def archived_keys(root):
    """Keys of every archived row, after checking each sits in the folder of its own day."""
    table = ds.dataset(str(root), format="parquet", partitioning="hive").to_table()
    times = table.column("time").cast("int64").to_pylist()
    folders = table.column("day").cast("string").to_pylist()
    assert [day_of(t) for t in times] == folders
    return collections.Counter(zip(table.column("machine_id").to_pylist(), times, strict=True))


def test_every_row_is_archived_once_in_the_day_of_its_own_time(
    kafka_bootstrap, unique_name, tmp_path
):
    topic, group = unique_name("sensors"), unique_name("archiver")
    create_topics(kafka_bootstrap, {topic: PARTITIONS})
    produced = Produced()
    bad = [
        (b"M-00", b"{not json"),
        (b"M-01", b'{"machine_id": "M-01", "ts": 1, "values": {"x": "hot"}}'),
    ]
    produced.send(kafka_bootstrap, topic, rows_across_midnight(800, 6), extra=bad)
    no_flag = {"machine_id": "M-09", "ts": START_MS + DAY_MS, "values": {"x0": 1.0}}
    produced.send(kafka_bootstrap, topic, [no_flag])
    settings = ArchiveSettings(
        KafkaSettings(kafka_bootstrap),
        str(tmp_path),
        topic,
        group,
        flush_rows=300,
        flush_seconds=1.0,
        session_timeout_ms=6000,
        poll_seconds=0.2,
    )
    registry, stop = CollectorRegistry(), threading.Event()
    metrics = ArchiveMetrics(registry)
    archiver = Archiver(settings, metrics, stop)
    thread = threading.Thread(target=archiver.run, daemon=True)
    with HealthServer("127.0.0.1", 0, registry, archiver.health) as server:
        thread.start()
        try:
            expected = {p: o + 1 for p, o in produced.last.items()}
            wait_until(lambda: committed(kafka_bootstrap, topic, group) == expected, 60, "commits")
            url = f"http://127.0.0.1:{server.port}"
            wait_until(lambda: _status(f"{url}/readyz") == 200, 15, "readiness")
            page = urllib.request.urlopen(f"{url}/metrics", timeout=5).read().decode()
        finally:
            stop.set()
            thread.join(60)
    assert not thread.is_alive()
    keys = archived_keys(tmp_path)
    assert keys == produced.keys and max(keys.values()) == 1
    assert {day_of(t) for _, t in keys} == {"2026-01-01", "2026-01-02"}
    assert "sheetbreak_archive_rows_total 801.0" in page
    assert metrics.value("sheetbreak_archive_rows_skipped_total", reason="invalid_json") == 1
    assert metrics.value("sheetbreak_archive_rows_skipped_total", reason="non_numeric") == 1
    table = ds.dataset(str(tmp_path), partitioning="hive").to_table(columns=["machine_id", "break"])
    flags = dict(
        zip(table.column("machine_id").to_pylist(), table.column("break").to_pylist(), strict=True)
    )
    assert flags["M-09"] is None and flags["M-00"] == 0


def test_a_member_joining_takes_over_at_the_flush_of_the_revoked_one(
    kafka_bootstrap, unique_name, tmp_path
):
    topic, group = unique_name("sensors"), unique_name("archiver")
    create_topics(kafka_bootstrap, {topic: PARTITIONS})
    rows = list(rows_across_midnight(1200, 8))
    produced = Produced()
    produced.send(kafka_bootstrap, topic, rows[:600])
    # Thresholds never reached: only a revocation, or a stop, flushes.
    settings = ArchiveSettings(
        KafkaSettings(kafka_bootstrap),
        str(tmp_path),
        topic,
        group,
        flush_rows=10**6,
        flush_seconds=3600.0,
        session_timeout_ms=6000,
        poll_seconds=0.2,
    )
    with archiving(settings) as first:
        wait_until(lambda: first.writer.pending == 600, 60, "the first member reading")
        with archiving(settings) as second:
            first_half = {p: o + 1 for p, o in produced.last.items()}
            wait_until(
                lambda: committed(kafka_bootstrap, topic, group) == first_half, 60, "a flush"
            )
            assert first.metrics.value("sheetbreak_archive_rows_total") == 600
            wait_until(lambda: first.committed and second.committed, 30, "both assigned")
            assert not set(first.committed) & set(second.committed)
            produced.send(kafka_bootstrap, topic, rows[600:])
            expected = {p: o + 1 for p, o in produced.last.items()}
            wait_until(
                lambda: first.writer.pending + second.writer.pending == 600, 30, "the rest read"
            )
    assert committed(kafka_bootstrap, topic, group) == expected
    keys = archived_keys(tmp_path)
    assert keys == produced.keys and max(keys.values()) == 1


def _status(url):
    try:
        return urllib.request.urlopen(url, timeout=5).status
    except OSError as exc:
        return getattr(exc, "code", None)


def _archiver(bootstrap, topic, group, out, log_path, flush_rows=150):
    command = [
        sys.executable,
        "-m",
        "streamer",
        "archive",
        "--bootstrap-servers",
        bootstrap,
        "--topic",
        topic,
        "--group",
        group,
        "--out",
        str(out),
        "--flush-rows",
        str(flush_rows),
        "--flush-seconds",
        "0.5",
        "--metrics-port",
        "0",
        "--session-timeout-ms",
        "6000",
        "--kafka-config",
        "group.instance.id=archiver-1",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with log_path.open("wb") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)


KILLS = 20
MOMENTS = ("any time", "hidden file written", "renamed, not committed", "any time")
"""When each run is killed: at a random time, or caught inside a flush, before its commit."""


def _kill_at(process, out, moment, rng, offsets):
    """SIGKILL the archiver within a second of its assignment, or once it is caught (frozen by
    SIGSTOP, then checked) with hidden files, or renamed files no commit covers yet; returns
    the files a crash left that the next run must remove."""
    store = ArchiveStore(str(out))
    deadline = time.monotonic() + (rng.uniform(0.0, 1.0) if moment == "any time" else 30.0)
    while moment != "any time" and time.monotonic() < deadline:
        if _exposed(store.list(), moment, offsets(cached=True)):
            process.send_signal(signal.SIGSTOP)
            left = _exposed(store.list(), moment, offsets(cached=False))
            if left:
                process.send_signal(signal.SIGKILL)
                return left
            process.send_signal(signal.SIGCONT)
        time.sleep(0.001)
    time.sleep(max(0.0, deadline - time.monotonic()))
    process.send_signal(signal.SIGKILL)
    return []


def _exposed(files, moment, committed):
    if moment == "hidden file written":
        return [f for f in files if f.temp]
    return [f for f in files if not f.temp and f.first >= max(0, committed.get(f.partition, 0))]


def test_sigkill_and_restart_leave_every_row_exactly_once(kafka_bootstrap, unique_name, tmp_path):
    topic, group = unique_name("sensors"), unique_name("archiver")
    create_topics(kafka_bootstrap, {topic: PARTITIONS})
    out, logs, rng = tmp_path / "archive", tmp_path / "logs", random.Random(6)
    logs.mkdir()
    produced = Produced()
    # Rows keep arriving for as long as 20 kills take, so each run has flushes to be caught in.
    rows, rate = list(rows_across_midnight(4000, 40)), 40.0
    producer = threading.Thread(
        target=produced.send, args=(kafka_bootstrap, topic, rows, rate), daemon=True
    )
    producer.start()
    started, kills, process, at_kill, exposed = time.monotonic(), 0, None, [], 0
    known = {}

    def offsets(cached):
        if not cached:
            known.update(committed(kafka_bootstrap, topic, group))
        return known

    try:
        while kills < KILLS:
            log = logs / f"run-{kills}.log"
            # Flushes of another size: a leftover file would overlap its rewrite, not match it.
            process = _archiver(kafka_bootstrap, topic, group, out, log, 97 + 31 * kills)
            wait_until(lambda path=log: ASSIGNED in path.read_bytes(), 60, f"run {kills} joining")
            moment = MOMENTS[kills % len(MOMENTS)]
            left = _kill_at(process, out, moment, rng, offsets)
            assert left or moment == "any time", f"run {kills} was never caught: {moment}"
            exposed += len(left)
            process.wait(10)
            at_kill.append(produced.delivered)
            kills += 1
        producer.join(max(0.0, started + len(rows) / rate - time.monotonic()) + 60)
        assert not producer.is_alive() and produced.delivered == len(rows)
        log = logs / "final.log"
        process = _archiver(kafka_bootstrap, topic, group, out, log)
        wait_until(lambda: ASSIGNED in log.read_bytes(), 60, "the last run joining")
        expected = {p: o + 1 for p, o in produced.last.items()}
        wait_until(lambda: committed(kafka_bootstrap, topic, group) == expected, 60, "commits")
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        if process is not None and process.poll() is None:
            process.kill()
    keys = archived_keys(out)
    missing, twice = produced.keys - keys, {k for k, n in keys.items() if n > 1}
    text = "".join(p.read_text() for p in logs.iterdir())
    removed = sum(int(n) for n in re.findall(r"\((\d+) uncommitted files removed\)", text))
    print(
        f"\nkill test: {sum(produced.keys.values())} rows produced, {kills} SIGKILLs (rows "
        f"delivered by then: {at_kill}), {sum(keys.values())} rows archived, {len(missing)} "
        f"missing, {len(twice)} duplicated, {exposed} files left uncommitted by kills inside a "
        f"flush, {removed} uncommitted files removed on restarts, "
        f"{len(list(out.rglob('*.parquet')))} files, {time.monotonic() - started:.1f} s"
    )
    assert not missing and not twice and keys == produced.keys
    assert removed >= exposed >= 2 and "NOT committed" not in text
    assert committed(kafka_bootstrap, topic, group) == expected  # every partition's commit kept
