"""What an archive read found, in one line for the log and as fields for JSON."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from trainer.prepare import sampling_interval

_MS_PER_MINUTE = 60_000
_MS_PER_DAY = 86_400_000


@dataclass(frozen=True)
class ReadSummary:
    """What an archive read found: rows, machines, days, breaks, gaps and duplicates."""

    files: int
    rows: int
    machines: tuple[str, ...]
    first: str
    last: str
    days: int
    break_rows: int
    gaps: int
    max_gap_minutes: float
    duplicates: int
    missing_values: int
    non_finite: int
    sensors: int
    sparse: tuple[str, ...] = ()

    def text(self) -> str:
        """One line for the log and the console."""
        names = ", ".join(self.machines[:6]) + (", ..." if len(self.machines) > 6 else "")
        cells = max(self.rows * self.sensors, 1)
        return (
            f"{self.rows:,} rows from {self.files} files; {len(self.machines)} machine(s) "
            f"({names}); {self.first} to {self.last} ({self.days} days with rows); "
            f"{self.break_rows} break rows; {self.gaps} gaps over {self.max_gap_minutes:g} min; "
            f"{self.duplicates} duplicate rows dropped; {self.sensors} sensors, "
            f"{100 * self.missing_values / cells:.2f}% of values missing"
            + (f" ({self.non_finite} non-finite read as missing)" if self.non_finite else "")
            + (f"; mostly missing: {', '.join(self.sparse)} (see --drop)" if self.sparse else "")
        )

    def to_dict(self) -> dict[str, Any]:
        """The summary as JSON-ready fields."""
        return {
            **dataclasses.asdict(self),
            "machines": list(self.machines),
            "sparse": list(self.sparse),
        }


def summarise(
    values: np.ndarray,
    sensors: tuple[str, ...],
    rows: tuple[np.ndarray, np.ndarray, np.ndarray],
    names: list[str],
    max_gap_minutes: float | None,
    counts: dict[str, int],
) -> ReadSummary:
    """What was read, from the sorted arrays: (epoch ms, machine codes, labels) per row."""
    times, codes, labels = rows
    minutes = times / _MS_PER_MINUTE
    gap = max_gap_minutes or 5.0 * sampling_interval(minutes, codes)
    same = codes[1:] == codes[:-1]
    missing = [int(np.isnan(values[:, j]).sum()) for j in range(values.shape[1])]
    return ReadSummary(
        files=counts["files"],
        rows=int(times.size),
        machines=tuple(names),
        first=_iso(int(times.min())),
        last=_iso(int(times.max())),
        days=int(np.unique(times // _MS_PER_DAY).size),
        break_rows=int(labels.sum()),
        gaps=int((np.diff(minutes)[same] > gap).sum()),
        max_gap_minutes=round(gap, 3),
        duplicates=counts["duplicates"],
        missing_values=sum(missing),
        non_finite=counts["non_finite"],
        sensors=len(sensors),
        # Rows lacking a sensor with no earlier value to carry are dropped in training.
        sparse=tuple(s for s, m in zip(sensors, missing, strict=True) if 2 * m > times.size),
    )


def _iso(ms: int) -> str:
    return pd.Timestamp(ms, unit="ms", tz="UTC").strftime("%Y-%m-%d %H:%M UTC")
