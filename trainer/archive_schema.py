"""The archive's columns: one schema over files whose sensor sets differ, in a stable order."""

from __future__ import annotations

import logging
import re

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from streamer.errors import DataError
from trainer.compact import LABEL_COLUMN, MACHINE_COLUMN, TIME_COLUMN

log = logging.getLogger(__name__)

# Written by the archiver for exactly-once bookkeeping; not sensors.
_BOOKKEEPING = ("kafka_partition", "kafka_offset", "day")


def footers(filesystem: pafs.FileSystem, paths: list[str]) -> tuple[int, pa.Schema]:
    """Rows in all files and one schema over them (absent sensors then read as null)."""
    rows, schemas = 0, []
    for path in paths:
        try:
            with filesystem.open_input_file(path) as handle:
                metadata = pq.ParquetFile(handle).metadata
        except (pa.ArrowException, OSError) as exc:
            raise DataError(f"{path}: not a readable Parquet file ({exc})") from exc
        rows += metadata.num_rows
        schemas.append(metadata.schema.to_arrow_schema())
    try:
        return rows, pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"archived files disagree on column types ({exc})") from exc


def read_schema(
    merged: pa.Schema, root: str, drop: tuple[str, ...]
) -> tuple[pa.Schema, tuple[str, ...]]:
    """The columns to read, with their types fixed by the archive contract, and the sensors."""
    missing = [c for c in (MACHINE_COLUMN, TIME_COLUMN, LABEL_COLUMN) if c not in merged.names]
    if missing:
        raise DataError(f"{root}: archived files lack the columns {missing}")
    sensors = [f.name for f in merged if f.name not in (*_BOOKKEEPING, MACHINE_COLUMN)]
    sensors = [s for s in sensors if s not in (TIME_COLUMN, LABEL_COLUMN)]
    unknown = [d for d in drop if d not in sensors]
    if unknown:
        raise DataError(f"{root}: columns to drop {unknown} are not sensors of the selected days")
    sensors = [s for s in sensors if s not in drop]
    skipped = [s for s in sensors if not _numeric(merged.field(s).type)]
    if skipped:
        log.warning("ignoring non-numeric archive columns %s", skipped)
    kept = tuple(sorted((s for s in sensors if s not in skipped), key=_natural))
    if not kept:
        raise DataError(f"{root}: archived files hold no sensor columns")
    fields = [
        pa.field(MACHINE_COLUMN, pa.string()),
        pa.field(TIME_COLUMN, pa.timestamp("ms", tz="UTC")),
        pa.field(LABEL_COLUMN, pa.int8()),
        *(pa.field(s, pa.float64()) for s in kept),
    ]
    return pa.schema(fields), kept


def _numeric(kind: pa.DataType) -> bool:
    return bool(pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_null(kind))


def _natural(name: str) -> tuple[tuple[int, int | str], ...]:
    """x2 before x10, so the feature order does not depend on which files came first."""
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"(\d+)", name) if p)
