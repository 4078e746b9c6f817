"""Evaluation metrics against hand-computed cases."""

import numpy as np
import pytest

from streamer.events import event_metrics
from trainer.metrics import bootstrap_ci, roc_auc_event_ci, row_metrics

pytestmark = pytest.mark.unit


def test_row_metrics_confusion_and_rates():
    labels = np.array([0, 0, 0, 0, 1, 1])
    scores = np.array([0.1, 0.2, 0.7, 0.3, 0.8, 0.4])
    m = row_metrics(labels, scores, threshold=0.5)
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (1, 1, 1, 3)
    assert m["recall"] == 0.5
    assert m["precision"] == 0.5
    assert m["fpr"] == 0.25
    # 8 positive/negative pairs; only 0.4 < 0.7 is ranked the wrong way.
    assert m["roc_auc"] == pytest.approx(7 / 8)


def test_event_metrics_warned_lead_and_false_alarms():
    # Machine 0 breaks at 100 and 300; machine 1 at 200.
    breaks_t = np.array([100.0, 300.0, 200.0])
    breaks_g = np.array([0, 0, 1])
    # Episodes: 0@85 warns the break at 100 (lead 15); 0@99 is too late (lead 1 < 2) but
    # not a false alarm (a break follows within 20); 0@150 is a false alarm; 1@170 is 30
    # minutes early: too early to count, and a false alarm; 0@290 warns at lead 10.
    opens_t = np.array([85.0, 99.0, 150.0, 170.0, 290.0])
    opens_g = np.array([0, 0, 0, 1, 0])
    r = event_metrics(opens_t, opens_g, breaks_t, breaks_g, days=2.0, min_lead=2, max_lead=20)
    assert r.warned.tolist() == [True, True, False]
    assert r.leads[:2].tolist() == [15.0, 10.0]
    assert r.recall == pytest.approx(2 / 3)
    assert r.median_lead == 12.5
    assert r.false_alarms == 2
    assert r.false_alarms_per_day == 1.0
    assert r.episodes == 5


def test_event_metrics_uses_the_earliest_qualifying_episode():
    r = event_metrics(
        np.array([80.0, 95.0]), np.array([0, 0]), np.array([100.0]), np.array([0]), days=1.0
    )
    assert r.leads.tolist() == [20.0]


def test_bootstrap_interval_brackets_the_statistic_and_is_reproducible():
    values = np.array([1.0] * 6 + [0.0] * 4)
    low, high = bootstrap_ci(values, np.mean, seed=1)
    assert low < 0.6 < high
    assert (low, high) == bootstrap_ci(values, np.mean, seed=1)
    assert bootstrap_ci(np.array([]), np.mean) != bootstrap_ci(values, np.mean)


def test_roc_interval_resamples_events_not_rows():
    rng = np.random.default_rng(0)
    labels = np.array([0] * 200 + [1] * 20)
    # The two rows before each break are near-copies: same score.
    scores = np.concatenate([rng.normal(0, 1, 200), np.repeat(rng.normal(1, 1, 10), 2)])
    events = np.array([-1] * 200 + [k // 2 for k in range(20)])
    low, high = roc_auc_event_ci(labels, scores, events, resamples=200)
    auc = row_metrics(labels, scores, 0.0)["roc_auc"]
    assert low < auc < high
    # Ten events give a wider interval than pretending twenty rows are independent.
    low_rows, high_rows = roc_auc_event_ci(labels, scores, np.arange(220), resamples=200)
    assert high - low > high_rows - low_rows
