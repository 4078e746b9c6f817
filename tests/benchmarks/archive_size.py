"""On-disk size and speed of the archive, for a million simulated rows of 1,000 machines.

    .venv/bin/python tests/benchmarks/archive_size.py [--rows 1000000] [--machines 1000] [--json]

Rows come from the plant simulator in contract form, are encoded as JSON exactly as
``streamer simulate`` produces them, spread over four partitions by machine, and go through
the archiver's own core (decode, buffer, build tables, write, rename) with its default
flush of 200,000 rows; only the broker is left out. Reported: archive bytes per million
rows, the JSON bytes the same rows take on the topic, and the core's rows per second.

Not collected by pytest (its name does not start with ``test_``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import zlib
from pathlib import Path

import orjson
from prometheus_client import CollectorRegistry

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from streamer.archive_metrics import ArchiveMetrics  # noqa: E402
from streamer.archive_store import ArchiveStore  # noqa: E402
from streamer.archive_writer import ArchiveWriter  # noqa: E402
from streamer.simulate import PlantParams, iter_rows  # noqa: E402

PARTITIONS = 4
FLUSH_ROWS = 200_000


class Record:
    """A consumed message, as the archiver reads it."""

    def __init__(self, partition: int, offset: int, key: bytes, value: bytes) -> None:
        self._partition, self._offset, self._key, self._value = partition, offset, key, value

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes:
        return self._key

    def value(self) -> bytes:
        return self._value

    def topic(self) -> str:
        return "sensors"


def measure(rows: int, machines: int, compression: str) -> dict[str, float]:
    """Archive ``rows`` simulated rows into a temporary folder; return the figures."""
    source = iter_rows(PlantParams.load(), machines=machines, seed=1, start="2026-01-01")
    offsets = [0] * PARTITIONS
    json_bytes = 0
    busy = 0.0
    with tempfile.TemporaryDirectory(prefix="archive-size-") as folder:
        metrics = ArchiveMetrics(CollectorRegistry())
        writer = ArchiveWriter(ArchiveStore(folder, compression), metrics, 65_536)
        for _ in range(rows):
            row = next(source)
            key, value = row["machine_id"].encode(), orjson.dumps(row)
            partition = zlib.crc32(key) % PARTITIONS
            json_bytes += len(value)
            started = time.perf_counter()
            writer.take(Record(partition, offsets[partition], key, value))
            if writer.pending >= FLUSH_ROWS:
                writer.flush(lambda _: True)
            busy += time.perf_counter() - started
            offsets[partition] += 1
        started = time.perf_counter()
        writer.flush(lambda _: True)
        busy += time.perf_counter() - started
        on_disk = sum(p.stat().st_size for p in Path(folder).rglob("*.parquet"))
        files = len(list(Path(folder).rglob("*.parquet")))
        days = len(list(Path(folder).glob("day=*")))
    return {
        "rows": rows,
        "machines": machines,
        "compression": compression,
        "files": files,
        "days": days,
        "archive_bytes_per_million_rows": on_disk / rows * 1e6,
        "json_bytes_per_million_rows": json_bytes / rows * 1e6,
        "archiver_core_rows_per_second": rows / busy,
    }


def main() -> int:
    """Run the measurement and print it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--machines", type=int, default=1000)
    parser.add_argument("--compression", default="zstd")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    result = measure(args.rows, args.machines, args.compression)
    if args.json:
        print(json.dumps(result))
    else:
        for name, value in result.items():
            print(
                f"{name:>34}: {value:,.0f}" if isinstance(value, float) else f"{name:>34}: {value}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
