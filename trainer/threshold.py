"""Choosing the alert threshold on validation rows by an explicit, named objective."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streamer.episodes import EpisodePolicy
from trainer.evaluate import breaks_in_range, event_result
from trainer.metrics import row_metrics
from trainer.prepare import Prepared

THRESHOLD_MODES = ("adaptive", "fixed")
OBJECTIVES = {
    "events": "most breaks warned with at most BUDGET false-alarm episodes per day",
    "f1": "highest row-level F1 of the shifted labels",
    "fpr": "lowest threshold whose row-level false-positive rate is at most TARGET",
}


@dataclass(frozen=True)
class ThresholdChoice:
    """The chosen value, the objective that chose it and what it scored where it was chosen."""

    value: float
    objective: str
    params: dict[str, float]
    achieved: dict[str, Any] = field(default_factory=dict)
    chosen_on: str = "validation"
    rule: str | None = None  # the objective's rule unless given

    def to_dict(self) -> dict[str, Any]:
        """Manifest form."""
        return {
            "value": self.value,
            "objective": self.objective,
            "rule": self.rule or OBJECTIVES[self.objective],
            "params": self.params,
            "chosen_on": self.chosen_on,
            "achieved_on_validation": self.achieved,
        }


def candidates(values: np.ndarray, count: int = 200) -> np.ndarray:
    """Thresholds to try: quantiles of the validation scores from the median upwards."""
    return np.unique(np.quantile(values, np.linspace(0.5, 0.9995, count)))


def choose_threshold(
    objective: str,
    prepared: Prepared,
    scores: np.ndarray,
    mask: np.ndarray,
    policy: EpisodePolicy,
    budget: float = 2.0,
    target_fpr: float = 0.05,
    min_lead: float = 2.0,
    max_lead: float = 20.0,
    alert_share: float = 1.0,
) -> ThresholdChoice:
    """Pick the threshold on the rows in ``mask`` (the validation rows) by ``objective``;
    with ``alert_share`` below 1, the ``events`` objective keeps at most that share of the
    validation rows in alert."""
    idx = np.flatnonzero(np.asarray(mask, dtype=bool) & np.isfinite(scores))
    if idx.size == 0:
        raise ValueError("no scored validation rows to choose a threshold on")
    values, labels = scores[idx], prepared.labels[idx].astype(bool)
    if objective == "fpr":
        normal = np.sort(values[~labels])
        value = float(np.quantile(normal, 1.0 - target_fpr)) if normal.size else float(values.max())
        fpr = row_metrics(labels, values, value)["fpr"]
        return ThresholdChoice(value, objective, {"target_fpr": target_fpr}, {"fpr": fpr})
    if objective == "f1":
        return _best_f1(values, labels)
    if objective != "events":
        raise ValueError(f"unknown threshold objective {objective!r}; one of {list(OBJECTIVES)}")
    in_range = breaks_in_range(prepared, idx)
    best: tuple[float, float, float] | None = None
    floor = float(np.quantile(values, 1.0 - alert_share)) if alert_share < 1.0 else -np.inf
    for value in candidates(values):
        if value < floor:
            continue
        res = event_result(
            prepared, idx, values, float(value), policy, in_range, min_lead, max_lead
        )
        fa = res.false_alarms_per_day
        if fa > budget:
            continue
        recall = res.recall if res.breaks else 0.0
        key = (recall, -fa, float(value))
        if best is None or key > best:
            best = key
    params = {"budget_per_day": budget, "min_lead": min_lead, "max_lead": max_lead}
    if alert_share < 1.0:
        params["alert_share"] = alert_share
    if best is None:
        # Nothing meets the budget: take the quietest threshold and say so.
        value = float(values.max())
        return ThresholdChoice(value, objective, params, {"met_budget": False})
    recall, neg_fa, value = best
    achieved = {"event_recall": recall, "false_alarm_episodes_per_day": -neg_fa, "met_budget": True}
    return ThresholdChoice(value, objective, params, achieved)


def _best_f1(values: np.ndarray, labels: np.ndarray) -> ThresholdChoice:
    best_value, best_f1 = float(values.max()), -1.0
    for value in candidates(values, 400):
        predicted = values >= value
        tp = float(np.sum(predicted & labels))
        denom = float(predicted.sum() + labels.sum())
        f1 = 2 * tp / denom if denom else 0.0
        if f1 > best_f1:
            best_value, best_f1 = float(value), f1
    return ThresholdChoice(best_value, "f1", {}, {"f1": best_f1})
