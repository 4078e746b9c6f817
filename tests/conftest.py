"""Shared fixtures: small synthetic labelled tables written as the real dataset's CSV."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from broker_choice import choose_broker

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
DEV_CSV = SHARED_DATA / "processminer-sheet-breaks-dev.csv"


def synthetic_plant(
    rows: int = 1500, sensors: int = 6, every: int = 120, seed: int = 7
) -> pd.DataFrame:
    """Correlated sensors every 2 minutes, a break every ``every`` rows, each preceded by
    three rows whose sensors break their usual correlation, more and more."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(rows, 1))
    values = base + 0.3 * rng.normal(size=(rows, sensors))
    y = np.zeros(rows, dtype=int)
    y[every - 1 :: every] = 1
    for n in np.flatnonzero(y):
        ramp = np.linspace(1.0, 3.0, 3)[:, None] * np.where(np.arange(sensors) % 2, 1, -1)
        values[max(0, n - 3) : n] += ramp[-min(3, n) :]
    frame = pd.DataFrame(values, columns=[f"x{i + 1}" for i in range(sensors)])
    frame.insert(0, "y", y)
    times = pd.date_range("2024-03-01", periods=rows, freq="2min")
    frame.insert(0, "time", times.strftime("%m/%d/%y %H:%M"))
    frame["grade"] = rng.choice([3, 7], size=rows)
    return frame


@pytest.fixture(scope="session")
def make_plant():
    """The synthetic plant generator, for fixtures that need their own variant."""
    return synthetic_plant


@pytest.fixture
def plant_csv(tmp_path: Path) -> Path:
    """A synthetic plant CSV in the dev data's format."""
    path = tmp_path / "plant.csv"
    synthetic_plant().to_csv(path, index=False)
    return path


@pytest.fixture
def dev_csv() -> Path:
    """The real dev data, when ``../shared/data`` sits beside the project."""
    if not DEV_CSV.is_file():
        pytest.skip(f"the dev data is not at {DEV_CSV}")
    return DEV_CSV


def pytest_report_header() -> str:
    """Name the integration tests' broker, chosen as their session fixture will choose it."""
    return choose_broker().header()
