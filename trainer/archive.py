"""Reading the archiver's Parquet rows by day and machine, streamed in bounded memory."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from streamer.errors import ConfigError, DataError
from trainer.archive_schema import footers, read_schema
from trainer.compact import LABEL_COLUMN, MACHINE_COLUMN, TIME_COLUMN, Compact
from trainer.data import Table
from trainer.read_summary import ReadSummary

log = logging.getLogger(__name__)

_HIVE = ds.partitioning(pa.schema([("day", pa.date32())]), flavor="hive")


@dataclass(frozen=True)
class ArchiveQuery:
    """Which rows to read: a day range (or the newest N days) and some or all machines."""

    root: str
    since: dt.date | None = None
    until: dt.date | None = None
    last_days: int | None = None
    machines: tuple[str, ...] = ()
    drop: tuple[str, ...] = ()
    batch_rows: int = 65_536

    def __post_init__(self) -> None:
        if self.last_days is not None and (self.since or self.until):
            raise ConfigError("give --last-days or --since/--until, not both")
        if self.last_days is not None and self.last_days < 1:
            raise ConfigError(f"--last-days must be at least 1, got {self.last_days}")
        if self.since and self.until and self.since > self.until:
            raise ConfigError(f"--since {self.since} is after --until {self.until}")


def read_archive(
    query: ArchiveQuery, max_gap_minutes: float | None = None
) -> tuple[Table, ReadSummary]:
    """The selected rows as one table sorted by machine then time, and what was read."""
    filesystem, base = _open(query.root)
    paths = _select_files(query, filesystem, base)
    total, merged = footers(filesystem, paths)
    schema, sensors = read_schema(merged, query.root, query.drop)
    where = ds.field(MACHINE_COLUMN).is_valid() & ds.field(TIME_COLUMN).is_valid()
    if query.machines:
        where &= ds.field(MACHINE_COLUMN).isin(list(query.machines))
        total = sum(_one_file(filesystem, p, schema).count_rows(filter=where) for p in paths)
    compact = Compact(total, sensors)
    columns = [MACHINE_COLUMN, TIME_COLUMN, LABEL_COLUMN, *sensors]
    try:
        for path in paths:
            # Little read-ahead: the scanner's defaults buffer tens of batches per file.
            for batch in _one_file(filesystem, path, schema).to_batches(
                columns=columns, filter=where, batch_size=query.batch_rows, batch_readahead=2
            ):
                compact.add(batch)
    except pa.ArrowException as exc:
        raise DataError(f"{query.root}: rows that break the archive contract ({exc})") from exc
    if compact.filled == 0:
        chosen = ", ".join(query.machines) or "any machine"
        raise DataError(f"{query.root}: no rows of {chosen} in {_days_text(query)}")
    table, summary = compact.finish(len(paths), max_gap_minutes, source=_source(query))
    log.info("read the archive: %s", summary.text())
    return table, summary


def _one_file(filesystem: pafs.FileSystem, path: str, schema: pa.Schema) -> ds.Dataset:
    """A dataset of one file, read with the archive-wide schema (its missing sensors as null).

    One file at a time: a dataset over all files keeps every file's metadata until the end.
    """
    return ds.FileSystemDataset.from_paths(
        [path], schema=schema, format=ds.ParquetFileFormat(), filesystem=filesystem
    )


def _select_files(query: ArchiveQuery, filesystem: pafs.FileSystem, base: str) -> list[str]:
    """Paths of the chosen days' files, by day then name; only their footers are read later."""
    days = _day_files(filesystem, base, query.root)
    first, last = _day_range(query, max(days))
    chosen = [path for day, paths in sorted(days.items()) if first <= day <= last for path in paths]
    if not chosen:
        raise DataError(
            f"{query.root}: no files for {_days_text(query)} "
            f"(the archive holds days {min(days)} to {max(days)})"
        )
    return chosen


def _open(root: str) -> tuple[pafs.FileSystem, str]:
    """A filesystem and a base path: a URI pyarrow knows (s3://, gs://, ...) or a folder."""
    try:
        if "://" in root:
            return pafs.FileSystem.from_uri(root)
        return pafs.LocalFileSystem(), pafs.LocalFileSystem().normalize_path(root)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DataError(f"{root}: cannot open the archive ({exc})") from exc


def _day_files(filesystem: pafs.FileSystem, base: str, root: str) -> dict[dt.date, list[str]]:
    """The archive's Parquet files by their ``day=`` folder; hidden (``.``, ``_``) ones skipped."""
    if filesystem.get_file_info(base).type != pafs.FileType.Directory:
        raise DataError(f"{root}: no such archive folder")
    days: dict[dt.date, list[str]] = {}
    for info in filesystem.get_file_info(pafs.FileSelector(base, recursive=True)):
        relative = info.path[len(base) :].lstrip("/")
        parts = relative.split("/")
        if info.type != pafs.FileType.File or not relative.endswith(".parquet"):
            continue
        if any(part.startswith((".", "_")) for part in parts):
            continue
        day = _day_of(relative)
        if day is None:
            log.warning("skipping %s: it is not inside a day=YYYY-MM-DD folder", info.path)
            continue
        days.setdefault(day, []).append(info.path)
    if not days:
        raise DataError(f"{root}: the archive holds no Parquet files yet")
    return {day: sorted(paths) for day, paths in days.items()}


def _day_of(relative: str) -> dt.date | None:
    try:
        day = ds.get_partition_keys(_HIVE.parse(relative)).get("day")
    except pa.ArrowInvalid:
        return None
    return day if isinstance(day, dt.date) else None


def _day_range(query: ArchiveQuery, newest: dt.date) -> tuple[dt.date, dt.date]:
    """Inclusive first and last day; ``--last-days`` counts back from the newest archived day."""
    if query.last_days is not None:
        return newest - dt.timedelta(days=query.last_days - 1), newest
    return query.since or dt.date.min, query.until or dt.date.max


def _days_text(query: ArchiveQuery) -> str:
    if query.last_days is not None:
        return f"the newest {query.last_days} archived days"
    return f"days {query.since or 'first'}..{query.until or 'last'}"


def _source(query: ArchiveQuery) -> str:
    machines = ",".join(query.machines) if query.machines else "all machines"
    return f"archive {query.root} ({_days_text(query)}, {machines})"
