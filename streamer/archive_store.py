"""The archive root on any filesystem pyarrow knows: files appear whole, or not at all."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import fs

from streamer.archive_layout import ArchiveFile, parse
from streamer.archive_table import RESERVED
from streamer.errors import ConfigError


def open_root(location: str) -> tuple[fs.FileSystem, str]:
    """The filesystem and root path of a folder or a URI (``s3://bucket/archive``, ...)."""
    if "://" not in location:
        return fs.LocalFileSystem(), Path(location).resolve().as_posix()
    try:
        filesystem, path = fs.FileSystem.from_uri(location)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
        raise ConfigError(f"cannot open the archive {location!r}: {exc}") from exc
    return filesystem, path.rstrip("/")


class ArchiveStore:
    """Writes, lists and deletes archive files under one root."""

    def __init__(self, location: str, compression: str = "zstd") -> None:
        self.filesystem, self.root = open_root(location)
        self.compression = compression
        # fsync exists only where the files are local; object stores make a write
        # durable when it completes.
        self.local = isinstance(self.filesystem, fs.LocalFileSystem)

    def list(self) -> list[ArchiveFile]:
        """Every archive file under the root, final or half-written."""
        selector = fs.FileSelector(self.root, recursive=True, allow_not_found=True)
        found = (parse(info.path) for info in self.filesystem.get_file_info(selector))
        return [f for f in found if f is not None]

    def delete(self, files: Iterable[ArchiveFile]) -> int:
        """Remove files (already gone is fine); returns how many were removed."""
        removed = 0
        for file in files:
            with contextlib.suppress(FileNotFoundError):
                self.filesystem.delete_file(self._full(file))
                removed += 1
        return removed

    def write(self, tables: Mapping[ArchiveFile, pa.Table]) -> int:
        """Write each table under a hidden name, make it durable, then rename all into place;
        returns the bytes written. Nothing may be committed before this returns."""
        if not tables:
            return 0
        folders = {f.folder for f in tables}
        new = {d for d in folders if not self._exists(d)}
        fresh_root = not self._exists("")
        for folder in sorted(folders):
            self.filesystem.create_dir(f"{self.root}/{folder}", recursive=True)
        for file, table in tables.items():
            self._write_one(self._full(file.in_progress()), table)
        size = 0
        for file in tables:
            self.filesystem.move(self._full(file.in_progress()), self._full(file.final()))
            size += self.filesystem.get_file_info(self._full(file.final())).size or 0
        if self.local:
            for folder in sorted(folders):
                _fsync_dir(f"{self.root}/{folder}")
            if new:
                _fsync_dir(self.root)
            if fresh_root:
                _fsync_dir(Path(self.root).parent.as_posix())
        return size

    def _write_one(self, path: str, table: pa.Table) -> None:
        options = {
            "compression": self.compression,
            # Sensor readings rarely repeat: a dictionary only costs, while splitting the
            # bytes of floats lets the codec find what they share (a quarter smaller here).
            "use_dictionary": ["machine_id"],
            "use_byte_stream_split": [
                n
                for n, t in zip(table.column_names, table.schema.types, strict=True)
                if n not in RESERVED and pa.types.is_floating(t)
            ],
        }
        if not self.local:
            with self.filesystem.open_output_stream(path) as out:
                pq.write_table(table, out, **options)
            return
        with Path(path).open("wb") as out:
            pq.write_table(table, out, **options)
            out.flush()
            os.fsync(out.fileno())

    def _exists(self, relative: str) -> bool:
        info = self.filesystem.get_file_info(f"{self.root}/{relative}".rstrip("/"))
        return info.type != fs.FileType.NotFound

    def _full(self, file: ArchiveFile) -> str:
        return f"{self.root}/{file.path}"


def _fsync_dir(path: str) -> None:
    """Make renames and new entries in a folder durable."""
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)
