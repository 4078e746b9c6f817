"""Curve shift, segments, windows, features and scaling against small hand-made tables."""

import numpy as np
import pandas as pd
import pytest

from streamer.errors import DataError
from streamer.features import FeatureSpec, Scaler, infer_categoricals
from streamer.labels import Horizon, curve_shift, event_onsets
from streamer.windows import make_windows, segment_ids
from trainer.data import DataOptions, read_table
from trainer.prepare import feature_spec, prepare

pytestmark = pytest.mark.unit


def _times(n, step=2.0):
    return np.arange(n, dtype=float) * step


def test_curve_shift_labels_the_rows_within_the_horizon_and_drops_the_break():
    events = np.array([0, 0, 0, 0, 0, 1, 0, 0])
    labels, keep = curve_shift(events, _times(8), np.zeros(8, int), Horizon(minutes=4))
    assert labels.tolist() == [0, 0, 0, 1, 1, 0, 0, 0]
    assert keep.tolist() == [True] * 5 + [False] + [True] * 2


def test_curve_shift_in_rows_matches_minutes_at_regular_sampling():
    events = np.array([0, 0, 0, 0, 0, 0, 1, 0])
    by_rows, _ = curve_shift(events, _times(8), np.zeros(8, int), Horizon(minutes=None, rows=3))
    by_minutes, _ = curve_shift(events, _times(8), np.zeros(8, int), Horizon(minutes=6))
    assert by_rows.tolist() == by_minutes.tolist() == [0, 0, 0, 1, 1, 1, 0, 0]


def test_curve_shift_respects_time_gaps_and_machines():
    times = np.array([0.0, 2.0, 4.0, 30.0, 0.0, 2.0, 4.0])
    events = np.array([0, 0, 0, 1, 1, 0, 0])
    groups = np.array([0, 0, 0, 0, 1, 1, 1])
    labels, keep = curve_shift(events, times, groups, Horizon(minutes=4))
    # The first break follows a 26-minute gap: no row lies within 4 minutes before it.
    # The second break is machine 1's first row: machine 0's rows are not its precursors.
    assert labels.tolist() == [0] * 7
    assert keep.tolist() == [True, True, True, False, False, True, True]


def test_event_onsets_for_event_rows_and_for_intervals():
    flags = np.array([0, 1, 1, 0, 1, 1, 1])
    groups = np.array([0, 0, 0, 0, 0, 1, 1])
    assert event_onsets(flags, groups, "event").tolist() == [1, 2, 4, 5, 6]
    assert event_onsets(flags, groups, "interval").tolist() == [1, 4, 5]


def test_segments_restart_at_machine_gap_and_after_a_break():
    times = np.array([0.0, 2.0, 4.0, 40.0, 42.0, 44.0, 0.0, 2.0])
    groups = np.array([0, 0, 0, 0, 0, 0, 1, 1])
    events = np.array([0, 0, 0, 0, 1, 0, 0, 0])
    seg = segment_ids(times, groups, events, max_gap_minutes=10)
    assert seg.tolist() == [0, 0, 0, 1, 1, 2, 3, 3]


def test_window_ends_at_and_includes_its_own_row():
    rows = np.arange(7, dtype=np.float32).reshape(7, 1)
    windows, ends = make_windows(rows, np.zeros(7, int), lookback=3)
    assert ends.tolist() == [2, 3, 4, 5, 6]
    assert windows.shape == (5, 3, 1)
    # Sample k holds rows ends[k]-2 .. ends[k]: the last step is the labelled row itself
    # (the reference notebooks' helper stopped one row short of it).
    for k, end in enumerate(ends):
        assert windows[k, :, 0].tolist() == [end - 2, end - 1, end]


def test_windows_never_span_a_segment_boundary():
    rows = np.arange(8, dtype=np.float32).reshape(8, 1)
    segments = np.array([0, 0, 0, 1, 1, 1, 1, 2])
    windows, ends = make_windows(rows, segments, lookback=3)
    assert ends.tolist() == [2, 5, 6]
    assert windows[:, 0, 0].tolist() == [0, 3, 4]


def test_lookback_one_gives_every_row():
    rows = np.arange(4, dtype=np.float32).reshape(4, 1)
    windows, ends = make_windows(rows, np.array([0, 0, 1, 1]), lookback=1)
    assert ends.tolist() == [0, 1, 2, 3]
    assert windows.shape == (4, 1, 1)


def test_feature_spec_drops_or_one_hot_encodes_categoricals():
    frame = pd.DataFrame({"a": [1.5, 2.5, 3.5], "g": [1.0, 2.0, 9.0], "b": [0.1, 0.2, 0.3]})
    found = infer_categoricals(frame, ["a", "g", "b"])
    assert found == {"g": (1.0, 2.0, 9.0)}
    dropped = FeatureSpec(("a", "g", "b"), found, "drop")
    assert dropped.feature_names == ("a", "b")
    np.testing.assert_allclose(dropped.matrix(frame), [[1.5, 0.1], [2.5, 0.2], [3.5, 0.3]])
    onehot = FeatureSpec(("a", "g", "b"), {"g": (1.0, 2.0)}, "onehot")
    assert onehot.feature_names == ("a", "b", "g=1", "g=2")
    # A level unseen in training (9) encodes as all zeros rather than failing.
    assert onehot.matrix(frame)[:, 2:].tolist() == [[1, 0], [0, 1], [0, 0]]
    assert FeatureSpec.from_dict(onehot.to_dict()) == onehot


def test_feature_spec_names_missing_sensors():
    with pytest.raises(DataError, match="missing sensor columns"):
        FeatureSpec(("a", "z")).matrix(pd.DataFrame({"a": [1.0]}))


def test_scaler_round_trip_and_constant_columns():
    rows = np.array([[1.0, 5.0], [3.0, 5.0]], dtype=np.float32)
    scaler = Scaler.fit(rows)
    assert scaler.mean.tolist() == [2.0, 5.0]
    assert scaler.scale.tolist() == [1.0, 1.0]
    assert scaler.transform(rows).tolist() == [[-1.0, 0.0], [1.0, 0.0]]
    again = Scaler.from_dict(scaler.to_dict())
    np.testing.assert_array_equal(again.inverse(again.transform(rows)), rows)


def test_interval_labels_keep_every_row_and_events_start_each_run(tmp_path):
    path = tmp_path / "intervals.csv"
    pd.DataFrame(
        {
            "ts": pd.date_range("2024-01-01", periods=8, freq="1min").astype(str),
            "anomaly": [0, 1, 1, 0, 0, 1, 0, 0],
            "s1": np.arange(8.0) + 0.5,
        }
    ).to_csv(path, sep=";", index=False)
    options = DataOptions(label_column="anomaly", label_mode="interval", separator=";")
    table = read_table([path], options)
    prepared = prepare(table, feature_spec(table, "auto", "drop"), Horizon(), "interval")
    assert prepared.labels.tolist() == [0, 1, 1, 0, 0, 1, 0, 0]
    assert len(prepared) == 8
    assert (prepared.break_times - prepared.times[0]).tolist() == [1.0, 5.0]
    assert prepared.interval_minutes == 1.0
