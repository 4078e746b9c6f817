"""Decoding and checking sensor rows: a good row, or a rejection with a named reason."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

# Reasons a row goes to the dead-letter topic (a bounded set: they label a metric).
TOO_LARGE = "too_large"
INVALID_JSON = "invalid_json"
MISSING_MACHINE_ID = "missing_machine_id"
KEY_MISMATCH = "key_mismatch"
MISSING_TIMESTAMP = "missing_timestamp"
BAD_TIMESTAMP = "bad_timestamp"
NON_NUMERIC = "non_numeric"
NON_FINITE = "non_finite"
BAD_BREAK = "bad_break"
OUT_OF_ORDER = "out_of_order"
INCOMPATIBLE_SENSORS = "incompatible_sensors"
REASONS = (
    TOO_LARGE,
    INVALID_JSON,
    MISSING_MACHINE_ID,
    KEY_MISMATCH,
    MISSING_TIMESTAMP,
    BAD_TIMESTAMP,
    NON_NUMERIC,
    NON_FINITE,
    BAD_BREAK,
    OUT_OF_ORDER,
    INCOMPATIBLE_SENSORS,
)

_MIN_MS = 0  # 1970-01-01
_MAX_MS = 7_258_118_400_000  # 2200-01-01
_MAX_MACHINE_ID = 200
_FLOATS = frozenset((float,))


class RowRejected(Exception):  # noqa: N818  (a verdict, not a failure of the program)
    """A row that cannot be used; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Row:
    """A decoded, checked sensor row."""

    machine_id: str
    ts_ms: int
    values: Mapping[str, float | None]
    brk: int


def decode_row(value: bytes | None, key: bytes | None, max_bytes: int) -> Row:
    """Parse a message value into a :class:`Row` or raise :class:`RowRejected`."""
    if value is None:
        raise RowRejected(INVALID_JSON, "empty message value")
    if len(value) > max_bytes:
        raise RowRejected(TOO_LARGE, f"{len(value)} bytes is over the {max_bytes}-byte limit")
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise RowRejected(INVALID_JSON, f"not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise RowRejected(INVALID_JSON, f"a JSON {type(data).__name__}, not an object")
    machine = data.get("machine_id")
    if not isinstance(machine, str) or not machine or len(machine) > _MAX_MACHINE_ID:
        raise RowRejected(MISSING_MACHINE_ID, "machine_id must be a non-empty string")
    if key is not None and key != machine.encode():
        raise RowRejected(KEY_MISMATCH, "the message key differs from machine_id")
    return Row(
        machine, parse_ts(data.get("ts")), _values(data.get("values")), _break(data.get("break", 0))
    )


def decode_rows(
    messages: Sequence[tuple[bytes | None, bytes | None]], max_bytes: int
) -> list[Row | RowRejected]:
    """:func:`decode_row` of each (value, key), a rejection in place of a row it refuses.

    The common row (keyed by its machine, epoch-millisecond time, every value a finite
    float, break 0 or 1) is checked inline; any other goes through :func:`decode_row`,
    which gives the same row or the rejection with its reason.
    """
    loads, floats, isfinite = orjson.loads, _FLOATS, math.isfinite
    out: list[Row | RowRejected] = []
    for value, key in messages:
        if value is not None and len(value) <= max_bytes:
            try:
                data = loads(value)
            except orjson.JSONDecodeError:
                data = None
            if type(data) is dict:
                machine, ts = data.get("machine_id"), data.get("ts")
                values, brk = data.get("values"), data.get("break", 0)
                if (
                    type(machine) is str
                    and 0 < len(machine) <= _MAX_MACHINE_ID
                    and (key is None or key == machine.encode())
                    and type(ts) is int
                    and _MIN_MS <= ts < _MAX_MS
                    and type(values) is dict
                    and type(brk) is int
                    and brk in (0, 1)
                    and floats.issuperset(map(type, values.values()))
                    and isfinite(sum(values.values()))
                ):
                    out.append(Row(machine, ts, values, brk))
                    continue
        try:
            out.append(decode_row(value, key, max_bytes))
        except RowRejected as exc:
            out.append(exc)
    return out


def parse_ts(raw: Any) -> int:
    """Epoch milliseconds from an RFC 3339 string or a number of epoch milliseconds."""
    if raw is None:
        raise RowRejected(MISSING_TIMESTAMP, "ts is missing")
    if isinstance(raw, bool):
        raise RowRejected(BAD_TIMESTAMP, "ts must be RFC 3339 text or epoch milliseconds")
    if isinstance(raw, int | float):
        if not math.isfinite(raw):
            raise RowRejected(BAD_TIMESTAMP, "ts is not finite")
        ms = int(raw)
    elif isinstance(raw, str):
        try:
            stamp = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            raise RowRejected(BAD_TIMESTAMP, f"ts {raw[:40]!r} is not RFC 3339") from None
        if stamp.tzinfo is None:
            raise RowRejected(BAD_TIMESTAMP, f"ts {raw[:40]!r} has no time zone")
        ms = int(stamp.timestamp() * 1000)
    else:
        raise RowRejected(BAD_TIMESTAMP, "ts must be RFC 3339 text or epoch milliseconds")
    if not _MIN_MS <= ms < _MAX_MS:
        raise RowRejected(BAD_TIMESTAMP, f"ts {ms} ms lies outside 1970 to 2200")
    return ms


def _values(raw: Any) -> dict[str, float | None]:
    if not isinstance(raw, dict):
        raise RowRejected(NON_NUMERIC, "values must be an object of sensor: number")
    # The common row (every value a float, all finite) is taken as it is, checked at C
    # speed; a sum that is not finite may also come from large finite values, so anything
    # else gets the sensor-by-sensor check below, which names the culprit.
    numbers = raw.values()
    if _FLOATS.issuperset(map(type, numbers)) and math.isfinite(sum(numbers)):
        return raw
    out: dict[str, float | None] = {}
    for name, value in raw.items():
        if value is None:
            out[name] = None
        elif isinstance(value, int | float) and not isinstance(value, bool):
            number = float(value)
            if not math.isfinite(number):
                raise RowRejected(NON_FINITE, f"sensor {name[:40]!r} is not finite")
            out[name] = number
        else:
            raise RowRejected(NON_NUMERIC, f"sensor {name[:40]!r} is a {type(value).__name__}")
    return out


def _break(raw: Any) -> int:
    # JSON true and false are not the contract's 0 and 1 (Python would compare them equal).
    if raw in (0, 1) and not isinstance(raw, float | bool):
        return int(raw)
    raise RowRejected(BAD_BREAK, "break must be 0 or 1")
