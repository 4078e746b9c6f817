"""Re-centring and adaptive thresholds: the table form equals the streamer's row-by-row form."""

import numpy as np
import pytest

from streamer.baseline import Baseline, BaselineState, recentre_step, recentre_table
from streamer.calibrate import (
    Calibration,
    CalibrationState,
    calibrate_step,
    reference_prior,
    tail_edges,
    thresholds_table,
)

pytestmark = pytest.mark.unit


def _machines(seed=3, n=900):
    """Rows of three machines, 2 minutes apart with gaps short and long, one forgetting."""
    rng = np.random.default_rng(seed)
    groups = np.repeat([0, 1, 2], n // 3)
    steps = rng.choice([2.0, 2.0, 2.0, 4.0, 30.0], size=n)
    steps[n // 6] = 5000.0  # longer than the forget horizon of a 60-minute baseline
    minutes = np.cumsum(steps) + 1e7
    rows = (rng.normal(size=(n, 4)) + np.linspace(0, 20, n)[:, None]).astype(np.float32)
    return rows, minutes, groups


def test_recentring_a_table_equals_row_by_row_with_gaps_and_resets():
    rows, minutes, groups = _machines()
    resets = np.zeros(len(rows), bool)
    resets[[50, 400]] = True
    baseline = Baseline(minutes=60.0)
    table, weights = recentre_table(baseline, rows, minutes, groups, resets)
    states: dict[int, BaselineState] = {}
    for i in range(len(rows)):
        state = states.get(int(groups[i]), BaselineState.empty(4))
        before = state.weight
        states[int(groups[i])], residual = recentre_step(
            baseline, state, rows[i], float(minutes[i]), bool(resets[i])
        )
        np.testing.assert_allclose(table[i], residual, rtol=1e-5, atol=1e-5)
        if resets[i] or before == 0:
            assert weights[i] == 0 and not table[i].any()


def test_recentring_removes_a_slow_drift_but_keeps_a_sudden_step():
    minutes = np.arange(600) * 2.0
    rows = (minutes / 100.0)[:, None].astype(np.float32)
    rows[500:] += 5.0
    out, _ = recentre_table(Baseline(30.0), rows, minutes, np.zeros(600, int))
    assert abs(out[400, 0]) < 0.4  # the drift is followed
    assert out[500, 0] > 4.5  # the step stands out on its first row


def test_adaptive_thresholds_of_a_table_equal_row_by_row():
    rng = np.random.default_rng(5)
    _, minutes, groups = _machines(seed=5)
    scores = rng.lognormal(size=len(minutes)) * np.linspace(1, 4, len(minutes))
    scores[::37] = np.nan
    calibration = Calibration(
        edges=tail_edges(scores[:200]), rate=0.05, minutes=300.0, min_weight=20.0, fallback=9.0
    )
    table = thresholds_table(calibration, scores, minutes, groups)
    states: dict[int, CalibrationState] = {}
    for i in range(len(scores)):
        if np.isnan(scores[i]):
            assert np.isnan(table[i])
            continue
        state = states.get(int(groups[i]), CalibrationState.empty(calibration))
        states[int(groups[i])], threshold = calibrate_step(
            calibration, state, float(scores[i]), float(minutes[i])
        )
        assert table[i] == pytest.approx(threshold, rel=1e-9)


def test_adaptive_threshold_holds_the_target_alert_rate_through_drift():
    rng = np.random.default_rng(1)
    n = 20_000
    minutes = np.arange(n) * 2.0
    scores = rng.lognormal(size=n) * np.exp(np.linspace(0, 3, n))  # a twenty-fold drift
    calibration = Calibration(edges=tail_edges(scores[:1000]), rate=0.02, minutes=1440.0)
    thresholds = thresholds_table(calibration, scores, minutes, np.zeros(n, int))
    late = slice(n // 2, n)
    assert np.mean(scores[late] >= thresholds[late]) == pytest.approx(0.02, abs=0.008)
    fixed = np.quantile(scores[:1000], 0.98)
    assert np.mean(scores[late] >= fixed) > 0.5


def test_calibration_round_trips_through_its_manifest_form():
    calibration = Calibration(edges=np.array([0.0, 1.0, 3.0]), rate=0.01, prior=np.ones(2))
    again = Calibration.from_dict(calibration.to_dict())
    assert again.to_dict() == calibration.to_dict()
    assert Baseline.from_dict(Baseline(45.0).to_dict()) == Baseline(45.0)


def test_a_stretched_threshold_extrapolates_past_the_quantile_a_day_can_measure():
    rng = np.random.default_rng(2)
    n = 6000
    scores = rng.normal(size=n)
    minutes = np.arange(n) * 2.0
    calibration = Calibration(tail_edges(scores[:720]), rate=0.05, minutes=1440.0, stretch=2.0)
    thresholds = thresholds_table(calibration, scores, minutes, np.zeros(n, int))
    # median 0 plus twice the 95% quantile of a standard normal
    assert np.median(thresholds[2000:]) == pytest.approx(2 * 1.645, abs=0.2)


def test_a_new_machine_starts_from_the_reference_histogram():
    rng = np.random.default_rng(8)
    reference = rng.lognormal(size=3000)
    edges = tail_edges(reference)
    calibration = Calibration(edges, rate=0.01, prior=reference_prior(edges, reference, 720.0))
    _, first = calibrate_step(calibration, CalibrationState.empty(calibration), 1.0, 0.0)
    assert first == pytest.approx(np.quantile(reference, 0.99), rel=0.05)
