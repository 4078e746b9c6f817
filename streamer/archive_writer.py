"""The archiver's core, apart from the consume loop: buffer rows, flush files, then commit."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pyarrow as pa

from streamer.archive_layout import ArchiveFile, orphans, resume_offset
from streamer.archive_metrics import ArchiveMetrics
from streamer.archive_store import ArchiveStore
from streamer.archive_table import RowBuffer, by_day, carried_break
from streamer.rows import RowRejected, decode_row

log = logging.getLogger(__name__)

Commit = Callable[[Mapping[int, int]], bool]
"""Commits ``{partition: next offset}``; tells whether the commit took."""


class ArchiveWriter:
    """Rows of the assigned partitions since the last flush, and how they reach the archive."""

    def __init__(self, store: ArchiveStore, metrics: ArchiveMetrics, max_row_bytes: int) -> None:
        self.store, self.metrics, self.max_row_bytes = store, metrics, max_row_bytes
        self.buffers: dict[int, RowBuffer] = {}
        self.pending = 0
        self.since = 0.0

    def take(self, message: Any) -> None:
        """Keep a message's row if it decodes; count and log it once if it does not."""
        partition, offset = message.partition() or 0, message.offset() or 0
        buffer = self.buffers.get(partition)
        if buffer is None:
            buffer = self.buffers[partition] = RowBuffer(partition)
        if not self.pending:
            self.since = time.monotonic()
        self.pending += 1
        value = message.value()
        try:
            row = decode_row(value, message.key(), self.max_row_bytes)
        except RowRejected as exc:
            buffer.skip(offset)
            self.metrics.skipped.labels(exc.reason).inc()
            log.warning(
                "not archived (%s): %s[%d]@%d: %s",
                exc.reason,
                message.topic(),
                partition,
                offset,
                exc,
            )
            return
        buffer.add(offset, row, carried_break(value, row))

    def due(self, flush_rows: int, flush_seconds: float) -> bool:
        """Whether enough rows, or enough time since the oldest unflushed one, has gathered."""
        waited = time.monotonic() - self.since
        return self.pending > 0 and (self.pending >= flush_rows or waited >= flush_seconds)

    def flush(self, commit: Commit) -> None:
        """Write every buffered row, rename the files into place, then commit the offsets."""
        if not self.buffers:
            return
        started = time.monotonic()
        files = self._tables()
        size = self.store.write(files)
        rows = sum(b.rows for b in self.buffers.values())
        offsets = {p: b.last + 1 for p, b in self.buffers.items()}
        self.drop(list(self.buffers))
        committed = commit(offsets)
        seconds = time.monotonic() - started
        metrics = self.metrics
        metrics.files.inc(len(files))
        metrics.written.inc(size)
        metrics.flush_seconds.observe(seconds)
        if committed:
            metrics.rows.inc(rows)
            metrics.last_flush.set_to_current_time()
        log.info(
            "archived %d rows in %d files (%.2f MB, %.2f s); offsets %scommitted: %s",
            rows,
            len(files),
            size / 1e6,
            seconds,
            "" if committed else "NOT ",
            ", ".join(f"{p}:{o}" for p, o in sorted(offsets.items())),
        )

    def _tables(self) -> dict[ArchiveFile, pa.Table]:
        """One table per partition and day; a flush's files of one partition share its range."""
        files: dict[ArchiveFile, pa.Table] = {}
        for partition, buffer in self.buffers.items():
            table = buffer.table()
            if table is None or buffer.first is None:
                continue
            for day, part in by_day(table).items():
                files[ArchiveFile(day, partition, buffer.first, buffer.last)] = part
        return files

    def drop(self, partitions: Iterable[int]) -> None:
        """Forget the unflushed rows of these partitions."""
        for partition in partitions:
            self.buffers.pop(partition, None)
        self.pending = sum(b.messages for b in self.buffers.values())
        self.metrics.buffered.set(self.pending)

    def recover(self, partition: int, start: int, files: list[ArchiveFile]) -> int:
        """Delete the partition's files no commit covers; returns the offset to resume at."""
        removed = self.store.delete(orphans(files, partition, start))
        self.metrics.orphans.inc(removed)
        resume = resume_offset(files, partition, start)
        log.info(
            "partition %d: resuming at offset %d (%d uncommitted files removed)",
            partition,
            resume,
            removed,
        )
        return resume
