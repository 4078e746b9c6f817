"""Window rebuilds: read a partition back so its machines are as an uninterrupted member has
them, each machine's adaptive threshold resumed from its newest checkpoint."""

from __future__ import annotations

import logging
import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from streamer import kafka_io
from streamer.broker import BrokerError
from streamer.checkpoint import Checkpoint
from streamer.checkpoint import newest as newest_checkpoints
from streamer.machines import MachineWindows
from streamer.metrics import StreamerMetrics
from streamer.pipeline import Model, process
from streamer.rows import RowRejected, decode_row
from streamer.settings import StreamerSettings
from streamer.shadow import Shadow

log = logging.getLogger(__name__)

TIMEOUT = 30.0


class Rebuilder:
    """Reads partitions back through a consumer outside the group, built on first need."""

    def __init__(
        self, settings: StreamerSettings, clients: kafka_io.KafkaClients, metrics: StreamerMetrics
    ) -> None:
        self.settings, self.clients, self.metrics = settings, clients, metrics
        self._reader: Any = None
        self._state_partitions: int | None = None  # of the state topic, once known

    @property
    def reader(self) -> Any:
        """The consumer that reads partitions back (made on first use)."""
        if self._reader is None:
            self._reader = self.clients.consumer(kafka_io.reader_config(self.settings))
        return self._reader

    def close(self) -> None:
        """Close the reader, if one was made."""
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def rebuild(
        self, windows: MachineWindows, model: Model, shadow: Shadow | None, partition: int, end: int
    ) -> None:
        """Feed the rows just before ``end`` through the pipeline (nothing is published)."""
        if end <= 0:
            return
        topic = self.settings.topic
        low, _ = self.reader.get_watermark_offsets(TopicPartition(topic, partition), TIMEOUT)
        start, last_ts = self._start(partition, low, end, model.bundle.history_minutes)
        checkpoints = self._checkpoints(model, partition, end, last_ts)
        if checkpoints:
            # Each machine's rows after its checkpoint are replayed into its histogram.
            start = max(low, min(start, min(c.offset for c in checkpoints.values()) + 1))
            windows.resume(partition, checkpoints)
        messages = read(self.reader, topic, partition, start, end)
        if messages:
            process(model, windows, messages, self.settings.max_row_bytes, 0, shadow)
            windows.evict_idle({partition})
        self.metrics.replayed.inc(len(messages))
        self.metrics.rows_unscored.labels("replay").inc(len(messages))
        log.info(
            "partition %d: rebuilt windows from %d rows (offsets %d to %d), %d machines' "
            "thresholds from checkpoints",
            *(partition, len(messages), start, end, len(checkpoints)),
        )

    def _checkpoints(
        self, model: Model, partition: int, end: int, last_ts: int | None
    ) -> dict[str, Checkpoint]:
        """The partition's newest usable adaptive-threshold states (none for a fixed one)."""
        calibration = model.bundle.calibration
        if calibration is None or last_ts is None or partition >= self.state_partitions():
            return {}
        topic = self.settings.state_topic
        low, _ = self.reader.get_watermark_offsets(TopicPartition(topic, partition), TIMEOUT)
        records = read(self.reader, topic, partition, low)
        # A bound on how far back to look: a machine whose newest checkpoint is older than
        # this was idle (its rows after the checkpoint span less than checkpoint_minutes).
        # The exact verdict is the windows' own, at the machine's next row.
        since = last_ts / 60_000 - self.settings.idle_minutes - self.settings.checkpoint_minutes
        return newest_checkpoints(
            (m.value() for m in records), end, model.bundle.version, calibration, since
        )

    def state_partitions(self) -> int:
        """Partitions of the state topic, created on first need with the rows topic's
        partitions (0: checkpoints are off, and a rebuilt machine's threshold starts from
        the bundle's prior)."""
        if self._state_partitions is None:
            self._state_partitions = self._state_topic()
        return self._state_partitions

    def _state_topic(self) -> int:
        settings = self.settings
        try:
            rows = self.reader.list_topics(settings.topic, TIMEOUT).topics[settings.topic]
            admin = self.clients.admin(kafka_io.client_config(settings))
            wanted = len(rows.partitions)
            count = kafka_io.ensure_topic(admin, settings.state_topic, wanted, TIMEOUT)
        except (BrokerError, KafkaException, KeyError) as exc:
            log.error(
                "no state topic %s (%s): after a rebuild, adaptive thresholds restart from "
                "the bundle's prior",
                *(settings.state_topic, exc),
            )
            return 0
        log.info("state topic %s: %d partitions", settings.state_topic, count)
        return count

    def _start(
        self, partition: int, low: int, end: int, history_minutes: float
    ) -> tuple[int, int | None]:
        """Step back (x4 each time) until the rows reach ``replay_minutes`` before ``end``,
        or the model's whole history if that is longer (each machine's short-history score
        must see the rows an uninterrupted streamer kept); also the time of the row at
        ``end - 1``."""
        topic = self.settings.topic
        last = first_ts(read(self.reader, topic, partition, end - 1, end))
        if last is None:
            return max(low, end - 1), None
        span_ms = max(self.settings.replay_minutes, history_minutes) * 60_000
        step = 256
        start = max(low, end - step)
        while start > low:
            head = read(self.reader, topic, partition, start, min(end, start + 16))
            first = first_ts(head)
            if first is not None and first <= last - span_ms:
                break
            step *= 4
            start = max(low, end - step)
        return start, last


def first_ts(messages: list[Any]) -> int | None:
    """The time of the first decodable row among ``messages``."""
    for message in messages:
        try:
            return decode_row(message.value(), None, 1 << 30).ts_ms
        except RowRejected:
            continue
    return None


def read(reader: Any, topic: str, partition: int, start: int, end: int | None = None) -> list[Any]:
    """Records with offsets in ``[start, end)`` of one partition (to its end when ``end`` is
    None), within a deadline.

    A rows partition is read up to the committed offset, never to the high watermark: the
    rows past the commit are the live loop's to score. The partition's end alone ends a read
    only once a further poll brings nothing, because the end some brokers report falls short
    of the last record; and ``end - 1`` may be a transaction marker, which is never delivered.
    Both hold on Kafka and on the embedded broker alike.
    """
    reader.assign([TopicPartition(topic, partition, start)])
    out: list[Any] = []
    deadline = time.monotonic() + TIMEOUT
    seen_end = False
    while time.monotonic() < deadline:
        batch = reader.consume(10_000 if end is None else min(10_000, end - start), 0.5)
        records = [m for m in batch if m.error() is None]
        out.extend(m for m in records if end is None or (m.offset() or 0) < end)
        if end is not None and out and (out[-1].offset() or 0) >= end - 1:
            break
        if seen_end and not records:
            break
        seen_end |= any(_is_end(m) for m in batch)
    reader.unassign()
    return out


def _is_end(message: Any) -> bool:
    """Whether the message is the consumer's end-of-partition event."""
    error = message.error()
    return error is not None and error.code() == KafkaError._PARTITION_EOF
