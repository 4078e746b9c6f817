"""The thin Kafka layer: client configurations, dead letters and alert records."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeoutError
from dataclasses import dataclass
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from streamer.broker import BrokerError
from streamer.outage import throttle
from streamer.settings import StreamerSettings

log = logging.getLogger(__name__)


_CLIENT_LOG = logging.getLogger("librdkafka")


@dataclass(frozen=True)
class KafkaClients:
    """How the loop builds its clients, each from a configuration; tests pass fakes."""

    consumer: Callable[[dict[str, Any]], Any] = Consumer
    producer: Callable[[dict[str, Any]], Any] = Producer
    admin: Callable[[dict[str, Any]], Any] = AdminClient


def client_config(settings: StreamerSettings) -> dict[str, Any]:
    """Connection and security properties, with librdkafka's log lines sent to logging.

    A broker that is down makes every client log the same failed connection several times
    a second: the first of each kind is logged, then a count once per interval.
    """
    return {**settings.kafka.client_config(), "logger": throttle(_CLIENT_LOG)}


def consumer_config(settings: StreamerSettings) -> dict[str, Any]:
    """A group member that commits only through transactions (or explicitly)."""
    return {
        **client_config(settings),
        "group.id": settings.group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "max.poll.interval.ms": settings.max_poll_interval_ms,
        "session.timeout.ms": settings.session_timeout_ms,
    }


def producer_config(settings: StreamerSettings) -> dict[str, Any]:
    """Idempotent, and transactional when the settings ask for exactly-once."""
    config: dict[str, Any] = {
        # When every broker connection drops at once, librdkafka's default recovery
        # ("rebootstrap") retires the brokers it knew, and a later
        # send_offsets_to_transaction can wait forever for a retired group coordinator
        # (librdkafka issues #5511, #5456: its timeout is not applied there). Without
        # rebootstrap the producer reconnects to the same brokers and carries on.
        "metadata.recovery.strategy": "none",
        # A transaction begun right after the last one committed finds its coordinator
        # still writing that one's markers: Kafka answers CONCURRENT_TRANSACTIONS and the
        # client retries after retry.backoff.ms (KAFKA-5477). librdkafka's 100 ms default
        # made every batch on Kafka wait about 100 ms in send_offsets_to_transaction; at
        # 10 ms a back-to-back transaction costs 15 to 30 ms (measured on the local Kafka).
        # Other retries back off exponentially from it, up to retry.backoff.max.ms.
        "retry.backoff.ms": 10,
        **client_config(settings),
        "enable.idempotence": True,
        "linger.ms": 5,
        "compression.type": "lz4",
    }
    if settings.transactions:
        config["transactional.id"] = f"{settings.group_id}-{settings.instance_id}"
    return config


def reader_config(settings: StreamerSettings) -> dict[str, Any]:
    """A consumer outside the group, for reading a partition back (window rebuilds)."""
    return {
        **client_config(settings),
        "group.id": f"{settings.group_id}-replay",
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
        "enable.partition.eof": True,
    }


def reader(settings: StreamerSettings) -> Consumer:
    """The rebuild reader as a confluent-kafka consumer."""
    return Consumer(reader_config(settings))


def ensure_topic(admin: Any, name: str, partitions: int, timeout: float) -> int:
    """Create a compacted topic through ``admin`` unless it exists; returns its partitions."""
    new = NewTopic(name, partitions, 1, config={"cleanup.policy": "compact"})
    future = admin.create_topics([new], request_timeout=timeout)[name]
    try:
        error = future.exception(timeout=timeout)
    except FutureTimeoutError as exc:
        raise BrokerError(f"creating topic {name!r} took more than {timeout} s") from exc
    code = error.args[0] if error is not None and error.args else None
    if error is not None and not (
        isinstance(code, KafkaError) and code.code() == KafkaError.TOPIC_ALREADY_EXISTS
    ):
        raise BrokerError(f"could not create topic {name!r}: {error}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        topic = admin.list_topics(name, timeout=timeout).topics.get(name)
        if topic is not None and topic.error is None and topic.partitions:
            return len(topic.partitions)
        time.sleep(0.05)
    raise BrokerError(f"topic {name!r} is not in the metadata {timeout} s after its creation")


def retry(
    call: Callable[[float], Any],
    stopping: Callable[[], bool],
    step: float = 1.0,
    waiting: Callable[[], Any] | None = None,
) -> bool:
    """Call ``call(timeout)`` with short timeouts until it succeeds (True) or ``stopping()``
    turns true (False), so a broker out of reach never holds up a stop for long. Errors that
    a retry cannot mend are raised; ``waiting()``, if given, runs after each failed try."""
    while not stopping():
        try:
            call(step)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if not (isinstance(error, KafkaError) and error.retriable()):
                raise
            log.debug("retrying after %s", error)
            if waiting is not None:
                waiting()
            continue
        return True
    return False


def dead_letter(producer: Producer, topic: str, message: Message, reason: str, text: str) -> None:
    """Publish the row unchanged with headers naming why and where it came from."""
    headers: list[tuple[str, str | bytes | None]] = [
        ("dlq.reason", reason.encode()),
        ("dlq.message", text[:500].encode("utf-8", "replace")),
        ("dlq.source.topic", (message.topic() or "").encode()),
        ("dlq.source.partition", str(message.partition()).encode()),
        ("dlq.source.offset", str(message.offset()).encode()),
    ]
    producer.produce(topic, key=message.key(), value=message.value(), headers=headers)


def publish_alert(producer: Producer, topic: str, alert: dict[str, Any]) -> None:
    """Alerts are keyed by machine so one machine's episode stays in order."""
    producer.produce(
        topic,
        key=alert["machine_id"].encode(),
        value=orjson.dumps(alert),
        headers=[("alert_id", alert["alert_id"].encode())],
    )


def next_offsets(messages: list[Message]) -> list[TopicPartition]:
    """The offsets to commit after ``messages``: one past the last of each partition."""
    last: dict[tuple[str, int], int] = {}
    for message in messages:
        last[(message.topic() or "", message.partition() or 0)] = message.offset() or 0
    return [TopicPartition(t, p, o + 1) for (t, p), o in last.items()]


def on_delivery_error(counter: Callable[[], None]) -> Callable[[Any, Message], None]:
    """A delivery callback that logs and counts failures (successes are silent)."""

    def report(error: Any, message: Message) -> None:
        if error is not None:
            counter()
            log.error("delivery to %s failed: %s", message.topic(), error)

    return report
