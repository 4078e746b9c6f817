"""Judging alert episodes against breaks the way a plant does: warned, lead, false alarms."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MINUTES_PER_DAY = 1440.0


@dataclass(frozen=True)
class EventResult:
    """Which breaks were warned, how early, and how many episodes were false alarms."""

    warned: np.ndarray
    leads: np.ndarray
    false_alarms: int
    episodes: int
    days: float

    @property
    def breaks(self) -> int:
        """Number of breaks judged."""
        return int(self.warned.size)

    @property
    def recall(self) -> float:
        """Share of breaks warned in time."""
        return float(self.warned.mean()) if self.warned.size else float("nan")

    @property
    def median_lead(self) -> float:
        """Median minutes of warning among the warned breaks."""
        warned_leads = self.leads[self.warned]
        return float(np.median(warned_leads)) if warned_leads.size else float("nan")

    @property
    def false_alarms_per_day(self) -> float:
        """False-alarm episodes per day of evaluated operation."""
        return self.false_alarms / self.days if self.days > 0 else float("nan")


def event_metrics(
    open_times: np.ndarray,
    open_groups: np.ndarray,
    break_times: np.ndarray,
    break_groups: np.ndarray,
    days: float,
    min_lead: float = 2.0,
    max_lead: float = 20.0,
) -> EventResult:
    """Judge episodes the way a plant would.

    A break is warned when an episode of its machine opens between ``max_lead`` and
    ``min_lead`` minutes before it; its lead is that of the earliest such opening. An
    episode is a false alarm when no break of its machine follows within ``max_lead``.
    """
    warned = np.zeros(len(break_times), dtype=bool)
    leads = np.full(len(break_times), np.nan)
    for k, (tb, gb) in enumerate(zip(break_times, break_groups, strict=True)):
        mine = open_times[open_groups == gb]
        ahead = tb - mine
        ok = (ahead >= min_lead) & (ahead <= max_lead)
        if ok.any():
            warned[k] = True
            leads[k] = float(ahead[ok].max())
    false_alarms = 0
    for to, go in zip(open_times, open_groups, strict=True):
        after = break_times[break_groups == go] - to
        if not np.any((after > 0) & (after <= max_lead)):
            false_alarms += 1
    return EventResult(warned, leads, false_alarms, len(open_times), days)
