"""Choosing the target alert rate of an adaptive threshold on validation days.

The online threshold (:mod:`streamer.calibrate`) runs over the validation days and on
into the test days, as it would in the streamer after a new model goes live. The rate is the highest
that keeps the validation days within the false-alarm budget: a few validation breaks
rank rates poorly, while false alarms are many and the budget is what the rate controls.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from streamer.calibrate import Calibration, tail_edges, thresholds_table
from streamer.episodes import EpisodePolicy
from trainer.evaluate import breaks_in_range, event_result
from trainer.prepare import Prepared

RATES = tuple(float(r) for r in np.geomspace(0.0005, 0.05, 21).round(5))
ANCHOR_RATE = 0.05
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
    """Score minus the machine's online threshold, for the ``live`` rows in time order."""
    on = np.where(live, scores, np.nan)
    return on - thresholds_table(calibration, on, prepared.times, prepared.groups)


def candidates(mode: str) -> list[tuple[float, float]]:
    """(rate, stretch) pairs from the quietest to the loudest: ``rate`` reads the quantile
    directly, ``stretch`` extrapolates from the 5% quantile."""
    if mode == "rate":
        return [(r, 1.0) for r in RATES]
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
    (else the quietest)."""
    idx = np.flatnonzero(val & np.isfinite(scores))
    edges = tail_edges(scores[idx])
    in_range = breaks_in_range(prepared, idx)
    chosen: AdaptiveChoice | None = None
    for rate, stretch in candidates(mode):
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
