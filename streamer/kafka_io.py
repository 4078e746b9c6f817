"""The thin Kafka layer: client configurations, dead letters and alert records."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import orjson
from confluent_kafka import Consumer, Message, Producer, TopicPartition

from streamer.broker import create_topics
from streamer.settings import StreamerSettings

log = logging.getLogger(__name__)


_CLIENT_LOG = logging.getLogger("librdkafka")


def client_config(settings: StreamerSettings) -> dict[str, Any]:
    """Connection and security properties, with librdkafka's log lines sent to logging."""
    return {**settings.kafka.client_config(), "logger": _CLIENT_LOG}


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
        **client_config(settings),
        "enable.idempotence": True,
        "linger.ms": 5,
        "compression.type": "lz4",
    }
    if settings.transactions:
        config["transactional.id"] = f"{settings.group_id}-{settings.instance_id}"
    return config


def reader(settings: StreamerSettings) -> Consumer:
    """A consumer outside the group, for reading a partition back (window rebuilds)."""
    return Consumer(
        {
            **client_config(settings),
            "group.id": f"{settings.group_id}-replay",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
        }
    )


def ensure_topic(settings: StreamerSettings, name: str, partitions: int, timeout: float) -> int:
    """Create a compacted topic unless it exists; returns its number of partitions."""
    created = create_topics(
        settings.kafka.bootstrap_servers,
        {name: partitions},
        timeout=timeout,
        config={"cleanup.policy": "compact"},
        client=client_config(settings),
    )
    return created[name]


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
