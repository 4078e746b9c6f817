"""Reading archived rows: CSV or Parquet files, folders or globs, into one checked table."""

from __future__ import annotations

import glob
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from streamer.errors import DataError
from streamer.labels import LABEL_MODES

log = logging.getLogger(__name__)

TIME = "time"
MACHINE = "machine_id"
LABEL = "label"
DEFAULT_MACHINE = "machine-1"
_SUFFIXES = (".csv", ".parquet", ".pq")


@dataclass(frozen=True)
class DataOptions:
    """How to read a labelled multivariate table (None means: detect it)."""

    time_column: str | None = None
    time_format: str | None = None
    label_column: str | None = None
    label_mode: str = "event"
    machine_column: str | None = None
    drop_columns: tuple[str, ...] = ()
    separator: str = ","

    def __post_init__(self) -> None:
        if self.label_mode not in LABEL_MODES:
            raise DataError(f"label mode {self.label_mode!r} is not one of {LABEL_MODES}")


@dataclass(frozen=True)
class Table:
    """Rows sorted by machine then time, with columns time, machine_id, label and sensors."""

    frame: pd.DataFrame
    sensors: tuple[str, ...]
    sources: tuple[str, ...] = field(default_factory=tuple)

    def __len__(self) -> int:
        return len(self.frame)

    def times_minutes(self) -> np.ndarray:
        """Row times as float minutes since the epoch."""
        stamps = self.frame[TIME].to_numpy(dtype="datetime64[ns]").astype(np.int64)
        return stamps / 6e10

    def machine_codes(self) -> np.ndarray:
        """A small integer per machine; rows of a machine are contiguous."""
        codes, _ = pd.factorize(self.frame[MACHINE], sort=False)
        return np.asarray(codes, dtype=np.int64)

    def summary(self) -> str:
        """One line saying what was read."""
        frame = self.frame
        days = (frame[TIME].max() - frame[TIME].min()) / pd.Timedelta(days=1) if len(frame) else 0
        return (
            f"{len(frame):,} rows, {frame[MACHINE].nunique()} machine(s), {days:.1f} days "
            f"({frame[TIME].min()} to {frame[TIME].max()}), {int(frame[LABEL].sum())} "
            f"labelled rows, {len(self.sensors)} sensors"
        )


def expand_paths(paths: Sequence[str | Path]) -> list[Path]:
    """Files named directly, found in folders (recursively) or matched by globs."""
    found: list[Path] = []
    for item in paths:
        text = str(item)
        if any(ch in text for ch in "*?["):
            matches = sorted(Path(p) for p in glob.glob(text, recursive=True))  # noqa: PTH207
            if not matches:
                raise DataError(f"{text}: the pattern matches no file")
            found.extend(p for p in matches if p.is_file())
        elif Path(text).is_dir():
            inside = sorted(p for p in Path(text).rglob("*") if p.suffix.lower() in _SUFFIXES)
            if not inside:
                raise DataError(f"{text}: the folder holds no .csv or .parquet file")
            found.extend(inside)
        elif Path(text).is_file():
            found.append(Path(text))
        else:
            raise DataError(f"{text}: no such file or folder")
    return found


def read_table(paths: Sequence[str | Path], options: DataOptions | None = None) -> Table:
    """Read and check every file, then join them into one sorted table."""
    options = options or DataOptions()
    files = expand_paths(paths)
    if not files:
        raise DataError("no input files given")
    frames = [_normalise(_read_one(path, options), path, options) for path in files]
    sensors = tuple(c for c in frames[0].columns if c not in (TIME, MACHINE, LABEL))
    for path, frame in zip(files, frames, strict=True):
        other = tuple(c for c in frame.columns if c not in (TIME, MACHINE, LABEL))
        if other != sensors:
            raise DataError(f"{path}: its sensor columns differ from those of {files[0]}")
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    frame = frame.sort_values([MACHINE, TIME], kind="stable", ignore_index=True)
    return Table(frame=frame, sensors=sensors, sources=tuple(str(f) for f in files))


def _read_one(path: Path, options: DataOptions) -> pd.DataFrame:
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path, sep=options.separator, low_memory=False)
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{path}: the file is empty") from exc
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"{path}: cannot be read ({str(exc).splitlines()[0]})") from exc
    if frame.empty:
        raise DataError(f"{path}: the file has a header but no rows")
    return frame


def _pick(
    frame: pd.DataFrame,
    given: str | None,
    candidates: Sequence[str],
    what: str,
    flag: str,
    path: Path,
) -> str:
    if given is not None:
        if given not in frame.columns:
            raise DataError(
                f"{path}: no {what} column {given!r}; columns are {_columns_text(frame)}"
            )
        return given
    for name in candidates:
        if name in frame.columns:
            return name
    raise DataError(
        f"{path}: no {what} column (looked for {list(candidates)}); name it with {flag}"
    )


def _columns_text(frame: pd.DataFrame) -> str:
    names = [str(c) for c in frame.columns]
    return ", ".join(names[:8]) + (f", ... ({len(names)} in all)" if len(names) > 8 else "")


def _normalise(frame: pd.DataFrame, path: Path, options: DataOptions) -> pd.DataFrame:
    time_col = _pick(
        frame, options.time_column, ("time", "ts", "timestamp"), "time", "--time-column", path
    )
    label_col = _pick(
        frame, options.label_column, ("y", "break", "label"), "label", "--label-column", path
    )
    machine_col = options.machine_column or (MACHINE if MACHINE in frame.columns else None)
    if machine_col is not None and machine_col not in frame.columns:
        raise DataError(f"{path}: no machine column {machine_col!r}")
    missing_drop = [c for c in options.drop_columns if c not in frame.columns]
    if missing_drop:
        raise DataError(f"{path}: columns to drop {missing_drop} are not in the file")
    skip = {time_col, label_col, machine_col, *options.drop_columns}
    sensors = [c for c in frame.columns if c not in skip]
    if not sensors:
        raise DataError(f"{path}: no sensor columns left after time, label and dropped ones")
    out = pd.DataFrame(
        {
            TIME: _parse_times(frame[time_col], options.time_format, path, time_col),
            MACHINE: frame[machine_col].astype(str) if machine_col else DEFAULT_MACHINE,
            LABEL: _parse_labels(frame[label_col], path, label_col),
        }
    )
    values = _parse_sensors(frame[sensors], path)
    return pd.concat([out, values], axis=1)


def _parse_times(column: pd.Series, fmt: str | None, path: Path, name: str) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(column):
        parsed = pd.to_datetime(column, utc=True)
    elif pd.api.types.is_numeric_dtype(column) and fmt is None:
        parsed = pd.to_datetime(column, unit="ms", utc=True, errors="coerce")
    else:
        parsed = pd.to_datetime(
            column, format=fmt or _guess_format(column), utc=True, errors="coerce"
        )
    bad = parsed.isna() & column.notna() | column.isna()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        hint = f" (format {fmt!r})" if fmt else "; give --time-format"
        raise DataError(
            f"{path}: time column {name!r} has an unreadable value "
            f"{column.iloc[row]!r} at row {row + 1}{hint}"
        )
    return parsed


_TIME_FORMATS = ("ISO8601", "%m/%d/%y %H:%M", "%m/%d/%Y %H:%M", "%d.%m.%Y %H:%M", "%Y-%m-%d %H:%M")


def _guess_format(column: pd.Series) -> str:
    """The first common format that reads the leading values; else parse value by value."""
    head = column.dropna().astype(str).head(50)
    for fmt in _TIME_FORMATS:
        try:
            pd.to_datetime(head, format=fmt)
        except (ValueError, TypeError):
            continue
        return fmt
    return "mixed"


def _parse_labels(column: pd.Series, path: Path, name: str) -> pd.Series:
    numbers = pd.to_numeric(column, errors="coerce")
    bad = ~numbers.isin([0, 1])
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(
            f"{path}: label column {name!r} must hold 0 or 1, found "
            f"{column.iloc[row]!r} at row {row + 1}"
        )
    return numbers.astype(np.int8)


def _parse_sensors(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    values = frame.apply(pd.to_numeric, errors="coerce").astype(np.float64)
    bad = values.isna() & frame.notna()
    if bad.to_numpy().any():
        column = str(bad.columns[bad.any(axis=0).to_numpy()][0])
        row = int(np.flatnonzero(bad[column].to_numpy())[0])
        raise DataError(
            f"{path}: sensor column {column!r} has a non-numeric value "
            f"{frame[column].iloc[row]!r} at row {row + 1}"
        )
    if not np.isfinite(values.to_numpy()[values.notna().to_numpy()]).all():
        raise DataError(f"{path}: sensor values must be finite (found an infinity)")
    return values
