"""Alert episodes: consecutive alert rows, with hysteresis, form one episode."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class EpisodePolicy:
    """An episode closes after ``clear_rows`` consecutive rows below the threshold."""

    clear_rows: int = 3

    def __post_init__(self) -> None:
        if self.clear_rows < 1:
            raise ValueError("clear_rows must be at least 1")


def episode_starts(alerts: np.ndarray, segments: np.ndarray, policy: EpisodePolicy) -> np.ndarray:
    """Indices of the rows that open an episode, given per-row alert flags.

    Rows are one machine's scored rows in time order (or several machines' rows, each
    machine in its own segments). A segment boundary (a restart, a gap, a break) closes
    any open episode. An alert row opens an episode unless another alert row of the same
    segment lies within the previous ``clear_rows`` rows.
    """
    alerts = np.asarray(alerts, dtype=bool)
    n = alerts.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    index = np.arange(n)
    seg_start = np.ones(n, dtype=bool)
    seg_start[1:] = segments[1:] != segments[:-1]
    first_of_segment = np.maximum.accumulate(np.where(seg_start, index, 0))
    # Index of the latest alert at or before each row, then shifted to "strictly before".
    latest = np.maximum.accumulate(np.where(alerts, index, -1))
    previous = np.full(n, -1)
    previous[1:] = latest[:-1]
    previous[previous < first_of_segment] = -1
    opens = alerts & ((previous < 0) | (index - previous > policy.clear_rows))
    return np.flatnonzero(opens)


SEVERITIES = ("warning", "high", "critical")


def severity(score: float, threshold: float) -> str:
    """How far over the threshold: under 2x warning, under 5x high, else critical."""
    ratio = score / threshold if threshold > 0 else float("inf")
    return "warning" if ratio < 2 else "high" if ratio < 5 else "critical"


@dataclass(frozen=True, slots=True)
class EpisodeState:
    """One machine's episode: closed (``started_ms`` None) or open since ``started_ms``."""

    started_ms: int | None = None
    below: int = 0
    events: int = 0
    severity: str = ""
    peak: float = 0.0


@dataclass(slots=True)
class Step:
    """What a batch does to one machine's episode: a scored row, or a cut for ``reason``."""

    machine: str
    ts_ms: int
    position: int = -1  # the row's index among the batch's scores; -1 for a cut
    reason: str = ""


def scored_rows(steps: list[Step]) -> tuple[list[str], np.ndarray]:
    """The machine and time (in minutes) of each scored step, in score order."""
    scored = [step for step in steps if step.position >= 0]
    minutes = np.fromiter((step.ts_ms for step in scored), np.float64, len(scored)) / 60_000.0
    return [step.machine for step in scored], minutes


@dataclass(frozen=True, slots=True)
class Transition:
    """An episode event to publish: ``open``, ``update`` or ``resolved``."""

    status: str
    started_ms: int
    sequence: int
    severity: str
    peak: float
    reason: str = ""


def advance(
    state: EpisodeState, ts_ms: int, score: float, threshold: float, policy: EpisodePolicy
) -> tuple[EpisodeState, Transition | None]:
    """Advance one scored row; the same rule as :func:`episode_starts`, row by row."""
    alert = score >= threshold
    if state.started_ms is None:
        if not alert:
            return state, None
        level = severity(score, threshold)
        opened = EpisodeState(ts_ms, 0, 1, level, score)
        return opened, Transition("open", ts_ms, 0, level, score)
    if alert:
        level = severity(score, threshold)
        peak = max(state.peak, score)
        if SEVERITIES.index(level) > SEVERITIES.index(state.severity):
            moved = EpisodeState(state.started_ms, 0, state.events + 1, level, peak)
            return moved, Transition("update", state.started_ms, state.events, level, peak)
        return EpisodeState(state.started_ms, 0, state.events, state.severity, peak), None
    if state.below + 1 >= policy.clear_rows:
        return close(state, "recovered")
    return EpisodeState(
        state.started_ms, state.below + 1, state.events, state.severity, state.peak
    ), None


def close(state: EpisodeState, reason: str) -> tuple[EpisodeState, Transition | None]:
    """End an open episode (recovered, break, gap, degraded); a closed one stays closed."""
    if state.started_ms is None:
        return state, None
    done = Transition(
        "resolved", state.started_ms, state.events, state.severity, state.peak, reason
    )
    return EpisodeState(), done
