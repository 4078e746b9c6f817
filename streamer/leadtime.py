"""Whether a break was warned in time, judged live the way the trainer's evaluation judges it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_MS_PER_MINUTE = 60_000


@dataclass(frozen=True, slots=True)
class Verdict:
    """One break: warned in time or not, and the lead of its earliest recent episode."""

    warned: bool
    lead_seconds: float | None = None


@dataclass(frozen=True)
class WarningWindow:
    """A break is warned when an episode of its machine opened ``min_lead_minutes`` to
    ``max_lead_minutes`` before it (:func:`streamer.events.event_metrics`, row by row)."""

    min_lead_minutes: float = 2.0
    max_lead_minutes: float = 20.0

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> WarningWindow:
        """The window the bundle was evaluated with; the trainer's defaults for older bundles."""
        evaluation = manifest.get("evaluation") or {}
        default = cls()
        return cls(
            float(evaluation.get("min_lead_minutes", default.min_lead_minutes)),
            float(evaluation.get("max_lead_minutes", default.max_lead_minutes)),
        )

    def remember(self, openings: tuple[int, ...], opened_ms: int) -> tuple[int, ...]:
        """Add an episode opening; those too old to warn of any later break are dropped."""
        horizon = self.max_lead_minutes * _MS_PER_MINUTE
        return (*(t for t in openings if opened_ms - t <= horizon), opened_ms)

    def judge(self, openings: tuple[int, ...], break_ms: int) -> Verdict:
        """Judge a break by the episodes that opened within ``max_lead_minutes`` before it.

        The lead is that of the earliest qualifying opening, as in the trainer; a break whose
        only recent episodes opened too late is missed, and reports the lead it did get.
        """
        leads = [
            (break_ms - t) / _MS_PER_MINUTE
            for t in openings
            if 0 <= break_ms - t <= self.max_lead_minutes * _MS_PER_MINUTE
        ]
        if not leads:
            return Verdict(False)
        in_time = [lead for lead in leads if lead >= self.min_lead_minutes]
        best = max(in_time) if in_time else max(leads)
        return Verdict(bool(in_time), best * 60.0)
