"""A broker out of reach: wait for it with backoff, and log the outage once per interval."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError

log = logging.getLogger(__name__)

LOG_EVERY = 30.0
"""Seconds between two log lines about the same outage."""

_NUMBERS = re.compile(r"\d+")
_SUPPRESSED = re.compile(r",? \d+ identical error\(s\) suppressed")  # librdkafka's own count


class Repeats(logging.Filter):
    """Let the first record of each kind through, then one per ``every`` seconds that says
    how many like it were held back. Records differing only in numbers (ports, counts,
    milliseconds) are of one kind."""

    def __init__(self, every: float = LOG_EVERY, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.every, self.clock = every, clock
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()

    def reset(self) -> None:
        """Forget what was seen: the next record of every kind goes through."""
        with self._lock:
            self._last.clear()
            self._held.clear()

    def filter(self, record: logging.LogRecord) -> bool:
        """Whether to emit ``record`` (with the count of the held-back ones appended)."""
        text = record.getMessage()
        kind = _NUMBERS.sub("#", _SUPPRESSED.sub("", f"{record.name}:{text}"))
        now = self.clock()
        with self._lock:
            last = self._last.get(kind)
            if last is not None and now - last < self.every:
                self._held[kind] = self._held.get(kind, 0) + 1
                return False
            self._last[kind] = now
            held = self._held.pop(kind, 0)
        if held:
            record.msg = f"{text} ({held} more like it in the last {self.every:g} s)"
            record.args = ()
        return True


def throttle(logger: logging.Logger) -> logging.Logger:
    """Give ``logger`` a :class:`Repeats` filter (one, however often asked), with nothing
    held back yet: each run logs the first record of each kind."""
    for existing in logger.filters:
        if isinstance(existing, Repeats):
            existing.reset()
            return logger
    logger.addFilter(Repeats())
    return logger


def wait_for_broker(
    probe: Callable[[float], Any],
    stop: threading.Event,
    health: Any,
    what: str,
    every: float = LOG_EVERY,
) -> bool:
    """Ask ``probe(timeout)`` until it answers, backing off from 0.25 s to 5 s between tries;
    ``health`` shows the broker lost meanwhile. False when ``stop`` was set first."""
    started = last_log = time.monotonic()
    delay, tries = 0.25, 0
    while not stop.is_set():
        try:
            probe(1.0)
        except Exception as exc:  # any failure means the broker did not answer
            tries += 1
            health.broker_lost()
            if tries == 1 or time.monotonic() - last_log >= every:
                log.warning(
                    "%s: no broker answers (%s) after %.0f s; still trying",
                    *(what, exc, time.monotonic() - started),
                )
                last_log = time.monotonic()
            stop.wait(delay)
            delay = min(5.0, delay * 2)
            continue
        health.broker_answered()
        if tries:
            log.info("%s: the broker answered after %.1f s", what, time.monotonic() - started)
        return True
    return False


def client_error(health: Any, logger: logging.Logger, error: KafkaError) -> None:
    """A client-wide error from librdkafka (served by the client's polls): losing every
    broker connection marks ``health`` unreachable; librdkafka reconnects by itself."""
    if error.code() == KafkaError._ALL_BROKERS_DOWN:
        health.broker_lost()
        logger.warning("lost every broker connection (%s); reconnecting", error.str())
    else:
        logger.debug("client error: %s", error)
