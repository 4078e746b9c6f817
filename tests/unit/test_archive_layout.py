"""The archiver's core: file names, day split, schema, orphan cleanup, flush-then-commit."""

import threading

import orjson
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from prometheus_client import CollectorRegistry

from streamer.archive import Archiver
from streamer.archive_layout import DAY_MS, ArchiveFile, day_of, orphans, parse, resume_offset
from streamer.archive_metrics import ArchiveMetrics
from streamer.archive_settings import ArchiveSettings, archive_settings
from streamer.archive_store import ArchiveStore
from streamer.archive_table import TIME_TYPE, RowBuffer, by_day, carried_break
from streamer.archive_writer import ArchiveWriter
from streamer.cli import build_parser, kafka_settings, main
from streamer.rows import decode_row
from streamer.settings import KafkaSettings

pytestmark = pytest.mark.unit
DAY1 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


class Msg:
    """A consumed record, as much of confluent_kafka.Message as the archiver reads."""

    def __init__(self, partition, offset, row=None, value=None):
        self._partition, self._offset = partition, offset
        self._value = orjson.dumps(row) if row is not None else value
        self._key = row["machine_id"].encode() if row is not None else None

    def partition(self):
        return self._partition

    def offset(self):
        return self._offset

    def value(self):
        return self._value

    def key(self):
        return self._key

    def topic(self):
        return "sensors"

    def error(self):
        return None


def row(machine, ts, brk=0, **values):
    out = {"machine_id": machine, "ts": ts, "values": values or {"a": 1.0, "b": 2.0}}
    if brk is not None:
        out["break"] = brk
    return out


def writer_for(tmp_path):
    metrics = ArchiveMetrics(CollectorRegistry())
    return ArchiveWriter(ArchiveStore(str(tmp_path)), metrics, 65536), metrics


def test_file_names_round_trip_and_sort_by_day_partition_and_offset():
    file = ArchiveFile("2026-01-02", 3, 120, 4_999)
    assert file.path == "day=2026-01-02/p003-00000000000000000120-00000000000000004999.parquet"
    assert parse(file.path) == file
    assert parse("/srv/archive/" + file.in_progress().path) == file.in_progress()
    assert file.in_progress().name.startswith(".") and file.in_progress().final() == file
    for other in ("day=2026-01-02/notes.txt", "p003-1-2.parquet", "day=x/p003-1-2.parquet"):
        assert parse(other) is None
    assert day_of(DAY1 + DAY_MS - 1) == "2026-01-01" and day_of(DAY1 + DAY_MS) == "2026-01-02"


def test_late_rows_land_in_their_own_day_and_one_flush_shares_its_offset_range(tmp_path):
    writer, metrics = writer_for(tmp_path)
    stamps = [DAY1 + DAY_MS + 60_000, DAY1 + DAY_MS + 120_000, DAY1 + 3_600_000]  # last: late
    for offset, ts in enumerate(stamps, start=10):
        writer.take(Msg(0, offset, row("PM-1", ts)))
    writer.take(Msg(0, 13, value=b"not json"))
    writer.flush(lambda offsets: offsets == {0: 14})
    files = sorted(writer.store.list())
    assert [(f.day, f.first, f.last) for f in files] == [
        ("2026-01-01", 10, 13),
        ("2026-01-02", 10, 13),
    ]
    late = pq.read_table(f"{tmp_path}/{files[0].path}")
    assert late.column("kafka_offset").to_pylist() == [12]
    assert metrics.value("sheetbreak_archive_rows_total") == 3
    assert metrics.value("sheetbreak_archive_rows_skipped_total", reason="invalid_json") == 1
    assert metrics.value("sheetbreak_archive_files_total") == 2


def test_schema_types_missing_break_and_sensor_sets_that_differ(tmp_path):
    rows = [row("PM-2", DAY1 + 1, a=1.5, b=None), row("PM-1", DAY1, brk=None, a=2, c=3.0)]
    rows.append(row("PM-1", DAY1 + 5, brk=1, a=4.0, time=9.0))  # a sensor named like a column
    buffer = RowBuffer(7, chunk_rows=2)  # two chunks with different sensors
    for offset, item in enumerate(rows):
        value = orjson.dumps(item)
        decoded = decode_row(value, None, 65536)
        buffer.add(offset, decoded, carried_break(value, decoded))
    ((day, table),) = by_day(buffer.table()).items()
    assert day == "2026-01-01"
    assert table.schema.names == [
        "machine_id",
        "time",
        "break",
        "a",
        "c",
        "kafka_partition",
        "kafka_offset",
    ]  # b is null throughout the day: left out
    assert table.schema.field("time").type == TIME_TYPE
    assert table.schema.field("break").type == pa.int8()
    assert table.schema.field("a").type == pa.float64()
    assert table.schema.field("kafka_partition").type == pa.int32()
    assert table.schema.field("kafka_offset").type == pa.int64()
    assert table.column("machine_id").to_pylist() == ["PM-1", "PM-1", "PM-2"]
    assert table.column("break").to_pylist() == [None, 1, 0]
    assert table.column("a").to_pylist() == [2.0, 4.0, 1.5]
    assert table.column("c").to_pylist() == [3.0, None, None]


def test_break_flag_is_null_only_when_the_row_lacks_the_field():
    for item, expected in (
        (row("M", DAY1, brk=None, **{"break": 1.0}), None),  # a sensor named "break"
        (row("M", DAY1, brk=0), 0),
        (row("M", DAY1, brk=None), None),
    ):
        value = orjson.dumps(item)
        assert carried_break(value, decode_row(value, None, 65536)) == expected


def test_orphans_are_the_uncommitted_and_half_written_files_of_that_partition():
    files = [
        ArchiveFile("2026-01-01", 0, 0, 99),
        ArchiveFile("2026-01-02", 0, 100, 199),
        ArchiveFile("2026-01-01", 0, 100, 199),
        ArchiveFile("2026-01-02", 0, 50, 60, temp=True),
        ArchiveFile("2026-01-02", 1, 100, 199),
    ]
    assert orphans(files, 0, 100) == sorted([files[1], files[2], files[3]])
    assert orphans(files, 1, 200) == []
    assert resume_offset(files, 0, 100) == 100
    assert resume_offset(files, 0, 50) == 100  # the offset was moved back: never read twice


def test_recover_deletes_uncommitted_files_from_disk(tmp_path):
    writer, metrics = writer_for(tmp_path)
    table = pa.table({"machine_id": ["M"], "time": pa.array([DAY1], TIME_TYPE)})
    kept, orphan = ArchiveFile("2026-01-01", 0, 0, 9), ArchiveFile("2026-01-01", 0, 10, 19)
    writer.store.write({kept: table, orphan: table, ArchiveFile("2026-01-01", 1, 10, 19): table})
    (tmp_path / "day=2026-01-01" / orphan.in_progress().name).write_bytes(b"half")
    assert writer.recover(0, 10, writer.store.list()) == 10
    assert sorted(writer.store.list()) == [kept, ArchiveFile("2026-01-01", 1, 10, 19)]
    assert metrics.value("sheetbreak_archive_orphans_deleted_total") == 2
    assert ds.dataset(str(tmp_path), partitioning="hive").count_rows() == 2


class FakeConsumer:
    """The Kafka seam: one assignment of two partitions, then the queued records."""

    def __init__(self, queued, committed, store, stop):
        self.queued, self.stored, self.store, self.stop = list(queued), committed, store, stop
        self.commits, self.assigned, self.incremental = [], [], False

    def subscribe(self, topics, on_assign, on_revoke, on_lost):
        self.on_assign, self.on_revoke = on_assign, on_revoke

    def consume(self, count, timeout):
        if not self.assigned:
            self.on_assign(self, [FakeTP(0), FakeTP(1)])
        if not self.queued:
            self.stop.set()
        batch, self.queued = self.queued[:1], self.queued[1:]  # one record per poll
        return batch

    def committed(self, partitions, timeout):
        return [FakeTP(tp.partition, self.stored.get(tp.partition, -1001)) for tp in partitions]

    def assign(self, partitions):
        self.assigned = [(tp.partition, tp.offset) for tp in partitions]

    def incremental_assign(self, partitions):
        self.assign(partitions)
        self.incremental = True

    def get_watermark_offsets(self, tp, timeout=None, cached=False):
        return 0, 100

    def commit(self, offsets, asynchronous):
        # the files of the flush must be visible before its offsets are committed
        visible = {(f.partition, f.last + 1) for f in self.store().list() if not f.temp}
        assert {(tp.partition, tp.offset) for tp in offsets} <= visible
        self.commits.append({tp.partition: tp.offset for tp in offsets})
        self.stored.update(self.commits[-1])
        return [FakeTP(tp.partition, tp.offset) for tp in offsets]

    def list_topics(self, topic, timeout):
        return None

    def close(self):
        self.on_revoke(self, [FakeTP(0), FakeTP(1)])


class FakeTP:
    def __init__(self, partition, offset=-1001):
        self.partition, self.offset, self.error = partition, offset, None


@pytest.mark.parametrize("strategy", ["range", "cooperative-sticky"])
def test_archiver_cleans_up_on_assign_commits_after_files_and_flushes_on_stop(tmp_path, strategy):
    store = ArchiveStore(str(tmp_path))
    stale = pa.table({"machine_id": ["M"], "time": pa.array([DAY1], TIME_TYPE)})
    store.write({ArchiveFile("2026-01-01", 0, 5, 6): stale})  # renamed, never committed
    kafka = KafkaSettings("unused:9092", {"partition.assignment.strategy": strategy})
    settings = ArchiveSettings(kafka, str(tmp_path), flush_rows=3)
    queued = [Msg(0, 5, row("A", DAY1)), Msg(1, 0, row("B", DAY1)), Msg(0, 6, row("A", DAY1 + 1))]
    queued += [Msg(0, 7, row("A", DAY1 + 2))]
    stop, metrics = threading.Event(), ArchiveMetrics(CollectorRegistry())
    consumers = []

    def factory(config):
        assert config["enable.auto.commit"] is False
        consumers.append(FakeConsumer(queued, {0: 5}, lambda: archiver.writer.store, stop))
        return consumers[0]

    archiver = Archiver(settings, metrics, stop, consumer_factory=factory)
    archiver.run()
    (consumer,) = consumers
    assert consumer.assigned == [(0, 5), (1, 0)]
    assert consumer.incremental == (strategy == "cooperative-sticky")
    assert consumer.commits == [{0: 7, 1: 1}, {0: 8}]  # at 3 rows, then on stop
    table = ds.dataset(str(tmp_path), partitioning="hive").to_table()
    assert sorted(table.column("kafka_offset").to_pylist()) == [0, 5, 6, 7]
    assert metrics.value("sheetbreak_archive_orphans_deleted_total") == 1
    assert metrics.value("sheetbreak_archive_rows_total") == 4


def test_a_failed_flush_commits_nothing(tmp_path):
    writer, metrics = writer_for(tmp_path)
    writer.take(Msg(0, 0, row("A", DAY1)))
    commits = []
    writer.store.root = str(tmp_path / "file.txt")  # a file where the root folder should be
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(OSError):
        writer.flush(commits.append)
    assert commits == [] and metrics.value("sheetbreak_archive_rows_total") == 0


def test_archive_command_reads_its_flags_from_the_environment(capsys):
    environ = {"STREAMER_OUT": "s3://bucket/archive", "STREAMER_GROUP_ID": "sheetbreak-streamer"}
    args = build_parser(environ).parse_args(["archive", "--bootstrap-servers", "k:9092"])
    settings = archive_settings(args, kafka_settings(args))
    assert settings.out == "s3://bucket/archive"
    assert settings.group_id == "sheetbreak-archiver"  # never the streamer's group
    assert settings.flush_rows == 200_000 and settings.metrics_host == "127.0.0.1"
    assert main(["archive", "--bootstrap-servers", "k:9092"], {}) == 2
    assert "--out" in capsys.readouterr().err
