"""Judging interval labels: which anomalous intervals an alert caught, how late, and how many
normal rows alerted before each onset (where labels mark intervals, not break events)."""

from __future__ import annotations

from typing import Any

import numpy as np


def runs(labels: np.ndarray, groups: np.ndarray) -> list[tuple[int, int]]:
    """``(first, end)`` positions of each run of label 1 within a machine (``end`` exclusive)."""
    flags = np.asarray(labels).astype(bool)
    if not flags.size:
        return []
    new_group = np.concatenate([[True], groups[1:] != groups[:-1]])
    starts = np.flatnonzero(flags & (new_group | ~np.concatenate([[False], flags[:-1]])))
    found = []
    for first in starts:
        end = first + 1
        while end < flags.size and flags[end] and not new_group[end]:
            end += 1
        found.append((int(first), int(end)))
    return found


def interval_figures(
    labels: np.ndarray, alerts: np.ndarray, times: np.ndarray, groups: np.ndarray
) -> dict[str, Any]:
    """Per-interval figures of judged rows (in time order within each machine).

    An interval is detected when any of its rows alerts; its delay runs from its first row
    to the first alert inside it; the false-alarm rows before its onset are the alerting
    normal rows since the previous interval of its machine ended (or its first judged row).
    """
    found = runs(labels, groups)
    detected, delay_minutes, delay_rows, before = [], [], [], []
    since = {int(g): int(np.flatnonzero(groups == g)[0]) for g in np.unique(groups)}
    for first, end in found:
        hits = np.flatnonzero(alerts[first:end])
        detected.append(bool(hits.size))
        if hits.size:
            delay_rows.append(int(hits[0]))
            delay_minutes.append(float(times[first + hits[0]] - times[first]))
        lo = since[int(groups[first])]
        before.append(int(np.sum(alerts[lo:first])))
        since[int(groups[first])] = end
    return {
        "intervals": len(found),
        "intervals_detected": int(sum(detected)),
        "interval_recall": float(np.mean(detected)) if found else float("nan"),
        "median_delay_minutes": float(np.median(delay_minutes)) if delay_minutes else None,
        "median_delay_rows": float(np.median(delay_rows)) if delay_rows else None,
        "delay_minutes": [round(x, 4) for x in delay_minutes],
        "delay_rows": delay_rows,
        "false_alarm_rows_before_onset": int(sum(before)),
        "false_alarm_rows_before_onset_by_interval": before,
    }
