"""Decoded rows to Arrow tables in the archive's schema, one table per UTC day."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
import orjson
import pyarrow as pa

from streamer.archive_layout import DAY_MS, day_of
from streamer.rows import Row

log = logging.getLogger(__name__)

TIME_TYPE = pa.timestamp("ms", tz="UTC")
RESERVED = frozenset(("machine_id", "time", "break", "kafka_partition", "kafka_offset", "day"))
"""Column names of the archive itself (``day`` being the folders' partition key, as readers
see it); a sensor of the same name is left out."""
CHUNK_ROWS = 8192
_warned: set[str] = set()


def carried_break(value: bytes, row: Row) -> int | None:
    """The row's break flag, or None when the row did not carry the field at all."""
    if row.brk:
        return row.brk
    # decode_row reads a missing flag as 0; only a row that may hold the key is parsed again.
    if b'"break"' not in value and b"\\u" not in value:
        return None
    return 0 if "break" in orjson.loads(value) else None


def rows_table(
    rows: list[Row], breaks: list[int | None], partition: int, offsets: list[int]
) -> pa.Table:
    """The archive's columns for rows of one partition (in any order)."""
    sensors = _sensors([r.values for r in rows])
    return pa.table(
        {
            "machine_id": pa.array([r.machine_id for r in rows], pa.string()),
            "time": pa.array([r.ts_ms for r in rows], TIME_TYPE),
            "break": pa.array(breaks, pa.int8()),
            **sensors,
            "kafka_partition": pa.array(np.full(len(rows), partition, np.int32)),
            "kafka_offset": pa.array(offsets, pa.int64()),
        }
    )


def _sensors(values: list[Mapping[str, float | None]]) -> dict[str, pa.Array]:
    """One float64 column per sensor any row names (null where a row lacks it)."""
    struct = pa.array(values)  # the union of the rows' sensors, converted in C++
    out: dict[str, pa.Array] = {}
    for field, column in zip(struct.type, struct.flatten(), strict=True):
        if field.name in RESERVED:
            if field.name not in _warned:
                _warned.add(field.name)
                log.warning(
                    "sensor %r has an archive column's name; it is not archived", field.name
                )
            continue
        out[field.name] = column.cast(pa.float64())
    return out


def by_day(table: pa.Table) -> dict[str, pa.Table]:
    """Rows split by the UTC day of their time, sorted by machine and time, with the sensor
    columns that are null throughout a day left out of that day's table."""
    days = table.column("time").cast(pa.int64()).to_numpy() // DAY_MS
    out: dict[str, pa.Table] = {}
    for day in np.unique(days):
        part = table.filter(pa.array(days == day))
        part = part.sort_by([("machine_id", "ascending"), ("time", "ascending")])
        empty = [
            name
            for name in part.column_names
            if name not in RESERVED and part.column(name).null_count == part.num_rows
        ]
        out[day_of(int(day) * DAY_MS)] = part.drop_columns(empty)
    return out


def concat(tables: list[pa.Table]) -> pa.Table:
    """Chunks whose sensor sets differ, as one table (a missing sensor reads as null)."""
    if len(tables) == 1:
        return tables[0]
    merged = pa.concat_tables(tables, promote_options="default")
    fixed = ["machine_id", "time", "break"]
    tail = ["kafka_partition", "kafka_offset"]
    middle = [c for c in merged.column_names if c not in RESERVED]
    return merged.select([*fixed, *middle, *tail])


class RowBuffer:
    """One partition's rows since the last flush, kept as Arrow chunks (a fraction of the
    memory Python objects take), and the offset range the flush will commit."""

    def __init__(self, partition: int, chunk_rows: int = CHUNK_ROWS) -> None:
        self.partition, self.chunk_rows = partition, chunk_rows
        self.first: int | None = None
        self.last = -1
        self.messages = 0
        self.rows = 0
        self._rows: list[Row] = []
        self._breaks: list[int | None] = []
        self._offsets: list[int] = []
        self._chunks: list[pa.Table] = []

    def skip(self, offset: int) -> None:
        """A message that is not archived still moves the range the flush commits."""
        self.first = offset if self.first is None else self.first
        self.last = offset
        self.messages += 1

    def add(self, offset: int, row: Row, brk: int | None) -> None:
        """Keep one decoded row."""
        self.skip(offset)
        self._rows.append(row)
        self._breaks.append(brk)
        self._offsets.append(offset)
        self.rows += 1
        if len(self._rows) >= self.chunk_rows:
            self._seal()

    def _seal(self) -> None:
        if self._rows:
            self._chunks.append(rows_table(self._rows, self._breaks, self.partition, self._offsets))
            self._rows, self._breaks, self._offsets = [], [], []

    def table(self) -> pa.Table | None:
        """Every row kept, as one table (None when no row was archivable)."""
        self._seal()
        return concat(self._chunks) if self._chunks else None
