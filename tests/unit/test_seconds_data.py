"""The trainer on small seconds-scale files with interval labels, as per-file benchmarks ship
them: margins that follow the sampling, an unsupervised span, interval figures, a bench."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from interval_files import interval_file, write_folder

from trainer.cli import build_parser, fit_settings, main
from trainer.intervals import interval_figures

pytestmark = pytest.mark.unit

READ = ["--separator", ";", "--time-column", "datetime", "--label-column", "anomaly"]
READ += ["--drop", "changepoint", "--label-mode", "interval"]
PCA = ["--model", "pca", "--no-progress"]


def run(args, capsys):
    code = main(args, environ={})
    out, err = capsys.readouterr()
    return code, out, err


def write(tmp_path, name="f.csv", **kwargs):
    path = tmp_path / name
    interval_file(kwargs.pop("seed", 1), **kwargs).to_csv(path, sep=";", index=False)
    return path


def manifest_of(out):
    bundle = next(line.split()[-1] for line in out.splitlines() if line.startswith("bundle:"))
    return json.loads((Path(bundle) / "manifest.json").read_text())


def test_train_end_in_rows_keeps_its_place_on_seconds_data(tmp_path, capsys):
    # Minute margins (20 min on 1 Hz rows) used to push training past the first anomaly.
    path = write(tmp_path, onset=450)
    code, out, err = run(
        [
            "fit",
            "--data",
            str(path),
            *READ,
            *PCA,
            "--train-end",
            "400",
            "--registry",
            str(tmp_path / "r"),
            "--threshold",
            "fixed",
            "--objective",
            "f1",
        ],
        capsys,
    )
    assert code == 0, err
    split = manifest_of(out)["data"]["split"]
    assert pd.Timestamp(split["validation_from"]) == pd.Timestamp("2020-03-09 10:06:40+00:00")
    assert manifest_of(out)["evaluation"]["max_lead_minutes"] == pytest.approx(10 / 60)


@pytest.mark.parametrize(
    ("extra", "names"),
    [
        (["--max-lead", "20"], ["--max-lead-rows", "moved a boundary"]),
        (["--val-fraction", "0"], ["--val-fraction", "--split unsupervised"]),
    ],
)
def test_a_split_that_cannot_be_made_names_the_option_to_change(tmp_path, capsys, extra, names):
    # 20 minutes of margin before the onset at row 700 push both boundaries past it.
    path = write(tmp_path, onset=700)
    code, _, err = run(
        [
            "fit",
            "--data",
            str(path),
            *READ,
            *PCA,
            "--train-end",
            "400",
            "--registry",
            str(tmp_path / "r"),
            *extra,
        ],
        capsys,
    )
    assert code == 2
    assert "too few normal rows" not in err
    for name in names:
        assert name in err


def fit_span(tmp_path, capsys, path, *extra):
    code, out, err = run(
        [
            "fit",
            "--data",
            str(path),
            *READ,
            *PCA,
            "--split",
            "unsupervised",
            "--train-end",
            "400",
            "--registry",
            str(tmp_path / "r"),
            "--json",
            *extra,
        ],
        capsys,
    )
    assert code == 0, err
    return manifest_of(out), json.loads(out.strip().splitlines()[-1])


def test_unsupervised_span_trains_on_an_anomalous_part_and_sees_nothing_after_it(tmp_path, capsys):
    # The anomaly lies inside the span: it is trained on unlabelled, not refused.
    frame = interval_file(2, rows=900, onset=150)
    first = tmp_path / "a.csv"
    frame.to_csv(first, sep=";", index=False)
    changed = frame.copy()
    changed.loc[400:, "s1"] += 50.0  # rows after the span: must not move the threshold
    changed.loc[400:, "anomaly"] = 1 - changed.loc[400:, "anomaly"]
    second = tmp_path / "b.csv"
    changed.to_csv(second, sep=";", index=False)
    one, _ = fit_span(tmp_path, capsys, first)
    two, figures = fit_span(tmp_path, capsys, second)
    assert one["threshold"]["value"] == two["threshold"]["value"]
    assert one["scaler"] == two["scaler"]
    assert one["threshold"]["chosen_on"] == "training span"
    assert "labels unused" in one["scaler"]["fitted_on"]
    assert figures["rows"] == 900 - 400  # judged: the rows after the span only


def test_span_threshold_is_the_named_quantile_or_target_rate(tmp_path, capsys):
    path = write(tmp_path)
    manifest, _ = fit_span(tmp_path, capsys, path, "--threshold-quantile", "0.9")
    assert manifest["threshold"]["achieved_on_validation"]["alert_rate"] == pytest.approx(
        0.1, abs=0.01
    )
    doubled, _ = fit_span(
        tmp_path, capsys, path, "--threshold-quantile", "0.9", "--threshold-multiplier", "2"
    )
    assert doubled["threshold"]["value"] == pytest.approx(2 * manifest["threshold"]["value"])
    rated, _ = fit_span(tmp_path, capsys, path, "--target-rate", "0.05")
    assert rated["threshold"]["achieved_on_validation"]["alert_rate"] == pytest.approx(
        0.05, abs=0.01
    )


def test_interval_data_is_judged_per_interval_not_as_breaks(tmp_path, capsys):
    path = write(tmp_path, onset=600, length=150)
    _, figures = fit_span(tmp_path, capsys, path)
    test = figures["test"]
    assert "breaks" not in test and "false_alarm_episodes_per_day" not in test
    assert test["intervals"] == 1
    assert test["intervals_detected"] == 1  # a 150-row drift of three sensors is plain
    assert 0 <= test["median_delay_rows"] < 60
    assert test["f1"] > 0.5
    code, out, _ = run(
        ["evaluate", "--registry", str(tmp_path / "r"), "--data", str(path), *READ, "--json"],
        capsys,
    )
    assert code == 0
    assert "intervals detected:         1 of 1" in out
    assert "breaks warned" not in out


def test_scores_out_writes_exactly_the_rows_the_figures_count(tmp_path, capsys):
    frame = interval_file(3, rows=900, onset=600)
    times = pd.to_datetime(frame["datetime"])
    times[500:] += pd.Timedelta(minutes=5)  # a long gap: the next rows refill their window
    frame["datetime"] = times.dt.strftime("%Y-%m-%d %H:%M:%S")
    path = tmp_path / "gap.csv"
    frame.to_csv(path, sep=";", index=False)
    fit_span(tmp_path, capsys, path)
    scores = tmp_path / "scores.csv"
    code, out, _ = run(
        [
            "evaluate",
            "--registry",
            str(tmp_path / "r"),
            "--data",
            str(path),
            *READ,
            "--scores-out",
            str(scores),
            "--json",
        ],
        capsys,
    )
    assert code == 0
    figures = json.loads(out.strip().splitlines()[-1])["evaluation"]
    written = pd.read_csv(scores)
    assert len(written) == figures["rows"]
    assert figures["unscored_rows"] == 2 * 4  # lookback 5: at the start and after the gap
    assert written["score"].notna().all()
    assert written["alert"].sum() == figures["tp"] + figures["fp"]


def test_bench_fits_a_model_per_file_and_pools_the_counts(tmp_path, capsys):
    write_folder(tmp_path / "files", 3)
    code, out, err = run(
        ["bench", "--folder", str(tmp_path / "files"), *READ, *PCA, "--train-end", "400", "--json"],
        capsys,
    )
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    files, pooled = result["files"], result["pooled"]
    assert len(files) == 3
    for key in ("tp", "fp", "fn", "tn", "intervals", "intervals_detected"):
        assert pooled[key] == sum(f["figures"][key] for f in files)
    tp, fp, fn = pooled["tp"], pooled["fp"], pooled["fn"]
    assert pooled["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert "pooled over 3 files" in out
    assert "intervals detected" in out


def test_bench_help_explains_the_convention(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--help"], environ={})
    out = capsys.readouterr().out
    assert "--train-end" in out and "pooled" in out and "TRAINER_FOLDER" in out


def test_small_data_mode_trains_the_lstm_past_its_first_epochs(tmp_path, capsys):
    # The reference settings (Adam 1e-4, patience 10) stopped such fits after 11 epochs;
    # here early stopping may not end the fit before epoch 20.
    path = write(tmp_path)
    code, out, err = run(
        [
            "fit",
            "--data",
            str(path),
            *READ,
            "--no-progress",
            "--split",
            "unsupervised",
            "--train-end",
            "400",
            "--registry",
            str(tmp_path / "r"),
            "--epochs",
            "22",
        ],
        capsys,
    )
    assert code == 0, err
    model = manifest_of(out)["model"]
    assert model["kind"] == "lstm"
    assert (model["learning_rate"], model["batch_size"]) == (1e-2, 32)
    assert model["epochs_run"] >= 20


def test_the_default_fit_keeps_the_reference_training_settings():
    args = build_parser({}).parse_args(["fit", "--data", "x.csv"])
    config = fit_settings(args).model.resolved()
    assert (config.learning_rate, config.patience, config.batch_size) == (1e-4, 10, 64)
    assert (config.min_epochs, config.plateau_patience) == (0, 0)
    assert fit_settings(args).horizon is None  # 2 sampling intervals: 4 min on the dev data


def test_interval_figures_count_detection_delay_and_alarms_before_each_onset():
    labels = np.array([0, 1, 1, 0, 0, 1, 1, 1, 0])
    alerts = np.array([1, 0, 1, 0, 1, 0, 0, 0, 1], dtype=bool)
    figures = interval_figures(labels, alerts, np.arange(9) / 60.0, np.zeros(9, int))
    assert (figures["intervals"], figures["intervals_detected"]) == (2, 1)
    assert figures["delay_rows"] == [1]  # the second row of the first interval alerted
    assert figures["delay_minutes"] == [pytest.approx(1 / 60, abs=1e-4)]
    assert figures["false_alarm_rows_before_onset_by_interval"] == [1, 1]


@pytest.mark.parametrize(
    ("extra", "names"),
    [
        (["--threshold", "adaptive"], ["--threshold fixed"]),
        (["--val-fraction", "0"], ["--val-fraction", "early stopping"]),
        (["--train-end", "2020-03-09 09:00"], ["--train-end", "empty"]),
    ],
)
def test_the_unsupervised_mode_refuses_what_it_cannot_do(tmp_path, capsys, extra, names):
    path = write(tmp_path)
    code, _, err = run(
        [
            "fit",
            "--data",
            str(path),
            *READ,
            *PCA,
            "--split",
            "unsupervised",
            "--registry",
            str(tmp_path / "r"),
            "--train-end",
            "400",
            *extra,
        ],
        capsys,
    )
    assert code == 2
    for name in names:
        assert name in err
