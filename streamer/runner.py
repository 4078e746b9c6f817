"""The consume loop: poll a batch, score it, publish alerts and dead letters, commit together."""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from streamer import kafka_io
from streamer.alerts import describe
from streamer.bundle import Registry
from streamer.checkpoint import Checkpoint
from streamer.checkpoint import encode as encode_checkpoint
from streamer.errors import BundleError, SheetBreakError
from streamer.health import PROBE_EVERY, BrokerProber, Health, HealthCollector
from streamer.machines import DataQuality, MachineWindows
from streamer.metrics import StreamerMetrics, observe_many
from streamer.outage import client_error, throttle, wait_for_broker
from streamer.pipeline import BatchOutcome, Model, process
from streamer.replay import Rebuilder
from streamer.settings import StreamerSettings
from streamer.shadow import LOADED, REFUSED, Shadow, ShadowSource

log = logging.getLogger(__name__)
_broker_log = logging.getLogger(f"{__name__}.broker")  # throttled: clients repeat themselves

Message = Any  # a confluent-kafka message, or a test's stand-in with the same methods

_TIMEOUT = 30.0
_LAG_EVERY = 5.0


class StoppedError(SheetBreakError):
    """A stop was asked for while a batch waited on the broker; the batch is not committed."""


class Streamer:
    """One consumer-group member; ``run`` loops until ``stop`` is set."""

    def __init__(
        self,
        settings: StreamerSettings,
        metrics: StreamerMetrics,
        stop: threading.Event,
        on_alert: Callable[[dict[str, Any]], None] | None = None,
        clients: kafka_io.KafkaClients | None = None,
    ) -> None:
        self.settings, self.metrics, self.stop = settings, metrics, stop
        self.on_alert = on_alert
        self.clients = clients or kafka_io.KafkaClients()
        self.rebuilder = Rebuilder(settings, self.clients, metrics)
        self.registry = Registry(settings.registry)
        self.model = Model.load(self.registry.current_path())
        self.health = Health(lambda: self.model.bundle.version)
        metrics.registry.register(HealthCollector(self.health))
        self.windows = self._new_windows()
        self.refused: set[str] = set()
        self.committed: dict[int, int] = {}
        self.assigned: set[int] = set()
        self._consumer: Any = None
        self._producer: Any = None
        self._stale: set[int] = set()
        self._row_seconds = 0.0  # the last batch's time per row, which bounds the next batch
        metrics.use_model(self.model.bundle.version, self.model.bundle.threshold)
        log.info("using model %s (%s)", self.model.bundle.version, _threshold_text(self.model))
        self.shadow: Shadow | None = None
        self.shadow_source = None if settings.shadow is None else ShadowSource(settings.shadow)
        if self.shadow_source is not None:
            metrics.shadow.watching()
            self._check_shadow()

    def _new_windows(self) -> MachineWindows:
        bundle = self.model.bundle
        max_gap_ms = int(bundle.max_gap_minutes * 60_000)
        carry = self.settings.carry_minutes
        quality = DataQuality(
            max_gap_ms,
            int(carry * 60_000) if carry is not None else max_gap_ms,
            self.settings.min_sensor_share,
            int(self.settings.idle_minutes * 60_000),
        )
        return MachineWindows(bundle.spec, bundle.lookback, quality, bundle.history)

    # The loop --------------------------------------------------------------------------

    def run(self) -> None:
        """Wait for the broker, then consume until stopped; always leaves the group cleanly."""
        settings = self.settings
        throttle(_broker_log)
        consumer = self.clients.consumer(
            {**kafka_io.consumer_config(settings), "error_cb": self._client_error}
        )
        producer = self.clients.producer(
            {
                **kafka_io.producer_config(settings),
                "error_cb": self._client_error,
                "on_delivery": kafka_io.on_delivery_error(self._delivery_failed),
            }
        )
        self._consumer, self._producer = consumer, producer
        prober = BrokerProber(
            self.health,
            self.clients.admin(kafka_io.client_config(settings)),
            settings.topic,
            self.stop,
            PROBE_EVERY,
        )
        prober.start()
        try:
            if self._connect(consumer, producer):
                consumer.subscribe(
                    [settings.topic],
                    on_assign=self._on_assign,
                    on_revoke=self._on_revoke,
                    on_lost=self._on_revoke,
                )
                self._loop(consumer)
        except StoppedError:
            log.info("stopped while a batch waited on the broker; it was not committed")
        finally:
            prober.close()
            log.info("stopping: closing the consumer and flushing the producer")
            consumer.close()
            producer.flush(1.0)  # a transaction holds every record; nothing else waits
            self.rebuilder.close()
            self._consumer = self._producer = None

    def _connect(self, consumer: Any, producer: Any) -> bool:
        """Wait until the broker answers, then take up the transactional id; False if a
        stop came first."""

        def probe(timeout: float) -> None:
            self.health.polled()  # alive while waiting
            producer.poll(0)  # serves the clients' logs and errors
            consumer.list_topics(self.settings.topic, timeout=timeout)

        if not wait_for_broker(probe, self.stop, self.health, self.settings.instance_id):
            return False
        return not self.settings.transactions or kafka_io.retry(
            producer.init_transactions, self.stop.is_set
        )

    def _loop(self, consumer: Any) -> None:
        settings = self.settings
        last_lag = last_reload = time.monotonic()
        while not self.stop.is_set():
            messages = self._poll(consumer)
            self.health.polled()
            good = [m for m in messages if self._usable(m)]
            if good:
                self._handle(good)
            now = time.monotonic()
            if now - last_reload >= settings.reload_seconds:
                self._maybe_reload()
                self._check_shadow()
                last_reload = now
            if now - last_lag >= _LAG_EVERY:
                self._report_lag()
                last_lag = now

    def _retry(self, call: Callable[[float], Any]) -> None:
        """A broker call with short timeouts until it succeeds; StoppedError if stopped first.

        While it waits the loop is alive: it is not stuck, it retries with short timeouts
        (readiness meanwhile is the broker prober's)."""
        if not kafka_io.retry(call, self.stop.is_set, waiting=self.health.polled):
            raise StoppedError("stopped while waiting for the broker")

    def _poll(self, consumer: Any) -> list[Message]:
        """Wait for the first row only, then take what has already arrived, up to a limit.

        A light stream is scored as it comes, never held back to fill a batch; under load the
        rows that arrived during the last batch form the next one, so batches grow with the
        load. The limit is ``max_batch``, and no more rows than the last batch's pace gets
        through in a quarter of ``max.poll.interval.ms``: however slow scoring becomes, the
        loop polls again in time and the member keeps its partitions.
        """
        limit = self.settings.max_batch
        if self._row_seconds > 0:
            budget = self.settings.max_poll_interval_ms / 4000
            limit = max(1, min(limit, int(budget / self._row_seconds)))
        first = consumer.consume(1, self.settings.poll_seconds)
        if not first or limit == 1:
            return first
        return first + consumer.consume(limit - 1, 0)

    def _usable(self, message: Message) -> bool:
        error = message.error()
        if error is None:
            return True
        if error.code() != KafkaError._PARTITION_EOF:
            log.warning("consumer error: %s", error)
        return False

    def _handle(self, messages: list[Message]) -> None:
        """One batch: process, publish and commit in one transaction (or at least once)."""
        assert self._consumer is not None and self._producer is not None
        started = time.monotonic()
        outcome = process(
            self.model,
            self.windows,
            messages,
            self.settings.max_row_bytes,
            int(time.time() * 1000),
            self.shadow,
        )
        try:
            self._publish(messages, outcome, self._due_checkpoints(outcome))
        except KafkaException as exc:
            # A batch that failed still measured the pace: the next, replayed from the
            # committed offsets, must fit the poll interval too (after a stall that cost
            # the partitions, an unbounded backlog batch would cost them again).
            self._row_seconds = (time.monotonic() - started) / len(messages)
            self._recover(exc)
            return
        self._row_seconds = (time.monotonic() - started) / len(messages)
        self._record(messages, outcome)
        self._evict({m.partition() or 0 for m in messages})

    def _due_checkpoints(self, outcome: BatchOutcome) -> list[tuple[int, Checkpoint]]:
        """The machines of this batch whose adaptive-threshold state is due to be written,
        with their episodes, as of their last row in it."""
        partitions = self.rebuilder.state_partitions() if outcome.machines else 0
        every = self.settings.checkpoint_minutes
        return self.model.decider.due(outcome.last_rows, every, partitions)

    def _publish(
        self,
        messages: list[Message],
        outcome: BatchOutcome,
        checkpoints: list[tuple[int, Checkpoint]],
    ) -> None:
        settings, producer, consumer = self.settings, self._producer, self._consumer
        assert producer is not None and consumer is not None
        offsets = kafka_io.next_offsets(messages)
        if settings.transactions:
            producer.begin_transaction()
        for index, reason, text in outcome.dead:
            message = messages[index]
            log.warning(
                "dead letter (%s) from %s[%s]@%s: %s",
                reason,
                message.topic(),
                message.partition(),
                message.offset(),
                text,
            )
            kafka_io.dead_letter(producer, settings.dlq_topic, message, reason, text)
        for alert in outcome.alerts:
            kafka_io.publish_alert(producer, settings.alerts_topic, alert)
        for partition, checkpoint in checkpoints:
            producer.produce(
                settings.state_topic,
                key=checkpoint.machine.encode(),
                value=encode_checkpoint(checkpoint),
                partition=partition,
            )
        if settings.transactions:
            group = consumer.consumer_group_metadata()
            # One request per partition, all in the one transaction: Kafka takes them as one
            # commit, and the embedded broker keeps only one partition of a request naming
            # several. The offsets are never committed outside the transaction.
            for tp in offsets:
                self._retry(functools.partial(_send_offsets, producer, [tp], group))
            self._retry(producer.commit_transaction)
        else:
            producer.flush(_TIMEOUT)
            consumer.commit(offsets=offsets, asynchronous=False)
        for tp in offsets:
            self.committed[tp.partition] = tp.offset

    def _record(self, messages: list[Message], outcome: BatchOutcome) -> None:
        metrics, now = self.metrics, time.time()
        metrics.rows_consumed.inc(len(messages))
        metrics.rows_scored.inc(len(outcome.scored))
        for kind, count in outcome.unscored.items():
            metrics.rows_unscored.labels(kind).inc(count)
        for _, reason, _ in outcome.dead:
            metrics.rows_dead_lettered.labels(reason).inc()
        for alert in outcome.alerts:
            metrics.alerts.labels(alert["status"]).inc()
            if self.on_alert is not None:
                self.on_alert(alert)
            else:  # one line per episode change, as the operators read it on the topic
                log.info("%s", describe(alert))
        if len(outcome.scored):
            metrics.batch_size.observe(len(outcome.scored))
            metrics.batch_seconds.observe(outcome.seconds)
            observe_many(metrics.reconstruction_error, outcome.scores)
            metrics.threshold.set(float(np.median(outcome.thresholds)))
            stamps = np.array([messages[i].timestamp() for i in outcome.scored], np.float64)
            known = stamps[(stamps[:, 0] != 0) & (stamps[:, 1] > 0), 1]
            observe_many(metrics.latency, np.maximum(0.0, now - known / 1000))
        metrics.count_breaks(outcome.breaks)
        if outcome.shadow is not None:
            metrics.shadow.record(outcome.shadow)
        metrics.machines.set(len(self.windows))
        metrics.warming.set(self.windows.warming())

    def _client_error(self, error: KafkaError) -> None:
        """The clients' client-wide errors, served by their polls; librdkafka reconnects."""
        client_error(self.health, _broker_log, error)

    def _delivery_failed(self) -> None:
        log.error("a record was not delivered; the transaction will not commit")

    def _recover(self, exc: KafkaException) -> None:
        """A transaction failed: abort it, rewind to the committed offsets, rebuild windows."""
        assert self._producer is not None and self._consumer is not None
        error = exc.args[0] if exc.args else None
        if error is not None and hasattr(error, "fatal") and error.fatal():
            raise exc
        log.error("transaction failed (%s); aborting and rewinding to committed offsets", exc)
        consumer = self._consumer
        self._retry(self._producer.abort_transaction)
        partitions = [TopicPartition(self.settings.topic, p) for p in self.assigned]
        committed: list[TopicPartition] = []
        self._retry(lambda t: committed.extend(consumer.committed(partitions, t)))
        self.windows = self._new_windows()
        self._sync_decisions()
        for tp in committed:
            offset = max(tp.offset, 0)
            self._rebuild(tp.partition, offset)
            consumer.seek(TopicPartition(self.settings.topic, tp.partition, offset))

    # Rebalances: windows move with partitions ------------------------------------------

    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self.metrics.rebalances.labels("assigned").inc()
        self.health.joined()
        committed = consumer.committed(partitions, _TIMEOUT)
        for tp in committed:
            start = max(tp.offset, 0)
            log.debug("partition %d: committed offset %d", tp.partition, tp.offset)
            kept = tp.partition in self._stale and self.committed.get(tp.partition) == start
            if not kept:
                self.windows.drop_partitions({tp.partition})
                self._sync_decisions()
                self._rebuild(tp.partition, start)
            self.assigned.add(tp.partition)
            if tp.offset >= 0:
                self.committed[tp.partition] = tp.offset
            self._stale.discard(tp.partition)
        self.windows.drop_partitions(self._stale)
        self._sync_decisions()
        self._stale.clear()
        log.info(
            "%s: assigned partitions %s",
            self.settings.instance_id,
            sorted(tp.partition for tp in partitions),
        )

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        # Keep the windows until the next assignment: if the same partitions come back at
        # the offsets this member committed, nothing needs rebuilding.
        self.metrics.rebalances.labels("revoked").inc()
        for tp in partitions:
            self.assigned.discard(tp.partition)
            self._stale.add(tp.partition)
            # Another member reports this partition's lag now; a stale value would mislead.
            with contextlib.suppress(KeyError):
                self.metrics.lag.remove(str(tp.partition))
        log.info(
            "%s: revoked partitions %s",
            self.settings.instance_id,
            sorted(tp.partition for tp in partitions),
        )

    def _rebuild(self, partition: int, end: int) -> None:
        self.rebuilder.rebuild(self.windows, self.model, self.shadow, partition, end)

    # Housekeeping -------------------------------------------------------------------

    def _maybe_reload(self) -> None:
        """Swap to the registry's current bundle between batches; refuse a bad one."""
        try:
            version = self.registry.current()
        except OSError as exc:
            log.warning("cannot read the registry pointer: %s", exc)
            return
        if version is None or version == self.model.bundle.version or version in self.refused:
            return
        try:
            model = Model.load(
                self.registry.root / version, expected_features=self.model.bundle.spec.feature_names
            )
        except BundleError as exc:
            self.refused.add(version)
            self.metrics.model_reloads.labels("refused").inc()
            log.error("refused model %s, keeping %s: %s", version, self.model.bundle.version, exc)
            return
        old, new = self.model.bundle, model.bundle
        rebuild = (new.lookback, new.history) != (old.lookback, old.history)
        model.decider.carry_episodes(self.model.decider)
        self.model = model
        self.windows.resumed.clear()
        self.metrics.model_reloads.labels("loaded").inc()
        self.metrics.use_model(model.bundle.version, model.bundle.threshold)
        log.info("now using model %s (%s)", version, _threshold_text(model))
        self._check_shadow()  # before any replay: a candidate may not fit the new model
        if rebuild and self._consumer is not None:
            self.windows = self._new_windows()
            self._sync_decisions()
            for partition in sorted(self.assigned):
                self._rebuild(partition, self.committed.get(partition, 0))

    def _report_lag(self) -> None:
        consumer = self._consumer
        if consumer is None or not self.assigned:
            return
        for partition in self.assigned:
            tp = TopicPartition(self.settings.topic, partition)
            try:
                _, high = consumer.get_watermark_offsets(tp, timeout=1.0, cached=False)
            except KafkaException:
                continue
            position = self.committed.get(partition, 0)
            self.metrics.lag.labels(str(partition)).set(max(0, high - position))

    def _evict(self, partitions: set[int]) -> None:
        """Forget the machines of these partitions that their partition's rows left idle."""
        gone = self.windows.evict_idle(partitions)
        if gone:
            self._sync_decisions()
            self.metrics.machines.set(len(self.windows))
            log.info("forgot %d idle machines", gone)

    # The shadow candidate -------------------------------------------------------------

    def _check_shadow(self) -> None:
        """Follow the candidate folder; its metrics show the one version being scored."""
        source = self.shadow_source
        if source is None:
            return
        result = source.check(self.model.bundle)
        if result in (LOADED, REFUSED):
            self.metrics.shadow.loads.labels(result).inc()
        active = source.active(self.model.bundle.version)
        if active is self.shadow:
            return
        if active is None and source.shadow is not None:
            log.info(
                "candidate %s is the serving model: not scored in shadow", source.shadow.version
            )
        self.shadow = active
        if active is None:
            self.metrics.shadow.use(None)
            return
        active.decider.clear()  # it may have sat out while it was the serving model
        self.metrics.shadow.use(active.version, active.bundle.threshold)

    def _sync_decisions(self) -> None:
        """The deciders forget the machines the windows forgot (revoked, evicted, rebuilt)."""
        self.model.decider.keep(self.windows.machines)
        if self.shadow is not None:
            self.shadow.decider.keep(self.windows.machines)


def _threshold_text(model: Model) -> str:
    bundle = model.bundle
    if bundle.calibration is None:
        return f"threshold {bundle.threshold:.5g}"
    return (
        f"adaptive threshold per machine at rate {bundle.calibration.rate:g} over "
        f"{bundle.calibration.minutes:g} minutes, fallback {bundle.threshold:.5g}"
    )


def _send_offsets(producer: Any, offsets: list[TopicPartition], group: Any, timeout: float) -> None:
    producer.send_offsets_to_transaction(offsets, group, timeout)
