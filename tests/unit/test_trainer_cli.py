"""The trainer's command line: clear one-line errors on bad input, figures on good input."""

import json

import pandas as pd
import pytest

from trainer.cli import main

pytestmark = pytest.mark.unit


def run(args, capsys):
    code = main(args, environ={})
    out, err = capsys.readouterr()
    return code, out, err


def error_line(err):
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file or folder"),
        ("", "the file is empty"),
        ("time,y,x1\n", "has a header but no rows"),
        ("time,x1\n5/1/99 0:00,1.0\n", "no label column"),
        ("when,y,x1\n5/1/99 0:00,0,1.0\n", "no time column"),
        (
            "time,y,x1\n5/1/99 0:00,0,1.0\n5/1/99 0:02,0,abc\n",
            "sensor column 'x1' has a non-numeric value 'abc' at row 2",
        ),
        ("time,y,x1\nyesterday,0,1.0\n", "time column 'time' has an unreadable value"),
        ("time,y,x1\n5/1/99 0:00,2,1.0\n", "must hold 0 or 1"),
        (
            "time,y,x1\n" + "".join(f"5/1/99 0:{m:02d},0,{m}\n" for m in range(0, 40, 2)),
            "too few rows to train",
        ),
    ],
)
def test_bad_input_gives_one_clear_line_naming_the_file(tmp_path, capsys, content, message):
    path = tmp_path / "rows.csv"
    if content is not None:
        path.write_text(content)
    code, _, err = run(
        ["fit", "--data", str(path), "--registry", str(tmp_path / "r"), "--no-progress"], capsys
    )
    assert code == 2
    line = error_line(err)
    assert message in line
    assert str(path) in line or "too few" in message
    if "too few" in message:
        assert "--test-fraction" in line  # the message names what to change


def test_evaluate_refuses_data_from_another_feature_set(tmp_path, capsys, plant_csv):
    registry = tmp_path / "r"
    code, _, _ = run(
        [
            "fit",
            "--data",
            str(plant_csv),
            "--registry",
            str(registry),
            "--model",
            "pca",
            "--no-progress",
        ],
        capsys,
    )
    assert code == 0
    other = tmp_path / "other.csv"
    frame = pd.read_csv(plant_csv).rename(columns={"x3": "flow"})
    frame.to_csv(other, index=False)
    code, _, err = run(["evaluate", "--registry", str(registry), "--data", str(other)], capsys)
    assert code == 4  # a bundle that does not fit the data, not bad input as such
    assert "from another feature set" in error_line(err)


def test_evaluate_prints_figures_and_ends_with_json(tmp_path, capsys, plant_csv):
    registry = tmp_path / "r"
    code, out, _ = run(
        [
            "fit",
            "--data",
            str(plant_csv),
            "--registry",
            str(registry),
            "--model",
            "pca",
            "--json",
            "--no-progress",
        ],
        capsys,
    )
    assert code == 0
    fitted = json.loads(out.strip().splitlines()[-1])
    scores = tmp_path / "scores.csv"
    code, out, _ = run(
        [
            "evaluate",
            "--registry",
            str(registry),
            "--data",
            str(plant_csv),
            "--from",
            "2024-03-02 12:00",
            "--scores-out",
            str(scores),
            "--json",
        ],
        capsys,
    )
    assert code == 0
    assert "breaks warned 2-20 min" in out
    figures = json.loads(out.strip().splitlines()[-1])
    for key in (
        "roc_auc",
        "pr_auc",
        "event_recall",
        "median_lead_minutes",
        "false_alarm_episodes_per_day",
        "breaks",
        "rows",
    ):
        assert key in figures
    assert figures["rows"] < fitted["rows"] + 2000
    written = pd.read_csv(scores)
    assert list(written.columns) == ["time", "machine_id", "score", "threshold", "alert", "label"]
    assert len(written) == figures["rows"]  # the rows the figures count, no unscored ones
    assert written["score"].notna().all()
    assert pd.to_datetime(written["time"]).min() >= pd.Timestamp("2024-03-02 12:00", tz="UTC")
    # The synthetic precursors are easy: the PCA baseline must find them.
    assert figures["roc_auc"] > 0.9


def test_every_flag_names_its_environment_variable(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--help"], environ={})
    out = capsys.readouterr().out
    assert "TRAINER_DATA" in out
    assert "TRAINER_BUDGET" in out


def test_environment_sets_defaults(tmp_path, capsys):
    code, _, err = run(["fit", "--registry", str(tmp_path)], capsys)
    assert code == 2
    assert "give --data" in err
    code = main(
        ["fit", "--registry", str(tmp_path), "--no-progress"],
        environ={"TRAINER_DATA": str(tmp_path / "nope.csv")},
    )
    assert code == 2
    assert "nope.csv: no such file" in capsys.readouterr().err
