"""Archive record batches gathered into compact float32 columns, then one sorted table."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from streamer.errors import DataError
from trainer.data import LABEL, MACHINE, TIME, Table
from trainer.read_summary import ReadSummary, summarise

log = logging.getLogger(__name__)

TIME_COLUMN = "time"
MACHINE_COLUMN = "machine_id"
LABEL_COLUMN = "break"


class Compact:
    """A fixed-size float32 sensor matrix (column-major) with times, machine codes and labels."""

    def __init__(self, capacity: int, sensors: tuple[str, ...]) -> None:
        self.sensors = sensors
        # Column-major, so each sensor is filled, reordered and handed to pandas in place.
        self.values = np.empty((capacity, len(sensors)), dtype=np.float32, order="F")
        self.times = np.empty(capacity, dtype=np.int64)
        self.codes = np.empty(capacity, dtype=np.int32)
        self.labels = np.empty(capacity, dtype=np.int8)
        self.names: dict[str, int] = {}
        self.filled = 0
        self.non_finite = 0

    @property
    def capacity(self) -> int:
        """Rows the arrays were sized for."""
        return int(self.times.size)

    def add(self, batch: pa.RecordBatch) -> None:
        """Convert one record batch straight into the compact arrays."""
        start, end = self.filled, self.filled + batch.num_rows
        if end > self.capacity:
            raise DataError("the archive grew while it was read (more rows than counted); rerun")
        self.codes[start:end] = self._codes(batch.column(MACHINE_COLUMN))
        self.times[start:end] = batch.column(TIME_COLUMN).cast(pa.int64()).to_numpy()
        labels = pc.fill_null(batch.column(LABEL_COLUMN), 0).to_numpy()
        if labels.size and (labels.min() < 0 or labels.max() > 1):
            raise DataError(f"archived break flags must be 0 or 1, found {labels.max()}")
        self.labels[start:end] = labels
        for j, name in enumerate(self.sensors):
            self.values[start:end, j] = batch.column(name).to_numpy(zero_copy_only=False)
        chunk = self.values[start:end]
        infinite = np.isinf(chunk)
        if infinite.any():
            self.non_finite += int(infinite.sum())
            chunk[infinite] = np.nan
        self.filled = end

    def _codes(self, column: pa.Array) -> np.ndarray:
        encoded = pc.dictionary_encode(column)
        lookup = [
            self.names.setdefault(str(n), len(self.names)) for n in encoded.dictionary.to_pylist()
        ]
        indices = encoded.indices.to_numpy(zero_copy_only=False)
        return np.asarray(lookup, dtype=np.int32)[indices]

    def finish(
        self, files: int, max_gap_minutes: float | None, source: str
    ) -> tuple[Table, ReadSummary]:
        """Sort by machine then time, drop duplicate keys, and wrap the arrays as a table."""
        n = self.filled
        names = sorted(self.names)
        rank = np.empty(len(names), dtype=np.int32)
        rank[[self.names[name] for name in names]] = np.arange(len(names), dtype=np.int32)
        codes = rank[self.codes[:n]]
        order = np.lexsort((self.times[:n], codes))
        times, codes = self.times[:n][order], codes[order]
        duplicate = np.zeros(n, dtype=bool)
        duplicate[1:] = (times[1:] == times[:-1]) & (codes[1:] == codes[:-1])
        if duplicate.any():
            log.warning("dropping %d rows whose machine and time repeat", int(duplicate.sum()))
            order, times, codes = order[~duplicate], times[~duplicate], codes[~duplicate]
        labels = self.labels[:n][order]
        for j in range(len(self.sensors)):
            column = self.values[:, j]
            column[: order.size] = column[order]
        values = self.values[: order.size]
        frame = pd.DataFrame(values, columns=list(self.sensors), copy=False)
        frame.insert(0, LABEL, labels)
        frame.insert(0, MACHINE, np.asarray(names, dtype=object)[codes])
        frame.insert(0, TIME, pd.to_datetime(times, unit="ms", utc=True))
        table = Table(frame=frame, sensors=self.sensors, sources=(source,))
        summary = summarise(
            values,
            self.sensors,
            (times, codes, labels),
            names,
            max_gap_minutes,
            counts={
                "files": files,
                "duplicates": int(duplicate.sum()),
                "non_finite": self.non_finite,
            },
        )
        return table, summary
