"""Where archived rows live: day folders, and file names that carry a flush's offset range.

``<root>/day=YYYY-MM-DD/p<partition:03d>-<first:020d>-<last:020d>.parquet``: the day is the
UTC day of the rows' own timestamps; ``first`` and ``last`` are the Kafka offsets of the
flush that wrote the file. A name starting with ``.`` is a file still being written.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass

DAY_MS = 86_400_000
_EPOCH = dt.date(1970, 1, 1)
_PATH = re.compile(r"(?:.*/)?day=(\d{4}-\d{2}-\d{2})/(\.?)p(\d{3,})-(\d{20})-(\d{20})\.parquet")


def day_of(ts_ms: int) -> str:
    """The UTC day (``YYYY-MM-DD``) of an epoch-millisecond timestamp."""
    return (_EPOCH + dt.timedelta(days=ts_ms // DAY_MS)).isoformat()


@dataclass(frozen=True, order=True)
class ArchiveFile:
    """One file of the archive, final or (``temp``) still being written."""

    day: str
    partition: int
    first: int
    last: int
    temp: bool = False

    @property
    def name(self) -> str:
        """The file's name within its day folder."""
        stem = f"p{self.partition:03d}-{self.first:020d}-{self.last:020d}.parquet"
        return f".{stem}" if self.temp else stem

    @property
    def folder(self) -> str:
        """The day folder, relative to the archive root."""
        return f"day={self.day}"

    @property
    def path(self) -> str:
        """The path relative to the archive root."""
        return f"{self.folder}/{self.name}"

    def final(self) -> ArchiveFile:
        """The same file under its visible name."""
        return ArchiveFile(self.day, self.partition, self.first, self.last)

    def in_progress(self) -> ArchiveFile:
        """The same file under the hidden name it is written to first."""
        return ArchiveFile(self.day, self.partition, self.first, self.last, temp=True)


def parse(path: str) -> ArchiveFile | None:
    """The file a path names (relative or absolute), or None when it is no archive file."""
    match = _PATH.fullmatch(path.replace("\\", "/"))
    if match is None:
        return None
    day, dot, partition, first, last = match.groups()
    return ArchiveFile(day, int(partition), int(first), int(last), temp=bool(dot))


def orphans(files: Iterable[ArchiveFile], partition: int, start: int) -> list[ArchiveFile]:
    """Files of ``partition`` that no commit covers: half-written ones, and every file whose
    flush began at or after ``start`` (the offset consumption resumes from)."""
    return sorted(f for f in files if f.partition == partition and (f.temp or f.first >= start))


def resume_offset(files: Iterable[ArchiveFile], partition: int, start: int) -> int:
    """Where to resume so no kept file is read twice: ``start``, or past a kept file that
    reaches beyond it (only when the group's offset was moved back by hand, or lost)."""
    ends = [
        f.last + 1
        for f in files
        if f.partition == partition and not f.temp and f.first < start <= f.last
    ]
    return max([start, *ends])
