"""Walk-forward folds and the comparison table on a synthetic plant."""

import json

import numpy as np
import pytest

from streamer.labels import Horizon
from trainer.backtest import BacktestSettings, backtest, make_folds
from trainer.cli import main
from trainer.data import read_table
from trainer.prepare import feature_spec, prepare

pytestmark = pytest.mark.unit


def test_folds_train_only_on_earlier_days_and_never_cut_a_break(plant_csv, tmp_path):
    table = read_table([plant_csv])
    prepared = prepare(table, feature_spec(table, "auto", "drop"), Horizon())
    settings = BacktestSettings(data=(), out=tmp_path, folds=3, min_train_days=1.0, val_days=0.25)
    folds = make_folds(prepared, settings)
    assert len(folds) == 3
    covered = np.zeros(len(prepared), bool)
    for fold in folds:
        t = prepared.times
        assert t[fold.train].max() < t[fold.val].min() <= t[fold.val].max() < t[fold.test].min()
        assert not (covered & fold.test).any()
        covered |= fold.test
        for tb in prepared.break_times:
            # A break and the 20 minutes before it lie in one set.
            ahead = (t > tb - 20) & (t < tb)
            sets = {
                name for name in ("train", "val", "test") if (getattr(fold, name) & ahead).any()
            }
            assert len(sets) <= 1


def test_backtest_writes_one_row_per_method_on_the_same_folds(plant_csv, tmp_path, capsys):
    code = main(
        [
            "backtest",
            "--data",
            str(plant_csv),
            "--methods",
            "pca,dense",
            "--folds",
            "2",
            "--min-train-days",
            "1",
            "--val-days",
            "0.25",
            "--epochs",
            "2",
            "--out",
            str(tmp_path / "bt"),
            "--json",
        ],
        environ={},
    )
    assert code == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [r["method"] for r in rows] == ["pca", "dense"]
    assert rows[0]["breaks"] == rows[1]["breaks"] > 0
    assert rows[0]["days"] == pytest.approx(rows[1]["days"])
    assert rows[0]["event_recall"] > 0.5
    for name in ("backtest.md", "backtest.json", "backtest.csv", "backtest.png"):
        assert (tmp_path / "bt" / name).stat().st_size > 0


def test_too_little_data_for_the_first_block_is_a_clear_error(plant_csv, tmp_path):
    settings = BacktestSettings(data=(str(plant_csv),), out=tmp_path, min_train_days=30)
    with pytest.raises(ValueError, match="leaves nothing to test"):
        backtest(settings)


def test_backtest_compares_re_centred_supervised_ensemble_and_adaptive_rows(plant_csv, tmp_path):
    methods = ("pca-rc-maha-sm2", "gbm-rc-ck", "pca-rc+gbm-rc-ck-z-ats", "pca-at")
    settings = BacktestSettings(
        data=(str(plant_csv),),
        out=tmp_path,
        methods=methods,
        folds=2,
        min_train_days=1.0,
        val_days=0.25,
        recentre_minutes=30.0,
        calibration_minutes=240.0,
    )
    rows = backtest(settings)
    assert [r["method"] for r in rows] == list(methods)
    assert len({r["breaks"] for r in rows}) == 1
    assert rows[2]["thresholds_by_fold"][0].startswith("stretch")
    assert rows[3]["thresholds_by_fold"][0].startswith("rate")
    assert rows[1]["roc_auc_pooled"] > 0.6
    assert "| pca-at |" in (tmp_path / "backtest.md").read_text()


def test_a_daily_cadence_retrains_before_every_day_on_the_trailing_days(plant_csv, tmp_path):
    table = read_table([plant_csv])
    prepared = prepare(table, feature_spec(table, "auto", "drop"), Horizon())
    settings = BacktestSettings(
        data=(), out=tmp_path, min_train_days=1.0, val_days=0.25, cadence_days=0.5,
        trailing_days=0.5,
    )  # fmt: skip
    folds = make_folds(prepared, settings)
    span = (prepared.times.max() - prepared.times.min()) / 1440
    assert len(folds) == round((span - 1.0) / 0.5)
    t = prepared.times
    for fold in folds:
        # Each block is half a day (the last takes up a remainder shorter than half a block),
        # and its models saw only the half day before its validation rows.
        assert t[fold.test].max() - t[fold.test].min() <= 1.5 * 0.5 * 1440
        assert t[fold.train].min() >= t[fold.val].min() - 0.5 * 1440 - 30
        assert t[fold.train].max() < t[fold.val].min()


def test_backtest_serves_the_short_history_methods(plant_csv, tmp_path):
    methods = ("lstm-ld10-at", "gbm-ft-c5", "pca-ld10+gbm-ft-at")
    settings = BacktestSettings(
        data=(str(plant_csv),), out=tmp_path, methods=methods, folds=2, min_train_days=1.0,
        val_days=0.25, epochs=2, calibration_minutes=240.0,
    )  # fmt: skip
    rows = backtest(settings)
    assert [r["method"] for r in rows] == list(methods)
    assert len({r["breaks"] for r in rows}) == 1
    # The synthetic plant's breaks follow restless sensors: the volatility features rank them.
    assert rows[1]["roc_auc_pooled"] > 0.6
    assert rows[1]["thresholds_by_fold"][0].startswith("threshold")
    assert rows[2]["thresholds_by_fold"][0].startswith("rate")
