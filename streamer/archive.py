"""``streamer archive``: a group member that writes sensor rows to Parquet files by day.

Exactly once in effect, with the group's committed offset as the truth: a flush writes and
renames its files, then commits the offsets after them. Files whose flush starts at or past
the committed offset were never committed; they are deleted when the partition is
assigned, before reading resumes, so the rows are written again exactly once.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from streamer.archive_metrics import PREFIX, ArchiveHealth, ArchiveMetrics
from streamer.archive_settings import ArchiveSettings
from streamer.archive_store import ArchiveStore
from streamer.archive_writer import ArchiveWriter
from streamer.health import HealthCollector
from streamer.outage import client_error, throttle, wait_for_broker

log = logging.getLogger(__name__)
_broker_log = logging.getLogger(f"{__name__}.broker")  # throttled: clients repeat themselves
_TIMEOUT = 30.0
_PROBE_EVERY = 5.0


class Archiver:
    """One consumer-group member; ``run`` loops until ``stop`` is set."""

    def __init__(
        self,
        settings: ArchiveSettings,
        metrics: ArchiveMetrics,
        stop: threading.Event,
        consumer_factory: Callable[[dict[str, Any]], Any] = Consumer,
    ) -> None:
        self.settings, self.metrics, self.stop = settings, metrics, stop
        self.consumer_factory = consumer_factory
        store = ArchiveStore(settings.out, settings.compression)
        self.writer = ArchiveWriter(store, metrics, settings.max_row_bytes)
        self.health = ArchiveHealth()
        metrics.registry.register(HealthCollector(self.health, PREFIX))
        self.committed: dict[int, int] = {}
        self._consumer: Any = None
        strategy = settings.kafka.extra.get("partition.assignment.strategy", "")
        self._cooperative = "cooperative" in strategy

    def run(self) -> None:
        """Wait for the broker, then consume until stopped; a clean stop flushes first, a
        failure commits nothing more."""
        settings, writer = self.settings, self.writer
        config = {**settings.consumer_config(), "error_cb": self._client_error}
        throttle(config["logger"])
        throttle(_broker_log)
        consumer = self._consumer = self.consumer_factory(config)
        clean = False
        try:
            if not wait_for_broker(self._answers, self.stop, self.health, "archiver"):
                clean = True
                return
            consumer.subscribe(
                [settings.topic],
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_lost,
            )
            last_probe = 0.0
            while not self.stop.is_set():
                # No flush grows past --flush-rows, however large the backlog.
                room = max(1, min(settings.max_batch, settings.flush_rows - writer.pending))
                for message in consumer.consume(room, settings.poll_seconds):
                    if _is_row(message):
                        writer.take(message)
                self.health.polled()
                self.metrics.buffered.set(writer.pending)
                if writer.due(settings.flush_rows, settings.flush_seconds):
                    writer.flush(self._commit)
                if time.monotonic() - last_probe >= _PROBE_EVERY:
                    self._probe()
                    last_probe = time.monotonic()
            writer.flush(self._commit)
            clean = True
        finally:
            if not clean:
                writer.drop(list(writer.buffers))
            consumer.close()
            self._consumer = None

    def _answers(self, timeout: float) -> None:
        """Raises unless the broker answers a metadata request within ``timeout``."""
        self.health.polled()  # alive while waiting
        self._consumer.list_topics(self.settings.topic, timeout=timeout)

    def _client_error(self, error: KafkaError) -> None:
        """The consumer's client-wide errors; librdkafka reconnects by itself."""
        client_error(self.health, _broker_log, error)

    def _commit(self, offsets: Mapping[int, int]) -> bool:
        """Commit synchronously; on failure the files stay, for the next commit or a restart."""
        topic = self.settings.topic
        wanted = [TopicPartition(topic, p, o) for p, o in offsets.items()]
        try:
            result = self._consumer.commit(offsets=wanted, asynchronous=False) or []
        except KafkaException as exc:
            failure = str(exc)
        else:
            failure = "; ".join(f"{tp.partition}: {tp.error}" for tp in result if tp.error)
        if failure:
            self.metrics.commit_failures.inc()
            log.error("offset commit failed (%s)", failure)
            return False
        self.committed.update(offsets)
        return True

    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        """Delete what no commit covers, then read each partition from its commit on."""
        self.health.joined()
        # A cooperative rebalance adds partitions to the assignment; an eager one replaces it.
        assign = consumer.incremental_assign if self._cooperative else consumer.assign
        if not partitions:
            assign([])
            return
        files = self.writer.store.list()
        starts = []
        for tp in consumer.committed(partitions, _TIMEOUT):
            start = tp.offset if tp.offset >= 0 else self._low(consumer, tp.partition)
            resume = self.writer.recover(tp.partition, start, files)
            self.committed[tp.partition] = resume
            starts.append(TopicPartition(self.settings.topic, tp.partition, resume))
        assign(starts)

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        """Flush before the partitions go: their next owner resumes at this commit."""
        self.writer.flush(self._commit)
        self._forget(partitions)

    def _on_lost(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        """Partitions another member may own already: their rows are not ours to write."""
        log.warning(
            "lost partitions %s; their unflushed rows are dropped",
            sorted(tp.partition for tp in partitions),
        )
        self.writer.drop(tp.partition for tp in partitions)
        self._forget(partitions)

    def _forget(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.committed.pop(tp.partition, None)
            with contextlib.suppress(KeyError):
                self.metrics.lag.remove(str(tp.partition))

    def _low(self, consumer: Any, partition: int) -> int:
        tp = TopicPartition(self.settings.topic, partition)
        low, _ = consumer.get_watermark_offsets(tp, _TIMEOUT)
        return int(low)

    def _probe(self) -> None:
        consumer = self._consumer
        self.health.probe(consumer, self.settings.topic)
        for partition, position in list(self.committed.items()):
            tp = TopicPartition(self.settings.topic, partition)
            try:
                _, high = consumer.get_watermark_offsets(tp, timeout=1.0, cached=False)
            except KafkaException:
                continue
            self.metrics.lag.labels(str(partition)).set(max(0, high - position))


def _is_row(message: Any) -> bool:
    """A record, not an event such as the end of a partition."""
    error = message.error()
    if error is None:
        return True
    if error.code() != KafkaError._PARTITION_EOF:
        log.warning("consumer error: %s", error)
    return False
