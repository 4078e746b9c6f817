"""Horizons and lead windows in minutes or in rows; unset ones follow the sampling interval.

The defaults are counted in sampling intervals, so they mean the same on any file: at the
dev data's 2-minute sampling they are the articles' 4-minute horizon and the plant's 2 to
20 minute lead window; at 1 Hz they are 2, 1 and 10 seconds.
"""

from __future__ import annotations

from streamer.errors import ConfigError
from streamer.labels import Horizon

HORIZON_ROWS = 2
MIN_LEAD_ROWS = 1
MAX_LEAD_ROWS = 10


def minutes_of(
    minutes: float | None, rows: int | None, default_rows: int, interval: float, flag: str
) -> float:
    """A duration given as ``--FLAG`` minutes or ``--FLAG-rows`` rows, else the default rows."""
    if minutes is not None and rows is not None:
        raise ConfigError(f"give --{flag} (minutes) or --{flag}-rows, not both")
    if rows is not None:
        return rows * interval
    return default_rows * interval if minutes is None else float(minutes)


def horizon_of(minutes: float | None, rows: int | None, interval: float) -> Horizon:
    """The labelling horizon: rows if given, else minutes, else ``HORIZON_ROWS`` intervals."""
    if minutes is not None and rows is not None:
        raise ConfigError("give --horizon-minutes or --horizon-rows, not both")
    if rows is not None:
        return Horizon(minutes=None, rows=rows)
    return Horizon(minutes=HORIZON_ROWS * interval if minutes is None else float(minutes))


def lead_window(
    min_lead: float | None,
    min_rows: int | None,
    max_lead: float | None,
    max_rows: int | None,
    interval: float,
) -> tuple[float, float]:
    """The ``(min, max)`` lead in minutes that a warning must have to count."""
    low = minutes_of(min_lead, min_rows, MIN_LEAD_ROWS, interval, "min-lead")
    high = minutes_of(max_lead, max_rows, MAX_LEAD_ROWS, interval, "max-lead")
    if low > high:
        raise ConfigError(
            f"the lead window is empty: the minimum ({low:g} min) exceeds the maximum "
            f"({high:g} min); change --min-lead(-rows) or --max-lead(-rows)"
        )
    return low, high
