"""Reading the archiver's Parquet layout: day and machine filters, unified sensors, summary."""

import datetime as dt
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from streamer.errors import ConfigError, DataError
from streamer.simulate import PlantParams, simulate_history
from trainer.archive import ArchiveQuery, read_archive
from trainer.cli import main

pytestmark = pytest.mark.unit
DAYS = ("2026-01-01", "2026-01-02", "2026-01-03")


def write_part(folder, frame, partition, first_offset):
    """One archive file by the archiver's contract (schema, name, offsets)."""
    sensors = [c for c in frame.columns if c not in ("machine_id", "ts", "break")]
    columns = {
        "machine_id": pa.array(frame["machine_id"].astype(str), pa.string()),
        "time": pa.array(frame["ts"], pa.timestamp("ms", tz="UTC")),
        "break": pa.array(frame["break"], pa.int8()),
        **{s: pa.array(frame[s], pa.float64()) for s in sensors},
        "kafka_partition": pa.array(np.full(len(frame), partition), pa.int32()),
        "kafka_offset": pa.array(np.arange(len(frame)) + first_offset, pa.int64()),
    }
    last = first_offset + len(frame) - 1
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(
        pa.table(columns), folder / f"p{partition:03d}-{first_offset:020d}-{last:020d}.parquet"
    )


@pytest.fixture(scope="module")
def plant():
    """Three simulated machines over three days, as the archiver would see them."""
    return simulate_history(PlantParams.load(), machines=3, days=3, seed=1)


@pytest.fixture(scope="module")
def archive(tmp_path_factory, plant):
    """Day 1 lacks sensor x61, day 3 adds a sensor; one row is archived twice."""
    root = tmp_path_factory.mktemp("archive")
    for k, day in enumerate(DAYS):
        rows = plant[plant["ts"].dt.strftime("%Y-%m-%d") == day]
        if k == 0:
            rows = rows.drop(columns=["x61"])
        if k == 2:
            rows = rows.assign(x62=1.5)
        for partition, machines in enumerate((["PM-01", "PM-02"], ["PM-03"])):
            part = rows[rows["machine_id"].isin(machines)]
            write_part(root / f"day={day}", part, partition, 1000 * k)
    write_part(root / f"day={DAYS[1]}", plant[plant["ts"] >= DAYS[1]].head(1), 0, 99_999)
    (root / f"day={DAYS[1]}" / ".p000-tmp.parquet").write_bytes(b"half-written")
    return root


def test_whole_archive_reads_back_sorted_float32_with_a_summary(archive, plant):
    table, summary = read_archive(ArchiveQuery(str(archive)))
    frame = table.frame
    assert len(frame) == len(plant)
    assert summary.duplicates == 1
    assert summary.files == 7
    assert summary.machines == ("PM-01", "PM-02", "PM-03")
    assert summary.days == 3
    assert summary.break_rows == int(plant["break"].sum()) > 0
    assert table.sensors == tuple(f"x{i}" for i in range(1, 63))
    assert set(frame[list(table.sensors)].dtypes) == {np.dtype(np.float32)}
    keys = frame[["machine_id", "time"]]
    assert keys.equals(keys.sort_values(["machine_id", "time"], ignore_index=True))
    expected = plant.sort_values(["machine_id", "ts"], ignore_index=True)
    np.testing.assert_array_equal(frame["time"].to_numpy(), expected["ts"].to_numpy())
    np.testing.assert_array_equal(frame["label"].to_numpy(), expected["break"].to_numpy())
    np.testing.assert_allclose(frame["x5"], expected["x5"].astype(np.float32))
    first_day = (frame["time"] < pd.Timestamp(DAYS[1], tz="UTC")).to_numpy()
    assert frame["x61"].isna().to_numpy().tolist() == first_day.tolist()
    assert frame.loc[~first_day, "x61"].notna().all()
    assert (frame["x62"].notna() == (frame["time"] >= pd.Timestamp(DAYS[2], tz="UTC"))).all()
    assert summary.missing_values == int(first_day.sum() + (frame["x62"].isna()).sum())
    assert "3 machine(s)" in summary.text() and "1 duplicate rows dropped" in summary.text()


def test_chunked_reading_gives_the_same_table_as_one_read(archive):
    small, _ = read_archive(ArchiveQuery(str(archive), batch_rows=97))
    whole, _ = read_archive(ArchiveQuery(str(archive), batch_rows=1_000_000))
    pd.testing.assert_frame_equal(small.frame, whole.frame)
    by_uri, _ = read_archive(ArchiveQuery(archive.as_uri()))
    pd.testing.assert_frame_equal(by_uri.frame, whole.frame)


def test_day_and_machine_filters_prune_what_is_read(archive, plant):
    table, summary = read_archive(
        ArchiveQuery(str(archive), since=dt.date(2026, 1, 2), machines=("PM-02", "PM-03"))
    )
    assert summary.machines == ("PM-02", "PM-03")
    assert summary.files == 5
    assert table.frame["time"].min() == pd.Timestamp(DAYS[1], tz="UTC")
    expected = plant[(plant["ts"] >= DAYS[1]) & plant["machine_id"].isin(["PM-02", "PM-03"])]
    assert len(table) == len(expected)
    newest, summary = read_archive(ArchiveQuery(str(archive), last_days=1))
    assert summary.days == 1 and summary.duplicates == 0
    assert newest.frame["time"].min() >= pd.Timestamp(DAYS[2], tz="UTC")
    one, _ = read_archive(ArchiveQuery(str(archive), until=dt.date(2026, 1, 1)))
    assert one.frame["time"].max() < pd.Timestamp(DAYS[1], tz="UTC")
    assert one.sensors == tuple(f"x{i}" for i in range(1, 61))


def test_gaps_are_counted_per_machine_beyond_the_gap_limit(archive, plant):
    _, summary = read_archive(ArchiveQuery(str(archive)), max_gap_minutes=7.0)
    expected = sum(
        int((rows["ts"].diff().dt.total_seconds() > 7 * 60).sum())
        for _, rows in plant.groupby("machine_id")
    )
    assert summary.gaps == expected > 0
    assert summary.max_gap_minutes == 7.0


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"machines": ("PM-09",)}, "no rows of PM-09"),
        ({"since": dt.date(2027, 1, 1)}, "no files for days 2027-01-01..last"),
    ],
)
def test_a_filter_that_selects_nothing_is_a_clear_error(archive, query, message):
    with pytest.raises(DataError, match=message):
        read_archive(ArchiveQuery(str(archive), **query))


def test_missing_or_empty_archives_and_bad_ranges_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="no such archive folder"):
        read_archive(ArchiveQuery(str(tmp_path / "nope")))
    (tmp_path / "day=2026-01-01").mkdir()
    (tmp_path / "day=2026-01-01" / "_SUCCESS.parquet").write_bytes(b"")
    (tmp_path / "day=soon").mkdir()
    (tmp_path / "day=soon" / "p000.parquet").write_bytes(b"")
    with pytest.raises(DataError, match="holds no Parquet files"):
        read_archive(ArchiveQuery(str(tmp_path)))
    broken = tmp_path / "day=2026-01-01" / "p000-1-2.parquet"
    broken.write_bytes(b"not parquet")
    with pytest.raises(DataError, match=f"{broken}: not a readable Parquet file"):
        read_archive(ArchiveQuery(str(tmp_path)))
    with pytest.raises(ConfigError, match="not both"):
        ArchiveQuery(str(tmp_path), last_days=2, since=dt.date(2026, 1, 1))
    with pytest.raises(ConfigError, match="is after"):
        ArchiveQuery(str(tmp_path), since=dt.date(2026, 1, 2), until=dt.date(2026, 1, 1))


def test_fit_trains_from_the_archive_and_names_it_as_the_source(archive, tmp_path, capsys, caplog):
    registry = tmp_path / "registry"
    args = ["fit", "--archive", str(archive), "--last-days", "2", "--machines", "PM-01,PM-03"]
    args += ["--drop", "x62", "--registry", str(registry), "--model", "pca", "--no-progress"]
    caplog.set_level("INFO")
    code = main([*args, "--json"], environ={})
    out, err = capsys.readouterr()
    assert code == 0, err
    read = [r.getMessage() for r in caplog.records if "read the archive" in r.getMessage()]
    assert len(read) == 1 and "2 machine(s) (PM-01, PM-03)" in read[0]
    assert "mostly missing" not in read[0]
    version = json.loads(out.splitlines()[-1])["version"]
    manifest = json.loads((registry / version / "manifest.json").read_text())
    assert manifest["data"]["machines"] == 2
    assert manifest["data"]["sources"] == [
        f"archive {archive} (the newest 2 archived days, PM-01,PM-03)"
    ]
    assert manifest["data"]["from"].startswith(DAYS[1])
    assert "x62" not in manifest["features"]["sensors"]


def test_a_sensor_new_in_the_last_days_is_named_as_mostly_missing(archive):
    _, summary = read_archive(ArchiveQuery(str(archive), since=dt.date(2026, 1, 2)))
    assert summary.sparse == ("x62",)
    assert "mostly missing: x62 (see --drop)" in summary.text()
    with pytest.raises(DataError, match=r"to drop \['x99'\] are not sensors"):
        read_archive(ArchiveQuery(str(archive), drop=("x99",)))


def test_exactly_one_data_source_is_accepted(archive, tmp_path, capsys):
    code = main(["fit", "--archive", str(archive), "--sample"], environ={})
    assert code == 2
    assert "exactly one" in capsys.readouterr().err
    code = main(["fit", "--sample", "--last-days", "3"], environ={})
    assert code == 2
    assert "--last-days needs --archive" in capsys.readouterr().err
