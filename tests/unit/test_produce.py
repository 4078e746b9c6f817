"""Producing rows: pacing, keys, replayed CSV rows in the contract form."""

import orjson
import pytest

from streamer.produce import _due, produce, replay_rows

pytestmark = pytest.mark.unit


class FakeProducer:
    def __init__(self):
        self.sent = []

    def produce(self, topic, key, value):
        self.sent.append((topic, key, orjson.loads(value)))

    def poll(self, timeout):
        return 0

    def flush(self, timeout):
        return 0


def test_pacing_by_rate_by_timestamps_or_none():
    assert _due(10, 0, rate=5.0, speedup=None) == 2.0
    assert _due(10, 600_000, rate=5.0, speedup=60.0) == 10.0
    assert _due(10, 600_000, rate=0.0, speedup=None) is None


def test_replayed_csv_rows_go_out_keyed_in_contract_form(tmp_path):
    path = tmp_path / "dev.csv"
    path.write_text("time,y,x1,x28\n5/1/99 0:00,0,1.5,96\n5/1/99 0:02,1,2.5,96\n")
    producer = FakeProducer()
    rows = replay_rows(path, "PM-7", time_format="%m/%d/%y %H:%M")
    assert produce(producer, "sensors", rows, rate=0) == 2
    topic, key, first = producer.sent[0]
    assert (topic, key) == ("sensors", b"PM-7")
    assert first == {
        "machine_id": "PM-7",
        "ts": 925516800000,
        "values": {"x1": 1.5, "x28": 96.0},
        "break": 0,
    }
    assert producer.sent[1][2]["break"] == 1
    assert produce(producer, "sensors", replay_rows(path, "PM-7"), limit=1) == 1
