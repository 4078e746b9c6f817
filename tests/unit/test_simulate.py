"""The plant simulator: fitted figures, history frames, streamed rows and detectability."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from streamer.errors import DataError
from streamer.simulate import (
    MachineSimulator,
    PlantParams,
    fit_params,
    iter_rows,
    main,
    simulate_history,
)

DEV_DATA = (
    Path(__file__).resolve().parents[2].parent
    / "shared"
    / "data"
    / "processminer-sheet-breaks-dev.csv"
)
DEV_ROWS = 14_299


@pytest.fixture(scope="module")
def params() -> PlantParams:
    return PlantParams.load()


def _seconds(ts: pd.Series) -> np.ndarray:
    return (ts - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy()


def _seconds_to_next_break(history: pd.DataFrame) -> np.ndarray:
    """Per row, seconds until the same machine's next break row (0 on it, inf if none)."""
    ahead = np.full(len(history), np.inf)
    for _, rows in history.groupby("machine_id"):
        seconds = _seconds(rows["ts"])
        breaks = np.append(seconds[rows["break"].to_numpy() == 1], np.inf)
        ahead[rows.index] = breaks[np.searchsorted(breaks, seconds)] - seconds
    return ahead


def _walk_lists(node: Any) -> list[list[Any]]:
    if isinstance(node, dict):
        return [lst for value in node.values() for lst in _walk_lists(value)]
    if isinstance(node, list):
        return [node, *(lst for item in node for lst in _walk_lists(item))]
    return []


@pytest.mark.unit
def test_history_is_deterministic_by_seed(params: PlantParams) -> None:
    first = simulate_history(params, machines=2, days=0.5, seed=7)
    again = simulate_history(params, machines=2, days=0.5, seed=7)
    other = simulate_history(params, machines=2, days=0.5, seed=8)
    pd.testing.assert_frame_equal(first, again)
    assert not np.allclose(first["x1"].to_numpy()[:100], other["x1"].to_numpy()[:100])


@pytest.mark.unit
def test_history_columns_dtypes_and_order(params: PlantParams) -> None:
    history = simulate_history(params, machines=3, days=1, seed=2, start="2026-03-01T06:00:00Z")

    assert list(history.columns) == ["machine_id", "ts", "break", *params.sensors]
    assert params.sensors == [f"x{i}" for i in range(1, 62)]
    assert isinstance(history["ts"].dtype, pd.DatetimeTZDtype)
    assert str(history["ts"].dt.tz) == "UTC"
    assert history["break"].dtype == np.int64
    assert set(history["break"].unique()) <= {0, 1}
    assert all(pd.api.types.is_float_dtype(history[s]) for s in params.sensors)
    assert history["ts"].min() == pd.Timestamp("2026-03-01T06:00:00Z")
    assert list(history["machine_id"].unique()) == ["PM-01", "PM-02", "PM-03"]
    ordered = history.sort_values(["machine_id", "ts"], kind="stable")
    assert (ordered.index == history.index).all()
    for name, levels in params.categoricals.items():
        assert set(history[name].unique()) <= set(map(float, levels))
    empty = simulate_history(params, machines=2, days=0)
    assert empty.empty
    assert list(empty.columns) == list(history.columns)


@pytest.mark.unit
def test_history_cadence_breaks_and_gaps_follow_params(params: PlantParams) -> None:
    machines, days = 10, 10
    history = simulate_history(params, machines=machines, days=days, seed=4)
    rate = history["break"].sum() / (machines * days)
    assert rate == pytest.approx(params.breaks_per_day, rel=0.2)

    for _, rows in history.groupby("machine_id"):
        seconds = _seconds(rows["ts"])
        steps = np.diff(seconds)
        breaks = rows["break"].to_numpy()
        assert np.median(steps) == params.interval_seconds
        after_break = breaks[:-1] == 1
        assert (steps[after_break] >= 2 * params.interval_seconds).all()
        assert (steps[~after_break] == params.interval_seconds).all()
        spacing = np.diff(seconds[breaks == 1])
        assert (spacing >= params.min_break_spacing_minutes * 60).all()


@pytest.mark.unit
def test_precursor_moves_named_sensors_in_fitted_direction(params: PlantParams) -> None:
    history = simulate_history(params, machines=4, days=4, seed=5)
    ahead = _seconds_to_next_break(history)
    last_minutes = (ahead > 0) & (ahead <= 3 * params.interval_seconds)
    normal = ahead > 3600
    for name, shift in zip(params.precursor_sensors, params.precursor_shift, strict=True):
        column = params.continuous.index(name)
        z = (history[name] - params.mean[column]) / params.scale[column]
        moved = z[last_minutes].mean() - z[normal].mean()
        assert np.sign(moved) == np.sign(shift)
        assert abs(moved) > abs(shift)


@pytest.mark.unit
def test_pca_reconstruction_error_warns_before_breaks(params: PlantParams) -> None:
    history = simulate_history(params, machines=3, days=5, seed=1)
    ahead = _seconds_to_next_break(history)
    seconds = _seconds(history["ts"])
    cut = seconds.min() + 0.6 * (seconds.max() - seconds.min())
    is_break = history["break"].to_numpy() == 1
    train = (seconds < cut) & (ahead > 30 * 60)
    test = (seconds >= cut) & ~is_break
    x = history[params.continuous].to_numpy()
    z = (x - x[train].mean(axis=0)) / x[train].std(axis=0)
    _, _, vt = np.linalg.svd(z[train], full_matrices=False)
    basis = vt[:10].T
    error = ((z - z @ basis @ basis.T) ** 2).mean(axis=1)
    soon = (ahead > 0) & (ahead <= 10 * 60)

    assert soon[test].sum() > 50
    assert roc_auc_score(soon[test], error[test]) >= 0.75


@pytest.mark.unit
def test_params_file_holds_figures_not_rows() -> None:
    path = Path(__file__).resolve().parents[2] / "streamer" / "plant_params.json"
    assert path.stat().st_size < 200_000
    data = json.loads(path.read_text(encoding="utf-8"))
    longest = max(len(lst) for lst in _walk_lists(data))
    assert longest < 1_000 < DEV_ROWS
    params = PlantParams.from_dict(data)
    assert params.interval_seconds == 120
    assert params.categoricals["x28"] == sorted(params.categoricals["x28"])
    assert len(params.categoricals["x28"]) == 8
    assert params.categoricals["x61"] == [0, 1]
    assert len(params.loadings) == len(params.continuous) == 59


@pytest.mark.unit
def test_save_and_load_round_trip(params: PlantParams, tmp_path: Path) -> None:
    path = params.save(tmp_path / "params.json")
    assert PlantParams.load(path) == params


@pytest.mark.unit
def test_load_rejects_parameters_of_another_shape(params: PlantParams, tmp_path: Path) -> None:
    data = params.to_dict()
    data["surprise"] = 1
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(DataError, match="surprise"):
        PlantParams.load(path)
    data = params.to_dict()
    data["mean"] = data["mean"][:-1]
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(DataError, match="mean"):
        PlantParams.load(path)


@pytest.mark.unit
def test_iter_rows_yields_contract_rows_in_time_order(params: PlantParams) -> None:
    rows = list(itertools.islice(iter_rows(params, machines=3, seed=9), 3_000))

    for row in rows:
        assert set(row) == {"machine_id", "ts", "values", "break"}
        assert isinstance(row["ts"], int)
        assert list(row["values"]) == params.sensors
        assert all(isinstance(v, float) for v in row["values"].values())
        assert row["break"] in (0, 1)
    stamps = [row["ts"] for row in rows]
    assert stamps == sorted(stamps)
    assert {row["machine_id"] for row in rows} == {"PM-01", "PM-02", "PM-03"}
    assert stamps[0] == pd.Timestamp("2026-01-01T00:00:00Z").value // 1_000_000


@pytest.mark.unit
def test_iter_rows_matches_history_of_the_same_seed(params: PlantParams) -> None:
    rows = list(itertools.islice(iter_rows(params, machines=2, seed=3), 1_500))
    history = simulate_history(params, machines=2, days=2, seed=3)
    history = history.sort_values(["ts", "machine_id"], kind="stable").head(len(rows))

    assert [r["machine_id"] for r in rows] == history["machine_id"].tolist()
    assert [r["break"] for r in rows] == history["break"].tolist()
    streamed = np.array([list(r["values"].values()) for r in rows])
    np.testing.assert_array_equal(streamed, history[params.sensors].to_numpy())


@pytest.mark.unit
def test_simulator_blocks_continue_one_process(params: PlantParams) -> None:
    sim = MachineSimulator(params, machines=2, seed=11)
    first, second = sim.block(5), sim.block(5)
    interval_ms = params.interval_seconds * 1000
    assert second.ts_ms[0] - first.ts_ms[-1] == interval_ms
    assert first.values.shape == (5, 2, len(params.sensors))
    assert first.breaks.shape == first.present.shape == (5, 2)


@pytest.mark.unit
def test_fit_params_on_simulated_history_gives_params_of_the_same_shape(
    params: PlantParams,
) -> None:
    history = simulate_history(params, machines=1, days=4, seed=6)
    fitted = fit_params(history.drop(columns="machine_id"), time_column="ts", label_column="break")

    assert fitted.sensors == params.sensors
    assert fitted.interval_seconds == params.interval_seconds
    assert set(fitted.categoricals) == set(params.categoricals)
    assert np.shape(fitted.loadings) == np.shape(params.loadings)
    assert len(fitted.residual_scale) == len(params.continuous)
    assert fitted.grade_sensor == "x28"
    assert len(fitted.precursor_sensors) == len(params.precursor_sensors)
    assert fitted.breaks_per_day == pytest.approx(params.breaks_per_day, rel=0.5)
    np.testing.assert_allclose(fitted.mean, params.mean, atol=3 * np.max(params.scale))
    simulate_history(fitted, machines=1, days=0.2, seed=0)


@pytest.mark.unit
def test_cli_fit_params_writes_a_loadable_file(params: PlantParams, tmp_path: Path) -> None:
    history = simulate_history(params, machines=1, days=2, seed=12)
    csv = tmp_path / "plant.csv"
    table = history.drop(columns="machine_id").rename(columns={"ts": "time", "break": "y"})
    table["time"] = table["time"].dt.strftime("%m/%d/%y %H:%M")
    table.to_csv(csv, index=False)
    out = tmp_path / "fitted.json"

    assert main(["fit-params", "--data", str(csv), "--out", str(out), "--factors", "6"]) == 0
    fitted = PlantParams.load(out)
    assert fitted.factors == 6
    assert fitted.source["rows"] == len(history)


@pytest.mark.data
def test_fit_params_from_dev_data_matches_packaged_file(params: PlantParams) -> None:
    if not DEV_DATA.exists():
        pytest.skip(f"dev data not found at {DEV_DATA}; it lives in ../shared/data")
    fitted = fit_params(pd.read_csv(DEV_DATA))

    assert fitted.source == {"rows": DEV_ROWS, "breaks": 89, "days": 22.0}
    assert fitted.breaks_per_day == pytest.approx(89 / 22, rel=1e-3)
    assert fitted.interval_seconds == 120
    assert fitted.categoricals == params.categoricals
    assert fitted.precursor_sensors == params.precursor_sensors
    np.testing.assert_allclose(fitted.mean, params.mean, rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(np.abs(fitted.loadings), np.abs(params.loadings), atol=1e-3)
