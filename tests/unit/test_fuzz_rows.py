"""Hostile sensor rows: a seeded mutation fuzzer over decoding and validation, and property
tests that a batch mixing hostile and valid rows scores the valid ones as if alone.

Run with ``pytest -s`` to see one summary line per test (payloads tried, outcomes by reason).
"""

from __future__ import annotations

import datetime as dt
import math
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from tiny_bundle import SENSORS, save_model, typical_threshold, write_version

from streamer import kafka_io
from streamer import rows as r
from streamer.alerts import iso
from streamer.bundle import Registry
from streamer.features import FeatureSpec
from streamer.machines import BREAK, DEGRADED, READY, WARMING, DataQuality, MachineWindows
from streamer.pipeline import Model, process

pytestmark = pytest.mark.unit

MAX_BYTES = 4096
PAYLOADS = 200_000
START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
STEP_MS = 120_000
MACHINES = ("PM1", "PM2", "PM-3", "linje/4", "Papiermaschine-ü")
FUZZ_SENSORS = tuple(f"x{i}" for i in range(1, 7))
KINDS = {READY, WARMING, BREAK, DEGRADED}
RAW = "\x00raw\x00"  # stands for a raw JSON token, spliced in after serialising
RAW_QUOTED = orjson.dumps(RAW)

NON_FINITE_TOKENS = (
    b"NaN",
    b"nan",
    b"Infinity",
    b"-Infinity",
    b"inf",
    b"1e400",
    b"-1e400",
    b"2e308",
    b"1" + b"0" * 400,
    b"-" + b"9" * 330,
)
HUGE_NUMBERS = (
    1e308,
    -1e308,
    1.7976931348623157e308,
    3.5e38,
    -3.5e38,
    3.4e38,
    1e39,
    1e30,
    5e-324,
    18446744073709551615,
    -9223372036854775808,
    9223372036854775807,
)
HUGE_TOKENS = (
    b"123456789012345678901234567890",
    b"18446744073709551616",
    b"-9223372036854775809",
    b"0." + b"0" * 400 + b"1",
    b"1" + b"0" * 38,
    b"-0",
    b"0e999999",
)
TIMESTAMPS: tuple[Any, ...] = (
    -1,
    -(10**15),
    0,
    1,
    7_258_118_399_999,
    7_258_118_400_000,
    10**15,
    2**63 - 1,
    -(2**63),
    1e300,
    -1e300,
    0.5,
    -0.5,
    "0001-01-01T00:00:00Z",
    "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59.999999-14:00",
    "1969-12-31T23:59:59Z",
    "1970-01-01T00:00:00Z",
    "2200-01-01T00:00:00Z",
    "2199-12-31T23:59:59.999Z",
    "2024-02-30T00:00:00Z",
    "2024-01-01",
    "2024-01-01T00:00:00",
    "2024-01-01T00:00:00+25:00",
    "2024-01-01T00:00:00+23:59:59.999999",
    "20240101T000000Z",
    "2024-W01-1T00:00:00Z",
    "",
    "Z",
    "now",
    "2024-01-01T00:00:00Z\x00",
    "\uff12\uff10\uff12\uff14-01-01T00:00:00Z",
    "2024-01-01T00:00:00.123456789Z",
    "2024-01-01T24:00:00Z",
    "1700000000000",
    "9" * 10_000,
    "2024-01-01T00:00:00ZZ",
)
WRONG_TYPES: tuple[Any, ...] = (
    [],
    {},
    "text",
    "",
    "1",
    True,
    False,
    None,
    0,
    -1,
    1.5,
    [1, 2],
    {"x1": 1.0},
    [{"a": [None]}],
)
BAD_UTF8 = (
    b"\xff",
    b"\xfe\xff",
    b"\xc3\x28",
    b"\xa0\xa1",
    b"\xe2\x28\xa1",
    b"\xed\xa0\x80",
    b"\xf0\x28\x8c\x28",
    b"\xf8\xa1\xa1\xa1\xa1",
    b"\xc0\xaf",
    b"\x80",
)
TOP_LEVEL = (
    b"",
    b" ",
    b"\n\t",
    b"null",
    b"true",
    b"1",
    b'"row"',
    b"[]",
    b"[{}]",
    b"{}",
    b"{",
    b"}",
    b'{"machine_id"}',
    b'{"machine_id":}',
    b"\x00",
)
ESCAPES = (b'"\\ud800"', b'"\\udfff"', b'"\\ud83d\\ude00"', b'"\\u0000"', b'"\\x41"', b'"\\uZZZZ"')


def dumps(row: dict[str, Any], token: bytes | None = None) -> bytes:
    """JSON of ``row``; the :data:`RAW` stand-in becomes ``token`` verbatim."""
    text = orjson.dumps(row)
    return text if token is None else text.replace(RAW_QUOTED, token, 1)


class Fuzzer:
    """Seeded hostile payloads, each a mutation of a valid row, as (value, key)."""

    def __init__(self, seed: int) -> None:
        self.rand = random.Random(seed)
        self.bases = [self._base(i) for i in range(512)]
        self.mutations: list[tuple[Callable[[dict[str, Any]], bytes | None], int]] = [
            (self.untouched, 6),
            (self.byte_flips, 8),
            (self.truncate, 6),
            (self.splice, 5),
            (self.insert_bytes, 4),
            (self.repeat_chunk, 3),
            (self.deep_nesting, 4),
            (self.wrong_type, 8),
            (self.non_finite, 5),
            (self.huge_number, 6),
            (self.duplicate_keys, 5),
            (self.bad_utf8, 6),
            (self.bad_escape, 3),
            (self.timestamp, 8),
            (self.machine, 5),
            (self.foreign_sensors, 3),
            (self.oversized, 4),
            (self.top_level, 3),
        ]
        self.ops = [op for op, _ in self.mutations]
        self.weights = [w for _, w in self.mutations]
        self.counts: Counter[str] = Counter()
        self.issued = 0

    def _base(self, i: int) -> dict[str, Any]:
        rand = self.rand
        values: dict[str, Any] = {name: round(rand.gauss(0, 1), 4) for name in FUZZ_SENSORS}
        if i % 5 == 0:
            values[rand.choice(FUZZ_SENSORS)] = None
        if i % 7 == 0:
            values["x1"] = rand.randint(-5, 5)
        if i % 11 == 0:
            values["unknown_extra"] = 1.0
        # The time stamp is set per payload (see payloads).
        row: dict[str, Any] = {"machine_id": MACHINES[i % len(MACHINES)], "ts": START_MS}
        row["values"] = values
        if i % 3 == 0:
            row["break"] = int(i % 97 == 0)
        return row

    def payloads(self, count: int) -> list[tuple[bytes | None, bytes | None]]:
        """``count`` payloads; a quarter of the mutations get a second byte-level one."""
        out: list[tuple[bytes | None, bytes | None]] = []
        rand = self.rand
        ops = rand.choices(self.ops, self.weights, k=count)
        for n, op in enumerate(ops):
            row = dict(rand.choice(self.bases))
            row["values"] = dict(row["values"])
            # Time moves on from payload to payload, so that good rows fill windows.
            row["ts"] = self._stamp(START_MS + (self.issued + n) * STEP_MS // len(MACHINES))
            value = op(row)
            self.counts[op.__name__] += 1
            if value is not None and rand.random() < 0.25:
                value = rand.choice((self._flip, self._cut, self._insert))(value)
            out.append((value, self._key(row)))
        self.issued += count
        return out

    def _stamp(self, ts: int) -> Any:
        form = self.rand.random()
        if form < 0.5:
            return ts
        if form < 0.8:
            return iso(ts)
        if form < 0.9:
            return iso(ts).replace("Z", "+00:00")
        return float(ts)

    def _key(self, row: dict[str, Any]) -> bytes | None:
        pick = self.rand.random()
        machine = row.get("machine_id")
        if pick < 0.7 and isinstance(machine, str):
            return machine.encode()
        if pick < 0.85:
            return None
        if pick < 0.95:
            return self.rand.choice(BAD_UTF8) + b"PM1"
        return b"PM1" if machine != "PM1" else b"PM2"

    # Byte-level mutations -----------------------------------------------------------

    def _flip(self, data: bytes) -> bytes:
        if not data:
            return data
        buf = bytearray(data)
        for _ in range(self.rand.randint(1, 8)):
            buf[self.rand.randrange(len(buf))] = self.rand.randrange(256)
        return bytes(buf)

    def _cut(self, data: bytes) -> bytes:
        return data[: self.rand.randint(0, max(0, len(data) - 1))]

    def _insert(self, data: bytes) -> bytes:
        at = self.rand.randint(0, len(data))
        return data[:at] + self.rand.randbytes(self.rand.randint(1, 16)) + data[at:]

    def untouched(self, row: dict[str, Any]) -> bytes:
        return dumps(row)

    def byte_flips(self, row: dict[str, Any]) -> bytes:
        return self._flip(dumps(row))

    def truncate(self, row: dict[str, Any]) -> bytes:
        return self._cut(dumps(row))

    def splice(self, row: dict[str, Any]) -> bytes:
        a, b = dumps(row), dumps(self.rand.choice(self.bases))
        return a[: self.rand.randint(0, len(a))] + b[self.rand.randint(0, len(b)) :]

    def insert_bytes(self, row: dict[str, Any]) -> bytes:
        return self._insert(dumps(row))

    def repeat_chunk(self, row: dict[str, Any]) -> bytes:
        data = dumps(row)
        start = self.rand.randint(0, len(data) - 1)
        end = self.rand.randint(start, len(data))
        return data[:end] + data[start:end] * self.rand.randint(1, 20) + data[end:]

    # Structural mutations -----------------------------------------------------------

    def _field(self, row: dict[str, Any]) -> tuple[dict[str, Any], str]:
        """A place to put something: a top-level field or a sensor value."""
        pick = self.rand.random()
        if pick < 0.45:
            return row["values"], self.rand.choice(FUZZ_SENSORS)
        return row, self.rand.choice(("machine_id", "ts", "values", "break", "extra"))

    def deep_nesting(self, row: dict[str, Any]) -> bytes:
        depth = self.rand.choice((2, 10, 100, 1000, 1023, 1024, 1025, 5000))
        opener, closer = self.rand.choice(((b"[", b"]"), (b'{"a":', b"}")))
        core = b"1" if opener == b'{"a":' else b""
        token = opener * depth + core + closer * depth
        if self.rand.random() < 0.3:
            token = token[: -self.rand.randint(1, depth)]
        place, name = self._field(row)
        place[name] = RAW
        return dumps(row, token)

    def wrong_type(self, row: dict[str, Any]) -> bytes:
        place, name = self._field(row)
        place[name] = self.rand.choice(WRONG_TYPES)
        if self.rand.random() < 0.2:
            del row[self.rand.choice(("machine_id", "ts", "values"))]
        return dumps(row)

    def non_finite(self, row: dict[str, Any]) -> bytes:
        place, name = self._field(row)
        place[name] = RAW
        return dumps(row, self.rand.choice(NON_FINITE_TOKENS))

    def huge_number(self, row: dict[str, Any]) -> bytes:
        place, name = self._field(row)
        if self.rand.random() < 0.6:
            place[name] = self.rand.choice(HUGE_NUMBERS)
            return dumps(row)
        place[name] = RAW
        return dumps(row, self.rand.choice(HUGE_TOKENS))

    def duplicate_keys(self, row: dict[str, Any]) -> bytes:
        data = dumps(row)
        other = orjson.dumps(self.rand.choice(("PM2", "", 7, None, "PM1")))
        sensor = self.rand.choice(FUZZ_SENSORS).encode()
        first = self.rand.choice((b'"text"', b"null", b"1e5", b"[]", b"2.5"))
        choices = (
            data.replace(b"{", b'{"machine_id":' + other + b",", 1),
            data[:-1] + b',"machine_id":' + other + b"}",
            data.replace(b'"values":{', b'"values":{"' + sensor + b'":' + first + b",", 1),
            data[:-1] + b',"ts":' + orjson.dumps(self.rand.choice(TIMESTAMPS[:4])) + b"}",
            data[:-1] + b',"values":{}}',
            data[:-1] + b',"break":1,"break":0}',
        )
        return self.rand.choice(choices)

    def bad_utf8(self, row: dict[str, Any]) -> bytes:
        data = dumps(row)
        bad = self.rand.choice(BAD_UTF8)
        sensor = self.rand.choice(FUZZ_SENSORS).encode()
        machine = str(row["machine_id"]).encode()
        choices = (
            data.replace(b'"' + sensor + b'"', b'"' + sensor + bad + b'"', 1),
            data.replace(b'"' + machine + b'"', b'"' + bad + machine + b'"', 1),
            data.replace(b'"machine_id"', b'"machine' + bad + b'_id"', 1),
            data.replace(b'"ts":"', b'"ts":"' + bad, 1),
            data[:-1] + b',"' + bad + b'":1}',
        )
        return self.rand.choice(choices)

    def bad_escape(self, row: dict[str, Any]) -> bytes:
        place, name = self._field(row)
        place[name] = RAW
        return dumps(row, self.rand.choice(ESCAPES))

    def timestamp(self, row: dict[str, Any]) -> bytes:
        # Machines of their own: a far-future row that is accepted would otherwise leave
        # every later row of a common machine out of order.
        row["machine_id"] = f"T-{self.rand.randrange(64)}"
        pick = self.rand.random()
        if pick < 0.1:
            del row["ts"]
        elif pick < 0.6:
            row["ts"] = self.rand.choice(TIMESTAMPS)
        else:
            scale = 10 ** self.rand.randint(0, 18)
            row["ts"] = self.rand.choice((1, -1)) * self.rand.randint(0, scale)
        return dumps(row)

    def machine(self, row: dict[str, Any]) -> bytes:
        length = self.rand.choice((0, 1, 5, 40, 199, 200, 201, 1000))
        alphabet = "PM-_/ \t\x00\u00fc\u202e\U0001f600\u4e2d0123456789"
        part = "".join(self.rand.choices(alphabet, k=8))
        row["machine_id"] = (part * (length // 8 + 1))[:length]
        return dumps(row)

    def foreign_sensors(self, row: dict[str, Any]) -> bytes:
        count = self.rand.randint(0, 6)
        row["values"] = {f"flow{i}": float(i) for i in range(count)}
        return dumps(row)

    def oversized(self, row: dict[str, Any]) -> bytes:
        size = self.rand.choice((MAX_BYTES, MAX_BYTES + 1, MAX_BYTES + 7, 4 * MAX_BYTES))
        row["pad"] = ""
        fill = size - len(dumps(row))
        row["pad"] = "x" * max(0, fill)
        return dumps(row)

    def top_level(self, row: dict[str, Any]) -> bytes | None:
        data = dumps(row)
        choices: tuple[bytes | None, ...] = (
            None,
            self.rand.choice(TOP_LEVEL),
            b"\xef\xbb\xbf" + data,
            data + b"garbage",
            data + data,
            data + b"\n",
            b"[" + data + b"]",
        )
        return self.rand.choice(choices)


def check_row(row: r.Row, key: bytes | None) -> None:
    """What every accepted row promises the rest of the streamer."""
    assert isinstance(row.machine_id, str) and 0 < len(row.machine_id) <= 200
    assert key is None or key == row.machine_id.encode()
    assert type(row.ts_ms) is int and 0 <= row.ts_ms < 7_258_118_400_000
    assert row.brk in (0, 1)
    for name, value in row.values.items():
        assert isinstance(name, str)
        assert value is None or (type(value) is float and math.isfinite(value)), (name, value)


def decode_all(payloads: list[tuple[bytes | None, bytes | None]]) -> tuple[list[r.Row], Counter]:
    """Decode each payload; anything but a Row or a RowRejected with a known reason fails,
    and the batch decoder must give exactly what the row decoder gives."""
    accepted: list[r.Row] = []
    outcomes: Counter[str] = Counter()
    batch = r.decode_rows(payloads, MAX_BYTES)
    for (value, key), bulk in zip(payloads, batch, strict=True):
        try:
            row = r.decode_row(value, key, MAX_BYTES)
        except r.RowRejected as exc:
            assert exc.reason in r.REASONS and str(exc), (exc.reason, value, key)
            assert isinstance(bulk, r.RowRejected), (value, key)
            assert (bulk.reason, str(bulk)) == (exc.reason, str(exc))
            outcomes[exc.reason] += 1
            continue
        except Exception as exc:
            raise AssertionError(f"decode_row crashed on {value!r:.300} (key {key!r})") from exc
        assert bulk == row, (value, key)
        check_row(row, key)
        accepted.append(row)
        outcomes["accepted"] += 1
    return accepted, outcomes


def validate_all(rows: list[r.Row], chunk: int = 2048) -> Counter:
    """Accepted rows through the windows in batches, as the pipeline does."""
    windows = MachineWindows(FeatureSpec(FUZZ_SENSORS), 3, DataQuality(10 * 60_000, 4 * 60_000))
    outcomes: Counter[str] = Counter()
    for start in range(0, len(rows), chunk):
        batch = rows[start : start + chunk]
        ready = np.full((len(batch), 3, len(FUZZ_SENSORS)), np.nan, np.float32)
        observed = windows.observe_many(batch, [0] * len(batch), ready)
        for row, obs in zip(batch, observed, strict=True):
            if isinstance(obs, r.RowRejected):
                assert obs.reason in r.REASONS, obs.reason
                outcomes[obs.reason] += 1
                continue
            assert obs.kind in KINDS
            # A sensor value the model cannot hold would poison the machine's window.
            assert not np.isinf(obs.raw).any(), row
            outcomes[obs.kind] += 1
        assert np.isfinite(ready[: _ready_count(observed)]).all()
    return outcomes


def _ready_count(observed: list[Any]) -> int:
    return sum(1 for obs in observed if not isinstance(obs, r.RowRejected) and obs.kind == READY)


def test_two_hundred_thousand_mutated_payloads_decode_or_are_rejected_with_a_reason():
    fuzzer = Fuzzer(seed=20260101)
    started = time.perf_counter()
    payloads = fuzzer.payloads(PAYLOADS)
    accepted, decoded = decode_all(payloads)
    validated = validate_all(accepted)
    seconds = time.perf_counter() - started
    rejected = {k: v for k, v in decoded.items() if k != "accepted"}
    print(
        f"\nfuzz rows: {len(payloads):,} payloads in {seconds:.1f} s "
        f"({len(payloads) / seconds:,.0f}/s); decoded {decoded['accepted']:,}; "
        f"rejected by decoding {rejected}; accepted rows in the windows {dict(validated)}"
    )
    assert len(payloads) >= 200_000
    assert sum(decoded.values()) == len(payloads)
    assert sum(validated.values()) == len(accepted)
    # The generator reaches every reason and every fate of a good row, or it has decayed.
    assert set(r.REASONS) <= set(decoded) | set(validated)
    assert {READY, WARMING, BREAK, DEGRADED} <= set(validated)
    assert decoded["accepted"] > 0.1 * len(payloads)
    assert min(fuzzer.counts.values()) > 1000
    assert seconds < 120


# Messages over the limit are never parsed ---------------------------------------------


def test_an_oversized_message_is_rejected_before_it_is_parsed(monkeypatch):
    parsed: list[int] = []

    def spy(data: bytes) -> Any:
        parsed.append(len(data))
        return orjson.loads(data)

    monkeypatch.setattr(
        r, "orjson", SimpleNamespace(loads=spy, JSONDecodeError=orjson.JSONDecodeError)
    )
    row = {"machine_id": "PM1", "ts": START_MS, "values": {"x1": 1.0}, "pad": ""}
    row["pad"] = "x" * (MAX_BYTES - len(orjson.dumps(row)))
    at_limit = orjson.dumps(row)
    assert len(at_limit) == MAX_BYTES
    assert r.decode_row(at_limit, b"PM1", MAX_BYTES).machine_id == "PM1"
    assert parsed == [MAX_BYTES]
    huge = b'{"machine_id":"PM1","values":' + b"[" * (50 << 20) + b"]"
    started = time.perf_counter()
    for payload in (at_limit + b" ", huge):
        with pytest.raises(r.RowRejected) as caught:
            r.decode_row(payload, b"PM1", MAX_BYTES)
        assert caught.value.reason == r.TOO_LARGE
    seconds = time.perf_counter() - started
    print(
        f"\noversized: a {len(huge) >> 20} MB message rejected in {seconds * 1000:.2f} ms, unparsed"
    )
    assert parsed == [MAX_BYTES]
    assert seconds < 0.5


# Property tests over decode_row: structured rows with an oracle -------------------------

MAX_MS = 7_258_118_400_000
MISSING = object()


@dataclass(frozen=True)
class Field:
    """A field's JSON value (or MISSING) and the reason it must give, or "" when it is good."""

    value: Any
    reason: str = ""


def good(value: Any) -> Field:
    return Field(value)


def bad(reason: str) -> Callable[[Any], Field]:
    return lambda value: Field(value, reason)


def mostly(fine: st.SearchStrategy[Field], faulty: st.SearchStrategy[Field]) -> Any:
    """A field that is good five times in six, so that most rows have one fault or none."""
    return st.integers(0, 5).flatmap(lambda n: faulty if n == 5 else fine)


def _aware_iso(text: str) -> bool:
    try:
        return dt_from_iso(text).tzinfo is not None
    except ValueError:
        return False


def dt_from_iso(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def _stamp_text(moment: Any, zulu: bool) -> str:
    text = moment.isoformat()
    return text.replace("+00:00", "Z") if zulu else text


def _timestamps() -> st.SearchStrategy[Field]:
    offsets = st.timedeltas(
        min_value=dt.timedelta(hours=-23, minutes=-59), max_value=dt.timedelta(hours=23, minutes=59)
    ).map(lambda d: dt.timezone(dt.timedelta(minutes=d // dt.timedelta(minutes=1))))
    aware = st.datetimes(
        min_value=dt.datetime(1970, 1, 2), max_value=dt.datetime(2199, 12, 30), timezones=offsets
    )
    naive = st.datetimes(min_value=dt.datetime(1970, 1, 2), max_value=dt.datetime(2199, 12, 30))
    early = st.datetimes(max_value=dt.datetime(1969, 12, 30), timezones=offsets)
    late = st.datetimes(min_value=dt.datetime(2200, 1, 2), timezones=offsets)
    fine = st.one_of(
        st.integers(0, MAX_MS - 1).map(good),
        st.floats(0, MAX_MS - 1).map(good),
        st.builds(_stamp_text, aware, st.booleans()).map(good),
    )
    return mostly(
        fine,
        st.one_of(
            st.sampled_from((MISSING, None)).map(bad(r.MISSING_TIMESTAMP)),
            st.integers(-(2**63), -1).map(bad(r.BAD_TIMESTAMP)),
            st.integers(min_value=MAX_MS, max_value=2**64 - 1).map(bad(r.BAD_TIMESTAMP)),
            st.floats(max_value=-1.0, allow_infinity=False).map(bad(r.BAD_TIMESTAMP)),
            st.floats(min_value=MAX_MS, allow_infinity=False).map(bad(r.BAD_TIMESTAMP)),
            st.builds(_stamp_text, st.one_of(early, late), st.booleans()).map(bad(r.BAD_TIMESTAMP)),
            naive.map(lambda d: d.isoformat()).map(bad(r.BAD_TIMESTAMP)),
            st.text(max_size=40).filter(lambda s: not _aware_iso(s)).map(bad(r.BAD_TIMESTAMP)),
            st.sampled_from((True, False, [], {}, [0], {"ms": 0})).map(bad(r.BAD_TIMESTAMP)),
        ),
    )


JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=10),
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)
NUMBERS = st.one_of(
    st.none(), st.floats(allow_nan=False, allow_infinity=False), st.integers(-(2**63), 2**64 - 1)
)
NOT_A_NUMBER = st.one_of(
    st.booleans(), st.text(max_size=10), st.lists(JSON_SCALARS, max_size=2), st.just({})
)


def _values() -> st.SearchStrategy[Field]:
    names = st.text(max_size=12)
    spoiled = st.tuples(st.dictionaries(names, NUMBERS, max_size=6), names, NOT_A_NUMBER).map(
        lambda t: {**t[0], t[1]: t[2]}
    )
    return mostly(
        st.dictionaries(names, NUMBERS, max_size=8).map(good),
        spoiled.map(bad(r.NON_NUMERIC))
        | st.one_of(st.just(MISSING), JSON_VALUES.filter(lambda v: not isinstance(v, dict))).map(
            bad(r.NON_NUMERIC)
        ),
    )


def _machines() -> st.SearchStrategy[Field]:
    letter = st.characters(exclude_categories=("Cs",))
    too_long = st.builds(lambda c, n: c * n, letter, st.integers(201, 400))
    return mostly(
        st.text(letter, min_size=1, max_size=200).map(good),
        too_long.map(bad(r.MISSING_MACHINE_ID))
        | st.one_of(
            st.just(MISSING), st.just(""), JSON_VALUES.filter(lambda v: not isinstance(v, str))
        ).map(bad(r.MISSING_MACHINE_ID)),
    )


BREAKS = mostly(
    st.sampled_from((MISSING, 0, 1)).map(good),
    st.one_of(
        st.sampled_from((None, True, False, 0.0, 1.0, "1", [1], {})),
        st.integers(-(2**63), 2**64 - 1).filter(lambda n: n not in (0, 1)),
    ).map(bad(r.BAD_BREAK)),
)


@st.composite
def structured_rows(draw: Any) -> tuple[bytes, bytes | None, list[Field], Field]:
    machine, ts, values, brk = (
        draw(_machines()),
        draw(_timestamps()),
        draw(_values()),
        draw(BREAKS),
    )
    extra = draw(st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=3))
    row = {k: v for k, v in extra.items() if k not in ("machine_id", "ts", "values", "break")}
    for name, item in (("machine_id", machine), ("ts", ts), ("values", values), ("break", brk)):
        if item.value is not MISSING:
            row[name] = item.value
    own = machine.value.encode() if isinstance(machine.value, str) else b"PM1"
    key = draw(
        st.integers(0, 5).flatmap(
            lambda n: st.binary(max_size=12) if n == 5 else st.sampled_from((None, own))
        )
    )
    key_field = Field(key, "" if key is None or key == own else r.KEY_MISMATCH)
    return orjson.dumps(row), key, [machine, key_field, ts, values, brk], ts


def test_structured_rows_are_accepted_or_refused_for_their_first_fault():
    tally: Counter[str] = Counter()

    # Derandomized with no example database, so every machine runs the same examples; the
    # rarest first fault (a good machine and key, then no timestamp) is also given outright.
    @settings(max_examples=600, deadline=None, derandomize=True, database=None)
    @given(structured_rows())
    @example(
        (
            orjson.dumps({"machine_id": "PM1", "values": {}}),
            None,
            [good("PM1"), good(None), Field(MISSING, r.MISSING_TIMESTAMP), good({}), good(MISSING)],
            Field(MISSING, r.MISSING_TIMESTAMP),
        )
    )
    def check(case: tuple[bytes, bytes | None, list[Field], Field]) -> None:
        payload, key, fields, ts = case
        faults = [f.reason for f in fields if f.reason]
        try:
            row = r.decode_row(payload, key, 1 << 20)
        except r.RowRejected as exc:
            tally[exc.reason] += 1
            assert faults, f"a good row was refused: {exc.reason}: {exc}"
            assert exc.reason == faults[0], (faults, str(exc))
            return
        tally["accepted"] += 1
        assert not faults, f"accepted despite {faults}"
        check_row(row, key)
        if isinstance(ts.value, str):
            assert row.ts_ms == int(dt_from_iso(ts.value).timestamp() * 1000)
        else:
            assert row.ts_ms == int(ts.value)

    check()
    print(f"\nstructured rows: {sum(tally.values())} examples; outcomes {dict(tally)}")
    assert set(tally) == {"accepted", *r.REASONS} - {
        r.TOO_LARGE,
        r.INVALID_JSON,
        r.NON_FINITE,
        r.OUT_OF_ORDER,
        r.INCOMPATIBLE_SENSORS,
    }


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300), st.one_of(st.none(), st.binary(max_size=8)))
def test_arbitrary_bytes_never_crash_the_decoder(value, key):
    try:
        check_row(r.decode_row(value, key, 256), key)
    except r.RowRejected as exc:
        assert exc.reason in r.REASONS


# Property test over a whole batch: hostile messages change nothing for the good ones -----


@dataclass
class Message:
    """The few methods of a Kafka message the pipeline and the dead-letter path use."""

    payload: bytes | None
    key_bytes: bytes | None
    offset_number: int
    part: int = 0

    def value(self) -> bytes | None:
        return self.payload

    def key(self) -> bytes | None:
        return self.key_bytes

    def partition(self) -> int:
        return self.part

    def offset(self) -> int:
        return self.offset_number

    def topic(self) -> str:
        return "sensors"


class RecordingProducer:
    """Keeps what is produced, as a broker would."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def produce(self, topic: str, **record: Any) -> None:
        self.records.append({"topic": topic, **record})


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Model:
    root = tmp_path_factory.mktemp("tiny")
    save_model(root / "model.keras", seed=3)
    registry = Registry(root / "registry")
    folder = write_version(
        registry, "v1", root / "model.keras", typical_threshold(root / "model.keras")
    )
    return Model.load(folder)


GOOD_MACHINES = ("A", "B", "PM-ü/7", "M" * 200)
FAR_PAST = START_MS - 1  # before every good row: out of order once its machine has a row
PIPELINE_MAX_BYTES = 4096


@st.composite
def good_rows(draw: Any) -> list[tuple[bytes, bytes | None, str]]:
    """Rows of a few machines, each machine's in time order, some with gaps, nulls, breaks."""
    count = draw(st.integers(1, 48))
    clock = dict.fromkeys(GOOD_MACHINES, START_MS)
    out = []
    for _ in range(count):
        machine = draw(st.sampled_from(GOOD_MACHINES))
        clock[machine] += draw(st.sampled_from((1, 1, 1, 2, 3, 7, 12))) * 60_000
        values = {
            name: draw(st.one_of(st.floats(-3, 3, width=32), st.none()))
            if i == 2
            else draw(st.floats(-3, 3, width=32))
            for i, name in enumerate(SENSORS)
        }
        row: dict[str, Any] = {"machine_id": machine, "values": values}
        row["ts"] = draw(st.sampled_from((clock[machine], iso(clock[machine]))))
        if draw(st.integers(0, 29)) == 29:
            row["break"] = 1
        key = draw(st.sampled_from((machine.encode(), None)))
        out.append((orjson.dumps(row), key, machine))
    return out


def _hostile_from(
    row: bytes, key: bytes | None
) -> st.SearchStrategy[tuple[bytes | None, bytes | None, str]]:
    """Spoiled versions of a good row, each with the reason it must be refused for ("" for
    any reason; which fault wins is the decoder's business)."""
    data = orjson.loads(row)
    machine = data["machine_id"]

    def edited(**changes: Any) -> bytes:
        return orjson.dumps({**data, **changes})

    def spliced(token: bytes) -> bytes:
        return orjson.dumps({**data, "values": {**data["values"], "x1": RAW}}).replace(
            RAW_QUOTED, token
        )

    return st.one_of(
        st.integers(1, len(row) - 1).map(lambda n: (row[:n], key, r.INVALID_JSON)),
        st.binary(max_size=40).map(lambda b: (b, key, "")),
        st.just(
            (row[:-1] + b"," + b'"pad":"' + b"x" * PIPELINE_MAX_BYTES + b'"}', key, r.TOO_LARGE)
        ),
        st.sampled_from(NON_FINITE_TOKENS).map(lambda t: (spliced(t), key, r.INVALID_JSON)),
        st.integers(1025, 1500).map(lambda d: (spliced(b"[" * d + b"]" * d), key, r.INVALID_JSON)),
        st.integers(2, 50).map(lambda d: (spliced(b"[" * d + b"]" * d), key, r.NON_NUMERIC)),
        st.sampled_from((1e39, -1e300, 3.5e38)).map(
            lambda v: (edited(values={**data["values"], "x2": v}), key, r.NON_FINITE)
        ),
        st.sampled_from(([], "text", 1.5, None)).map(
            lambda v: (edited(values=v), key, r.NON_NUMERIC)
        ),
        st.sampled_from((None, 7, [machine], "")).map(
            lambda v: (edited(machine_id=v), None, r.MISSING_MACHINE_ID)
        ),
        st.sampled_from(
            ("yesterday", -5, 10**16, "0001-01-01T00:00:00Z", "2300-01-01T00:00:00Z")
        ).map(lambda v: (edited(ts=v), key, r.BAD_TIMESTAMP)),
        st.sampled_from((2, -1, 0.0, True, "1")).map(
            lambda v: (edited(**{"break": v}), key, r.BAD_BREAK)
        ),
        st.sampled_from(BAD_UTF8).map(lambda b: (row, b + machine.encode(), r.KEY_MISMATCH)),
        st.sampled_from(BAD_UTF8).map(
            lambda b: (row.replace(b'"x1"', b'"x1' + b + b'"', 1), key, r.INVALID_JSON)
        ),
        st.just((row[:-1] + b',"ts":"late"}', key, r.BAD_TIMESTAMP)),
        st.just((edited(ts=None), key, r.MISSING_TIMESTAMP)),
        st.just((row, b"someone-else", r.KEY_MISMATCH)),
        st.just((edited(values={"flow": 1.0, "speed": 2.0}), key, r.INCOMPATIBLE_SENSORS)),
        st.just((edited(ts=FAR_PAST), key, r.OUT_OF_ORDER)),
    )


@st.composite
def mixed_batches(draw: Any) -> tuple[list[Message], set[int], dict[int, str], list[int]]:
    """Good rows with hostile messages spread among them, and where the batches end.

    Returns the messages, the offsets of the good ones, the reason each hostile one must get
    ("" for any) and the batch boundaries.
    """
    good = draw(good_rows())
    hostile = draw(st.lists(st.integers(0, len(good) - 1), max_size=24))
    stream: list[tuple[bytes | None, bytes | None, str | None]] = [
        (value, key, None) for value, key, _ in good
    ]
    for source in hostile:
        value, key, _ = good[source]
        spoiled = draw(_hostile_from(value, key))
        # After its source row, so that a row from the far past is out of order.
        at = draw(st.integers(stream.index((value, key, None)) + 1, len(stream)))
        stream.insert(at, spoiled)
    messages = [Message(value, key, offset) for offset, (value, key, _) in enumerate(stream)]
    good_offsets = {
        m.offset_number for m, item in zip(messages, stream, strict=True) if item[2] is None
    }
    expected = {
        m.offset_number: str(item[2])
        for m, item in zip(messages, stream, strict=True)
        if item[2] is not None
    }
    cuts = sorted(set(draw(st.lists(st.integers(1, len(messages)), max_size=4))) | {len(messages)})
    return messages, good_offsets, expected, cuts


def run_batches(
    model: Model, messages: list[Message], cuts: list[int], keep: Callable[[Message], bool]
) -> dict[str, Any]:
    """The messages through the pipeline batch by batch (dropping those ``keep`` refuses)."""
    bundle = model.bundle
    quality = DataQuality(
        int(bundle.max_gap_minutes * 60_000), int(bundle.max_gap_minutes * 60_000)
    )
    windows = MachineWindows(bundle.spec, bundle.lookback, quality, bundle.history)
    result: dict[str, Any] = {
        "scores": {},
        "unscored": Counter(),
        "alerts": [],
        "breaks": [],
        "dead": [],
    }
    start = 0
    for end in cuts:
        batch = [m for m in messages[start:end] if keep(m)]
        start = end
        outcome = process(model, windows, batch, PIPELINE_MAX_BYTES, now_ms=START_MS)
        for position, index in enumerate(outcome.scored):
            result["scores"][batch[index].offset_number] = float(outcome.scores[position])
        result["unscored"].update(outcome.unscored)
        result["alerts"].extend(outcome.alerts)
        result["breaks"].extend(outcome.breaks)
        result["dead"].extend((batch[index], reason, text) for index, reason, text in outcome.dead)
    return result


def test_hostile_messages_are_dead_lettered_and_change_nothing_for_the_good_rows(tiny_model):
    tally: Counter[str] = Counter()

    # Derandomized, and enough examples that every reason shows up whatever order the suite
    # runs in (the coverage asserted below is of the generator, not of the decoder).
    @settings(
        max_examples=120,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(mixed_batches())
    def check(case: tuple[list[Message], set[int], dict[int, str], list[int]]) -> None:
        messages, good_offsets, expected, cuts = case
        alone = run_batches(tiny_model, messages, cuts, lambda m: m.offset_number in good_offsets)
        mixed = run_batches(tiny_model, messages, cuts, lambda m: True)
        # Every hostile message is dead-lettered, for its own fault; no good one is.
        dead = {m.offset_number: reason for m, reason, _ in mixed["dead"]}
        assert set(dead) == set(expected)
        for offset, reason in dead.items():
            assert reason in r.REASONS
            assert expected[offset] in ("", reason), (offset, expected[offset], reason)
        assert alone["dead"] == []
        # The good rows fare exactly as they do without the hostile ones.
        assert mixed["scores"] == alone["scores"]
        assert mixed["unscored"] == alone["unscored"]
        assert mixed["alerts"] == alone["alerts"]
        assert mixed["breaks"] == alone["breaks"]
        # What reaches the dead-letter topic is the message unchanged, with its reason.
        producer = RecordingProducer()
        for message, reason, text in mixed["dead"]:
            kafka_io.dead_letter(producer, "sensors.dlq", message, reason, text)  # type: ignore[arg-type]
        for (message, reason, _), record in zip(mixed["dead"], producer.records, strict=True):
            assert (record["value"], record["key"]) == (message.payload, message.key_bytes)
            headers = dict(record["headers"])
            assert headers["dlq.reason"] == reason.encode()
            assert headers["dlq.source.offset"] == str(message.offset_number).encode()
            assert headers["dlq.message"]
        tally["messages"] += len(messages)
        tally["hostile"] += len(expected)
        tally["scored"] += len(mixed["scores"])
        tally["alerts"] += len(mixed["alerts"])
        tally.update(f"dead:{reason}" for reason in dead.values())

    check()
    print(f"\npipeline with hostile rows: {dict(tally)}")
    assert tally["scored"] > 0 and tally["alerts"] > 0
    for reason in set(r.REASONS):
        assert tally[f"dead:{reason}"] > 0, reason
