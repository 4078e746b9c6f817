"""Backtest method names, their inputs, error scores, ensembles and supervised heads."""

import numpy as np
import pytest

from streamer.errorscore import ErrorScore
from streamer.head import TreeEnsemble
from streamer.labels import Horizon
from streamer.score_spec import load_trees
from trainer.data import read_table
from trainer.ensemble import combine, percentile
from trainer.inputs import Source, minutes_since_restart
from trainer.methods import Inputs, parse_method
from trainer.prepare import feature_spec, prepare
from trainer.supervised import export_trees, fit_head, widened_labels

pytestmark = pytest.mark.unit


def test_a_method_name_reads_as_parts_options_and_decision():
    method = parse_method("lstm-rc-lb10-maha+gbm-rc30-ck-sm3-ats", 60.0)
    lstm, gbm = method.parts
    assert (lstm.model, lstm.inputs.recentre, lstm.lookback, lstm.errors) == (
        "lstm",
        60,
        10,
        "maha",
    )
    assert (gbm.model, gbm.inputs.recentre, gbm.inputs.clock) == ("gbm", 30.0, True)
    assert (method.smooth, method.adaptive, method.combine) == (3, "stretch", "rank")
    assert parse_method("pca", 60.0).parts[0].inputs == Inputs()


@pytest.mark.parametrize("name", ["svm", "pca-xx", "pca-lb", "pca-rc+nope"])
def test_an_unreadable_method_name_is_refused(name):
    with pytest.raises(ValueError, match=r"method|needs a number"):
        parse_method(name, 60.0)


@pytest.fixture
def source(plant_csv):
    table = read_table([plant_csv])
    spec = feature_spec(table, "auto", "drop")
    return Source.of(table, spec, prepare(table, spec, Horizon()))


def test_inputs_append_differences_one_hot_levels_and_the_restart_clock(source):
    p = source.prepared
    plain = source.rows(Inputs())
    both = source.rows(Inputs(recentre=30.0, diffs=True, onehot=True, clock=True))
    width = plain.shape[1]
    assert both.shape == (len(p), 2 * width + 2 + 1)  # grade has levels 3 and 7
    assert np.allclose(
        both[1:, width : 2 * width][p.segments[1:] == p.segments[:-1]],
        np.diff(plain, axis=0)[p.segments[1:] == p.segments[:-1]],
        atol=1e-5,
    )
    assert set(np.unique(both[:, 2 * width : 2 * width + 2].sum(axis=1))) == {1.0}
    clock = minutes_since_restart(p)
    assert clock[0] == 0 and np.all(clock[p.segments == p.segments[0]][1:] > 0)
    assert source.rows(Inputs(recentre=30.0, diffs=True, onehot=True, clock=True)) is both


def test_rolling_re_centring_subtracts_the_mean_of_the_previous_minutes(source):
    p = source.prepared
    rolled = source.rows(Inputs(rolling=10.0))
    i = 50  # rows 2 minutes apart: [t - 10, t) holds the 5 rows before row i
    assert np.allclose(rolled[i], p.rows[i] - p.rows[i - 5 : i].mean(axis=0), atol=1e-5)


def test_widened_labels_mark_the_minutes_before_each_break(source):
    p = source.prepared
    labels = widened_labels(p, 20.0)
    ahead = p.break_times[0] - p.times
    assert np.all(labels[(ahead > 0) & (ahead <= 20)] == 1)
    assert labels.sum() == pytest.approx(10 * len(p.break_times), abs=10)


def test_error_scores_weigh_each_sensor_by_its_usual_error():
    rng = np.random.default_rng(0)
    usual = rng.normal(size=(2000, 3)) * np.array([10.0, 1.0, 1.0])
    odd = np.array([[0.0, 5.0, 0.0], [5.0, 0.0, 0.0]])
    for kind in ("norm", "maha"):
        fitted = ErrorScore.fit(kind, usual)
        high, low = fitted.score(odd)
        assert high > 5 * low  # 5 units is a lot for sensor 2 and little for sensor 1
        again = ErrorScore.from_dict(fitted.to_dict())
        assert np.allclose(again.score(odd), fitted.score(odd))
    assert ErrorScore.fit("mean", usual).score(odd)[0] == pytest.approx(25 / 3)


def test_rank_ensemble_maps_each_member_against_its_reference_rows():
    a = np.array([1.0, 2.0, 3.0, 4.0, np.nan])
    b = np.array([100.0, 300.0, 200.0, 400.0, 0.0])
    ref = np.array([True, True, True, True, False])
    assert percentile(np.array([2.5]), a[:4])[0] == 0.5
    ranked = combine([a, b], ref, "rank")
    assert np.isnan(ranked[-1]) and np.argmax(ranked[:4]) == 3
    assert np.argmax(combine([a, b], ref, "z")[:4]) == 3


def test_exported_trees_score_exactly_like_the_fitted_model_and_load_without_pickle(tmp_path):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(600, 5))
    y = (x[:, 0] + x[:, 1] ** 2 + 0.3 * rng.normal(size=600) > 1.2).astype(int)
    x[::9, 2] = np.nan
    model = fit_head("gbm", x, y, seed=0)
    trees = export_trees(model)
    trees.save(tmp_path / "head.npz")
    again = TreeEnsemble.load(tmp_path / "head.npz")
    np.testing.assert_allclose(again.decision(x), model.decision_function(x), rtol=1e-9)
    # Trees of different sizes are padded with leaves, which the bundle check accepts.
    assert len({int((~leaf).sum()) for leaf in trees.leaf}) > 1
    checked = load_trees(tmp_path / "head.npz", features=5)
    np.testing.assert_array_equal(checked.decision(x), again.decision(x))
