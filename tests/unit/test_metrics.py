"""Evaluation metrics against hand-computed cases."""

import collections

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from streamer.events import event_metrics
from streamer.leadtime import Verdict, WarningWindow
from streamer.metrics import StreamerMetrics
from streamer.shadow import ShadowOutcome
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


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(0, 300), min_size=1, max_size=40, unique=True),
    st.data(),
)
def test_live_break_judgement_agrees_with_the_evaluation(times, data):
    times.sort()
    kinds = data.draw(st.lists(st.booleans(), min_size=len(times), max_size=len(times)))
    opens = np.array([t for t, is_break in zip(times, kinds, strict=True) if not is_break], float)
    breaks = np.array([t for t, is_break in zip(times, kinds, strict=True) if is_break], float)
    window = WarningWindow(min_lead_minutes=2.0, max_lead_minutes=20.0)
    openings: tuple[int, ...] = ()
    verdicts = []
    for t, is_break in zip(times, kinds, strict=True):
        if is_break:
            verdicts.append(window.judge(openings, t * 60_000))
        else:
            openings = window.remember(openings, t * 60_000)
    expected = event_metrics(opens, np.zeros(len(opens)), breaks, np.zeros(len(breaks)), days=1.0)
    assert [v.warned for v in verdicts] == expected.warned.tolist()
    warned_leads = [v.lead_seconds for v in verdicts if v.warned]
    assert warned_leads == (expected.leads[expected.warned] * 60).tolist()
    assert len(openings) <= 21  # only openings that can still warn are kept


def test_a_late_warning_is_missed_but_reports_its_lead():
    window = WarningWindow(min_lead_minutes=2.0, max_lead_minutes=20.0)
    openings = window.remember((), 100 * 60_000)
    assert window.judge(openings, 101 * 60_000) == Verdict(False, 60.0)
    assert window.judge(openings, 102 * 60_000) == Verdict(True, 120.0)
    assert window.judge(openings, 121 * 60_000) == Verdict(False, None)
    assert window.judge((), 5) == Verdict(False, None)


def test_the_warning_window_comes_from_the_bundle_manifest():
    manifest = {"evaluation": {"min_lead_minutes": 5, "max_lead_minutes": 30}}
    assert WarningWindow.from_manifest(manifest) == WarningWindow(5.0, 30.0)
    assert WarningWindow.from_manifest({}) == WarningWindow(2.0, 20.0)


def test_breaks_are_counted_as_warned_or_missed_with_their_lead():
    registry = CollectorRegistry()
    metrics = StreamerMetrics(registry)
    metrics.count_breaks([Verdict(True, 600.0), Verdict(False, 60.0), Verdict(False)])
    value = registry.get_sample_value
    assert value("sheetbreak_breaks_total", {"outcome": "warned"}) == 1
    assert value("sheetbreak_breaks_total", {"outcome": "missed"}) == 2
    assert value("sheetbreak_warning_lead_seconds_count") == 2
    assert value("sheetbreak_warning_lead_seconds_bucket", {"le": "120.0"}) == 1
    assert value("sheetbreak_warning_lead_seconds_sum") == 660.0


def test_shadow_metrics_carry_one_candidate_version_at_a_time():
    registry = CollectorRegistry()
    shadow = StreamerMetrics(registry).shadow
    value = registry.get_sample_value
    assert value("sheetbreak_shadow_loads_total", {"result": "loaded"}) is None
    shadow.watching()
    assert value("sheetbreak_shadow_loads_total", {"result": "refused"}) == 0
    shadow.use("c1", 2.5)
    events = collections.Counter({"open": 2, "resolved": 1})
    shadow.record(ShadowOutcome("c1", np.array([0.1, 3.0]), events, [Verdict(True, 300.0)]))
    c1 = {"model_version": "c1"}
    assert value("sheetbreak_shadow_threshold", c1) == 2.5
    assert value("sheetbreak_shadow_alerts_total", {**c1, "status": "open"}) == 2
    assert value("sheetbreak_shadow_alerts_total", {**c1, "status": "update"}) == 0
    assert value("sheetbreak_shadow_reconstruction_error_count", c1) == 2
    assert value("sheetbreak_shadow_breaks_total", {**c1, "outcome": "warned"}) == 1
    assert value("sheetbreak_shadow_warning_lead_seconds_sum", c1) == 300.0
    shadow.use("c2", 1.0)
    versions = {
        s.labels.get("model_version")
        for family in registry.collect()
        for s in family.samples
        if "model_version" in s.labels
    }
    assert versions == {"c2"}
    shadow.use(None)
    assert value("sheetbreak_shadow_threshold", {"model_version": "c2"}) is None
    # The serving model's metrics are untouched by the candidate's.
    assert value("sheetbreak_breaks_total", {"outcome": "warned"}) == 0
