"""Producing sensor rows to Kafka: simulated machines, or a real CSV replayed."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
from confluent_kafka import Producer

log = logging.getLogger(__name__)


def replay_rows(
    path: Path,
    machine_id: str,
    time_column: str = "time",
    label_column: str = "y",
    time_format: str | None = None,
) -> Iterator[dict[str, Any]]:
    """Rows of a labelled CSV (the dev data's layout) in the contract form, in file order."""
    frame = pd.read_csv(path)
    for needed in (time_column, label_column):
        if needed not in frame.columns:
            raise ValueError(f"{path}: no column {needed!r}")
    stamps = pd.to_datetime(frame[time_column], format=time_format or "mixed", utc=True)
    sensors = [c for c in frame.columns if c not in (time_column, label_column, "machine_id")]
    machines = frame["machine_id"].astype(str) if "machine_id" in frame.columns else None
    values = frame[sensors].to_numpy(dtype=float)
    ms = stamps.to_numpy(dtype="datetime64[ms]").astype("int64")
    labels = frame[label_column].to_numpy()
    for i in range(len(frame)):
        yield {
            "machine_id": machine_id if machines is None else machines.iloc[i],
            "ts": int(ms[i]),
            "values": dict(zip(sensors, values[i].tolist(), strict=True)),
            "break": int(labels[i]),
        }


def produce(
    producer: Producer,
    topic: str,
    rows: Iterable[dict[str, Any]],
    rate: float = 0.0,
    limit: int | None = None,
    stop: threading.Event | None = None,
    on_row: Callable[[dict[str, Any]], None] | None = None,
    speedup: float | None = None,
) -> int:
    """Send rows keyed by machine at ``rate`` rows per second (0: as fast as possible), or,
    with ``speedup``, at the pace of their own timestamps divided by it."""
    sent, started, first_ts = 0, time.monotonic(), None
    for row in rows:
        if (stop is not None and stop.is_set()) or (limit is not None and sent >= limit):
            break
        first_ts = row["ts"] if first_ts is None else first_ts
        due = _due(sent, row["ts"] - first_ts, rate, speedup)
        if due is not None and due > time.monotonic() - started:
            producer.poll(0)
            time.sleep(max(0.0, due - (time.monotonic() - started)))
        payload = orjson.dumps(row)
        while True:
            try:
                producer.produce(topic, key=row["machine_id"].encode(), value=payload)
                break
            except BufferError:
                producer.poll(0.1)
        if on_row is not None:
            on_row(row)
        sent += 1
        if sent % 10_000 == 0:
            producer.poll(0)
    producer.flush(30)
    return sent


def _due(sent: int, elapsed_ms: int, rate: float, speedup: float | None) -> float | None:
    """Seconds after the start at which the next row is due (None: no pacing)."""
    if speedup:
        return elapsed_ms / 1000.0 / speedup
    return sent / rate if rate > 0 else None
