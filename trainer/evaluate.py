"""Scoring prepared rows with a bundle's model, and judging the scores at row and event level."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from streamer.calibrate import Calibration, thresholds_table
from streamer.episodes import EpisodePolicy, episode_starts
from streamer.events import MINUTES_PER_DAY, EventResult, event_metrics
from streamer.features import Scaler
from streamer.scoring import Scorer
from streamer.windows import make_windows
from trainer.intervals import interval_figures
from trainer.metrics import bootstrap_ci, roc_auc_event_ci, row_metrics
from trainer.prepare import Prepared

_KEY_SCALE = 1e8  # minutes since the epoch stay below this until the 22nd century


def score_rows(prepared: Prepared, scaler: Scaler, lookback: int, scorer: Scorer) -> np.ndarray:
    """Score every kept row that has a full window; rows still warming up get NaN."""
    windows, ends = make_windows(scaler.transform(prepared.rows), prepared.segments, lookback)
    scores = np.full(len(prepared), np.nan)
    if len(ends):
        scores[ends] = scorer.score(windows)[0]
    return scores


@dataclass(frozen=True)
class Judgement:
    """The figures of one evaluation, ready for printing, JSON and the report."""

    figures: dict[str, Any]
    events: EventResult
    labels: np.ndarray
    scores: np.ndarray
    times: np.ndarray
    break_times: np.ndarray
    thresholds: np.ndarray | None = None  # per judged row, where the threshold adapts


def next_break_of_row(prepared: Prepared) -> np.ndarray:
    """For each row, the index of the next break of its machine (or -1 if none follows)."""
    break_keys = prepared.break_groups * _KEY_SCALE + prepared.break_times
    order = np.argsort(break_keys)
    row_keys = prepared.groups * _KEY_SCALE + prepared.times
    pos = np.searchsorted(break_keys[order], row_keys, side="right")
    found = pos < len(order)
    result = np.full(len(prepared), -1)
    result[found] = order[pos[found]]
    same = np.zeros(len(prepared), dtype=bool)
    same[found] = prepared.break_groups[result[found]] == prepared.groups[found]
    result[~same] = -1
    return result


def row_thresholds(
    calibration: Calibration | None,
    threshold: float,
    prepared: Prepared,
    scores: np.ndarray,
    live: np.ndarray | None = None,
) -> float | np.ndarray:
    """The threshold each row meets in the streamer: the fixed one, or, with a
    ``calibration``, its machine's adaptive one as of that row, starting from the prior at
    the first ``live`` row (all rows by default), as in a streamer that took the bundle then.
    """
    if calibration is None:
        return threshold
    on = scores if live is None else np.where(live, scores, np.nan)
    return thresholds_table(calibration, on, prepared.times, prepared.groups)


def judge(
    prepared: Prepared,
    scores: np.ndarray,
    mask: np.ndarray,
    threshold: float | np.ndarray,
    policy: EpisodePolicy,
    min_lead: float = 2.0,
    max_lead: float = 20.0,
    intervals: bool = True,
) -> Judgement:
    """Row- and event-level figures for the rows in ``mask`` that have a score.

    ``threshold`` is one value, or one per prepared row (an adaptive threshold); ranking
    figures (ROC and PR AUC) are of the scores either way. Rows without a full window
    (warming up after a start or a gap) have no score and are not judged; ``unscored_rows``
    counts them. Interval labels get per-interval figures instead of the event ones
    (breaks warned, lead, false-alarm episodes).
    """
    judged = np.asarray(mask, dtype=bool) & np.isfinite(scores)
    idx = np.flatnonzero(judged)
    labels, values = prepared.labels[idx], scores[idx]
    limit: float | np.ndarray = threshold
    if isinstance(threshold, np.ndarray):
        limit = threshold[idx]
    in_range = breaks_in_range(prepared, idx)
    events = event_result(prepared, idx, values, limit, policy, in_range, min_lead, max_lead)
    figures: dict[str, Any] = {
        "rows": len(idx),
        "unscored_rows": int(np.sum(np.asarray(mask, dtype=bool) & ~np.isfinite(scores))),
        "positive_rows": int(labels.sum()),
        "days": round(events.days, 3),
        "threshold": _threshold_figure(limit),
        **row_metrics(labels, values, limit),
    }
    if prepared.label_mode == "interval":
        alerts = values >= limit
        figures |= interval_figures(labels, alerts, prepared.times[idx], prepared.groups[idx])
    else:
        figures |= _event_figures(events, intervals)
        figures["lead_window_minutes"] = [min_lead, max_lead]
    if intervals:
        figures["roc_auc_ci"] = roc_auc_event_ci(labels, values, next_break_of_row(prepared)[idx])
    return Judgement(
        _clean(figures),
        events,
        labels,
        values,
        prepared.times[idx],
        prepared.break_times[in_range],
        limit if isinstance(limit, np.ndarray) else None,
    )


def _event_figures(events: EventResult, intervals: bool) -> dict[str, Any]:
    """Breaks warned ahead, lead and false-alarm episodes: figures of break events only."""
    figures: dict[str, Any] = {
        "breaks": events.breaks,
        "breaks_warned": int(events.warned.sum()),
        "event_recall": events.recall,
        "median_lead_minutes": events.median_lead,
        "lead_minutes": [round(x, 1) for x in events.leads[events.warned].tolist()],
        "episodes": events.episodes,
        "false_alarm_episodes": events.false_alarms,
        "false_alarm_episodes_per_day": events.false_alarms_per_day,
    }
    if intervals:
        figures["event_recall_ci"] = bootstrap_ci(events.warned.astype(float), np.mean)
        figures["median_lead_ci"] = bootstrap_ci(events.leads[events.warned], np.median)
    return figures


def _threshold_figure(limit: float | np.ndarray) -> float | dict[str, Any]:
    """The fixed threshold, or the spread of the adaptive one over the judged rows."""
    if not isinstance(limit, np.ndarray):
        return limit
    if not len(limit):
        return {"adaptive": True}
    low, median, high = np.quantile(limit, [0.05, 0.5, 0.95])
    return {"adaptive": True, "p5": low, "median": median, "p95": high}


def event_result(
    prepared: Prepared,
    idx: np.ndarray,
    values: np.ndarray,
    threshold: float | np.ndarray,
    policy: EpisodePolicy,
    in_range: np.ndarray,
    min_lead: float,
    max_lead: float,
) -> EventResult:
    """Episodes of the judged rows ``idx`` (scores ``values``) against the breaks in range."""
    starts = idx[episode_starts(values >= threshold, prepared.segments[idx], policy)]
    days = len(idx) * prepared.interval_minutes / MINUTES_PER_DAY
    return event_metrics(
        prepared.times[starts],
        prepared.groups[starts],
        prepared.break_times[in_range],
        prepared.break_groups[in_range],
        days,
        min_lead,
        max_lead,
    )


def breaks_in_range(prepared: Prepared, idx: np.ndarray) -> np.ndarray:
    """Breaks that fall inside the judged stretch (rows ``idx``) of their machine."""
    times, groups = prepared.times[idx], prepared.groups[idx]
    inside = np.zeros(len(prepared.break_times), dtype=bool)
    for g in np.unique(groups):
        mine = times[groups == g]
        lo, hi = mine.min(), mine.max() + prepared.max_gap_minutes
        inside |= (
            (prepared.break_groups == g)
            & (prepared.break_times > lo)
            & (prepared.break_times <= hi)
        )
    return inside


def _clean(value: Any) -> Any:
    """JSON-friendly: NaN becomes None, tuples lists, numbers rounded for reading."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, float | np.floating):
        return None if not math.isfinite(float(value)) else round(float(value), 6)
    if isinstance(value, np.integer):
        return int(value)
    return value
