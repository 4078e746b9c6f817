"""What decoding a poll's rows costs, by decoder, on the benchmark's simulated rows.

Each way turns the same batch of encoded rows (61 sensors each) into what the core needs:
the machine ids, times and break flags, and a (rows x sensors) float32 matrix in the
model's sensor order. The ways run alternately in one process, so their ratios are
measured under the same load:

- ``decode_rows``: the streamer's own decoder with every contract check, then the matrix;
- ``orjson rows``: ``orjson.loads`` per row, no checks, then the matrix;
- ``orjson batch``: the batch joined into one JSON array, one ``orjson.loads``;
- ``msgspec struct``: msgspec decoding each row into a typed struct (only where msgspec
  is installed; it is not a dependency of the project).

    .venv/bin/python tests/benchmarks/decoders.py [--rows N] [--batch N] [--rounds N] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).parent))

from throughput import RowSource

from streamer.rows import Row, decode_rows

Batch = list[tuple[bytes, bytes]]
Decoded = tuple[list[str], list[int], list[int], np.ndarray]


def via_decode_rows(names: list[str]) -> Callable[[Batch], Decoded]:
    """The streamer's decoder: every contract check (all the benchmark's rows pass)."""
    take = itemgetter(*names)

    def run(batch: Batch) -> Decoded:
        rows = [r for r in decode_rows([(v, k) for k, v in batch], 1 << 20) if isinstance(r, Row)]
        matrix = _matrix(take, [r.values for r in rows])
        return [r.machine_id for r in rows], [r.ts_ms for r in rows], [r.brk for r in rows], matrix

    return run


def via_orjson(names: list[str], whole_batch: bool) -> Callable[[Batch], Decoded]:
    """orjson without the contract's checks (the floor of parsing): one call per row, or
    one for the whole batch joined into a JSON array."""
    take = itemgetter(*names)

    def run(batch: Batch) -> Decoded:
        if whole_batch:
            rows = orjson.loads(b"[" + b",".join(value for _, value in batch) + b"]")
        else:
            rows = [orjson.loads(value) for _, value in batch]
        machines = [r["machine_id"] for r in rows]
        stamps, breaks = [r["ts"] for r in rows], [r.get("break", 0) for r in rows]
        return machines, stamps, breaks, _matrix(take, [r["values"] for r in rows])

    return run


def via_msgspec(names: list[str]) -> Callable[[Batch], Decoded] | None:
    """msgspec into a typed struct: types are checked while parsing, in C."""
    try:
        import msgspec  # noqa: PLC0415 - optional, measured only where installed
    except ImportError:
        return None

    class SensorRow(msgspec.Struct):
        machine_id: str
        ts: int
        values: dict[str, float | None]
        brk: int = msgspec.field(name="break", default=0)

    decoder = msgspec.json.Decoder(SensorRow)
    take = itemgetter(*names)

    def run(batch: Batch) -> Decoded:
        rows = [decoder.decode(value) for _, value in batch]
        matrix = _matrix(take, [r.values for r in rows])
        return [r.machine_id for r in rows], [r.ts for r in rows], [r.brk for r in rows], matrix

    return run


def matrix_seconds(batches: list[Batch], names: list[str]) -> float:
    """Seconds to build the batches' matrices from rows already parsed (parsing untimed)."""
    take = itemgetter(*names)
    parsed = [[orjson.loads(value)["values"] for _, value in batch] for batch in batches]
    started = time.perf_counter()
    for values in parsed:
        _matrix(take, values)
    return time.perf_counter() - started


def _matrix(take: Callable[[Any], tuple[Any, ...]], values: list[Any]) -> np.ndarray:
    """The (rows x sensors) float32 matrix, in the model's sensor order."""
    return np.array([take(v) for v in values], np.float32)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000, help="rows per timed round")
    parser.add_argument("--batch", type=int, default=2000, help="rows per decoded batch")
    parser.add_argument("--rounds", type=int, default=3, help="alternating timed rounds")
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    args = parser.parse_args()
    source = RowSource(1000, seed=7)
    names = source.names
    rows = source.take(args.rows)
    batches = [rows[i : i + args.batch] for i in range(0, len(rows), args.batch)]
    ways = {
        "decode_rows": via_decode_rows(names),
        "orjson rows": via_orjson(names, whole_batch=False),
        "orjson batch": via_orjson(names, whole_batch=True),
        "msgspec struct": via_msgspec(names),
    }
    ways = {name: way for name, way in ways.items() if way is not None}
    reference = ways["decode_rows"](batches[0])
    for name, way in ways.items():  # every way must give the same columns and matrix
        got = way(batches[0])
        same = got[:3] == reference[:3] and np.array_equal(got[3], reference[3], equal_nan=True)
        assert same, f"{name} decodes the rows differently"
    seconds = dict.fromkeys(ways, 0.0)
    for _ in range(args.rounds):
        for name, way in ways.items():
            started = time.perf_counter()
            for batch in batches:
                way(batch)
            seconds[name] += time.perf_counter() - started
    total = args.rows * args.rounds
    result: dict[str, float] = {name: round(total / s) for name, s in seconds.items()}
    result["matrix_us_per_row"] = round(matrix_seconds(batches, names) / args.rows * 1e6, 2)
    print(f"{len(names)} sensors a row, batches of {args.batch:,}, {total:,} rows per decoder")
    for name in ways:
        rate = result[name]
        micro = 1e6 / rate
        ratio = seconds["decode_rows"] / seconds[name]
        print(f"{name:>16}: {rate:>9,} rows/s  {micro:5.1f} us a row  {ratio:4.2f}x decode_rows")
    print(
        f"{'of which':>16}: {result['matrix_us_per_row']:.1f} us a row builds the float32 "
        "matrix from the parsed values alone"
    )
    if "msgspec struct" not in ways:
        print("(msgspec is not installed: pip install msgspec to measure it too)")
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
