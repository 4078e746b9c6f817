"""Small seconds-scale files with one anomalous interval each, as per-file benchmarks ship them.

Eight sensors at 1 Hz driven by two slow shared signals (so they are correlated), with a
``;`` separator, a ``datetime`` column, an ``anomaly`` label marking the interval and a
``changepoint`` column to drop. Inside the interval a few sensors drift away from the
others. Run as a script to write a folder of them:
``python tests/unit/interval_files.py OUT --files 10``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

SENSORS = 8


def interval_file(
    seed: int, rows: int = 900, onset: int | None = None, length: int = 120
) -> pd.DataFrame:
    """One file's rows: the interval starts at ``onset`` (default: at random after row 450)."""
    rng = np.random.default_rng(seed)
    t = np.arange(rows)
    shared = np.stack([np.sin(2 * np.pi * t / rng.uniform(80, 160)), _slow(rng, rows)])
    mixing = rng.normal(1.0, 0.4, size=(SENSORS, 2))
    values = (mixing @ shared).T + rng.normal(0, 0.15, size=(rows, SENSORS))
    start = int(rng.integers(450, rows - length - 50)) if onset is None else onset
    label = np.zeros(rows, dtype=int)
    label[start : start + length] = 1
    drift = np.minimum(np.arange(length) / 10.0, 1.0) * rng.uniform(0.8, 1.2)
    for sensor in rng.choice(SENSORS, size=3, replace=False):
        values[start : start + length, sensor] += drift * rng.choice([-1, 1])
    frame = pd.DataFrame(values, columns=[f"s{k + 1}" for k in range(SENSORS)])
    times = pd.date_range("2020-03-09 10:00:00", periods=rows, freq="1s")
    frame.insert(0, "datetime", times.strftime("%Y-%m-%d %H:%M:%S"))
    frame["anomaly"] = label
    frame["changepoint"] = np.r_[0, np.diff(label) == 1].astype(int)
    return frame


def _slow(rng: np.random.Generator, rows: int) -> np.ndarray:
    """A mean-reverting wander (AR(1), standard deviation about 0.5)."""
    steps = rng.normal(0, 0.07, rows)
    out = np.zeros(rows)
    for i in range(1, rows):
        out[i] = 0.99 * out[i - 1] + steps[i]
    return out


def write_folder(folder: Path, files: int, seed: int = 0) -> list[Path]:
    """``files`` files of 750 to 1,300 rows, as ``folder/NN.csv``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for k in range(files):
        path = folder / f"{k:02d}.csv"
        interval_file(seed * 1000 + k, rows=int(rng.integers(750, 1301))).to_csv(
            path, sep=";", index=False
        )
        paths.append(path)
    return paths


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--files", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for written in write_folder(args.folder, args.files, args.seed):
        print(written)
