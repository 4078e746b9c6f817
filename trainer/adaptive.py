"""Choosing the target alert rate of an adaptive threshold on validation days.

The online threshold (:mod:`streamer.calibrate`) runs over the validation days and on
into the test days, as it would in the streamer after a new model goes live. The rate is the
highest that keeps the validation days within the false-alarm budget: a few validation breaks
rank rates poorly, while false alarms are many and the budget is what the rate controls.

A few validation days can still flatter a high rate: their alert rows may bunch into a few
long episodes where later days scatter them (on the dev data's default split, validation
allowed a rate of 0.03, which gave 8.5 false alarms a day on the test days). So the rate is
also capped at ``EPISODE_ROWS`` alert rows a day per false-alarm episode of the budget. The
cap is above every rate the walk-forward folds chose for the reference LSTM's score.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from streamer.calibrate import Calibration, tail_edges
from streamer.episodes import EpisodePolicy
from streamer.events import MINUTES_PER_DAY
from trainer.evaluate import breaks_in_range, event_result, row_thresholds
from trainer.prepare import Prepared

RATES = tuple(float(r) for r in np.geomspace(0.0005, 0.05, 21).round(5))
ANCHOR_RATE = 0.05
EPISODE_ROWS = 4.0  # alert rows an episode is assumed to hold, for the rate cap
STRETCHES = tuple(float(k) for k in np.geomspace(8.0, 1.0, 19).round(3))


@dataclass(frozen=True)
class AdaptiveChoice:
    """The chosen calibration (what a bundle carries), and each row's score minus its
    online threshold (NaN off the live rows)."""

    mode: str
    calibration: Calibration
    margins: np.ndarray
    met_budget: bool

    def describe(self) -> str:
        """How the threshold was set, for the log and the table's JSON."""
        c = self.calibration
        if self.mode == "rate":
            return f"rate {c.rate:g}"
        return f"stretch {c.stretch:g} of the {c.rate:g} quantile"


def margins(
    prepared: Prepared, scores: np.ndarray, live: np.ndarray, calibration: Calibration
) -> np.ndarray:
    """Score minus the machine's online threshold, for the ``live`` rows in time order
    (NaN elsewhere)."""
    return scores - row_thresholds(calibration, calibration.fallback, prepared, scores, live)


def rate_cap(budget: float, interval_minutes: float) -> float:
    """The rate at which a machine's alert rows a day fill the false-alarm budget with
    episodes of ``EPISODE_ROWS`` rows."""
    return budget * EPISODE_ROWS * interval_minutes / MINUTES_PER_DAY


def candidates(mode: str, max_rate: float = 1.0) -> list[tuple[float, float]]:
    """(rate, stretch) pairs from the quietest to the loudest: ``rate`` reads the quantile
    directly (at most ``max_rate``, at least the lowest rate), ``stretch`` extrapolates
    from the 5% quantile."""
    if mode == "rate":
        return [(r, 1.0) for r in RATES if r <= max_rate] or [(RATES[0], 1.0)]
    if mode == "stretch":
        return [(ANCHOR_RATE, k) for k in STRETCHES]
    raise ValueError(f"unknown adaptive threshold mode {mode!r}")


def choose_calibration(
    prepared: Prepared,
    scores: np.ndarray,
    val: np.ndarray,
    live: np.ndarray,
    policy: EpisodePolicy,
    budget: float,
    fallback: float,
    minutes: float,
    mode: str = "rate",
    leads: tuple[float, float] = (2.0, 20.0),
) -> AdaptiveChoice:
    """The loudest candidate with at most ``budget`` false alarms per validation day
    (else the quietest), its rate capped by :func:`rate_cap`."""
    idx = np.flatnonzero(val & np.isfinite(scores))
    edges = tail_edges(scores[idx])
    in_range = breaks_in_range(prepared, idx)
    chosen: AdaptiveChoice | None = None
    for rate, stretch in candidates(mode, rate_cap(budget, prepared.interval_minutes)):
        calibration = Calibration(edges, rate, minutes, stretch=stretch, fallback=fallback)
        margin = margins(prepared, scores, live, calibration)
        res = event_result(prepared, idx, margin[idx], 0.0, policy, in_range, *leads)
        if res.false_alarms_per_day > budget:
            break
        chosen = AdaptiveChoice(mode, calibration, margin, True)
    if chosen is None:
        rate, stretch = candidates(mode)[0]
        calibration = Calibration(edges, rate, minutes, stretch=stretch, fallback=fallback)
        return AdaptiveChoice(
            mode, calibration, margins(prepared, scores, live, calibration), False
        )
    return chosen
