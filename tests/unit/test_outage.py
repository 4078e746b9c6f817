"""An outage is logged once per interval, however often the clients report it."""

import logging

import pytest

from streamer.outage import Repeats

pytestmark = pytest.mark.unit


def record(text: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("librdkafka", logging.ERROR, __file__, 1, text, args, None)


def test_repeats_of_one_kind_are_held_back_and_counted_once_per_interval():
    now = [0.0]
    repeats = Repeats(every=30.0, clock=lambda: now[0])
    refused = "FAIL [%s]: Connect to ipv4#127.0.0.1:%d failed: Connection refused (after %dms)"
    passed = []
    for second in range(95):  # several clients, several times a second, for 95 s
        now[0] = float(second)
        for port in (9092, 9093):
            item = record(refused, "rdkafka#consumer-1", port, second % 7)
            if repeats.filter(item):
                passed.append(item.getMessage())
    assert len(passed) == 4  # at 0, 30, 60 and 90 s
    assert passed[1].endswith("(59 more like it in the last 30 s)")
    # librdkafka's own count of what it suppressed does not make another kind.
    plain = "FAIL: Connect to ipv4#127.0.0.1:9092 failed: Connection refused (after 0ms"
    assert repeats.filter(record(plain + ")"))
    assert not repeats.filter(record(plain + ", 3 identical error(s) suppressed)"))
    assert repeats.filter(record("a different error"))
    repeats.reset()
    assert repeats.filter(record(refused, "rdkafka#consumer-1", 9092, 0))
