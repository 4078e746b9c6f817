"""Guarded promotion: a candidate replaces the current bundle only if it warns at least as well
on the same recent held-out rows, both judged by the same evaluation code."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from streamer.bundle import Bundle, Registry, load_bundle
from streamer.errors import BundleError, DataError
from trainer.data import TIME, Table
from trainer.evaluate_job import judge_table

log = logging.getLogger(__name__)

RULE = (
    "both bundles judged at their own thresholds on the candidate's test rows (the newest "
    "days) by the same code; the candidate is accepted if it warns more breaks (event recall) "
    "with false alarms per day within the budget or no more than the current's, or warns as "
    "many breaks with no more false alarms per day (a tie is accepted)"
)
FIGURES = (
    "event_recall",
    "breaks",
    "breaks_warned",
    "false_alarm_episodes_per_day",
    "false_alarm_episodes",
    "median_lead_minutes",
    "days",
    "rows",
    "roc_auc",
    "pr_auc",
    "threshold",
)
CONTEXT = pd.Timedelta(days=1)  # rows before the held-out ones that fill the first windows


@dataclass(frozen=True)
class Judging:
    """How both bundles are judged: the fit's label mode, lead window and false-alarm budget."""

    label_mode: str = "event"
    min_lead: float = 2.0
    max_lead: float = 20.0
    budget: float = 2.0


@dataclass(frozen=True)
class Verdict:
    """The guard's answer with the figures of both bundles on the held-out rows."""

    accepted: bool
    reason: str
    current: str | None
    held_out: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, for the manifest and the decision log."""
        return {
            "accepted": self.accepted,
            "reason": self.reason,
            "rule": RULE,
            "compared_with": self.current,
            "held_out": self.held_out,
            "figures": self.figures,
        }


def compare(candidate: Mapping[str, Any], current: Mapping[str, Any], budget: float) -> str | None:
    """None if the candidate is at least as good as the current bundle (see ``RULE``), else why."""
    recall, alarms = _pair(candidate)
    their_recall, their_alarms = _pair(current)
    told = f"candidate {_said(candidate)}; current {_said(current)}"
    if recall < their_recall:
        return f"the candidate warns fewer breaks ({told})"
    if recall == their_recall and alarms > their_alarms:
        return f"the candidate warns as many breaks with more false alarms ({told})"
    if alarms > max(budget, their_alarms):
        return f"the candidate exceeds the budget of {budget:g} false alarms/day ({told})"
    return None


def _pair(figures: Mapping[str, Any]) -> tuple[float, float]:
    # Without breaks in the held-out rows there is no recall; both bundles then tie on it.
    recall = figures.get("event_recall") or 0.0
    alarms = figures.get("false_alarm_episodes_per_day") or 0.0
    return round(float(recall), 6), round(float(alarms), 6)


def _said(figures: Mapping[str, Any]) -> str:
    return (
        f"{figures.get('breaks_warned')} of {figures.get('breaks')} breaks warned, "
        f"{figures.get('false_alarm_episodes_per_day')} false alarms/day"
    )


def check(
    registry: Registry, candidate: Path, table: Table, test_from: str | None, judging: Judging
) -> Verdict:
    """Judge the candidate (from ``candidate``) and the registry's current bundle alike."""
    current = registry.current()
    if current is None:
        return Verdict(True, "the registry has no current model", None)
    if test_from is None:
        return Verdict(
            False, "guarded promotion needs --split chronological (held-out newest days)", current
        )
    start = pd.Timestamp(test_from)
    rows = table.frame[table.frame[TIME] >= start - CONTEXT]
    held = Table(frame=rows.reset_index(drop=True), sensors=table.sensors, sources=table.sources)
    mine = load_bundle(candidate)
    figures: dict[str, Any] = {"candidate": _figures(mine, held, start, judging), "current": None}
    held_out = {
        "from": test_from,
        "to": str(rows[TIME].max()),
        "rows": figures["candidate"]["rows"],
    }
    try:
        theirs = load_bundle(registry.root / current)
        figures["current"] = _figures(theirs, held, start, judging)
    except (BundleError, DataError) as exc:
        reason = f"the current bundle {current} cannot be judged on these rows: {exc}"
        return Verdict(False, reason, current, held_out, figures)
    seen = _seen_until(theirs)
    held_out["current_trained_on_them"] = seen is not None and seen > start
    if held_out["current_trained_on_them"]:
        log.warning(
            "%s was trained or tuned on some held-out rows; it is judged favourably", current
        )
    if mine.spec.feature_names != theirs.spec.feature_names:
        reason = (
            f"the candidate's {len(mine.spec.feature_names)} features differ from the "
            f"{len(theirs.spec.feature_names)} of {current}: running streamers would refuse it"
        )
        return Verdict(False, reason, current, held_out, figures)
    why_not = compare(figures["candidate"], figures["current"], judging.budget)
    reason = why_not or "the candidate is at least as good as the current bundle"
    return Verdict(why_not is None, reason, current, held_out, figures)


def _seen_until(bundle: Bundle) -> pd.Timestamp | None:
    """Where a bundle's training and validation rows end (all its rows, if split at random)."""
    data = bundle.manifest.get("data", {})
    end = data.get("split", {}).get("test_from") or data.get("to")
    return pd.Timestamp(end) if end else None


def _figures(bundle: Bundle, held: Table, start: pd.Timestamp, judging: Judging) -> dict[str, Any]:
    # Bootstrap intervals are for reading a report; the guard compares point figures.
    judged, *_ = judge_table(
        bundle,
        held,
        judging.label_mode,
        start.value / 6e10,
        judging.min_lead,
        judging.max_lead,
        intervals=False,
    )
    return {k: judged.figures.get(k) for k in FIGURES}
