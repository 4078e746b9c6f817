"""An in-memory stand-in for a Kafka cluster and the three clients the runner builds.

Enough of confluent-kafka's surface for the consume loop: a group member that is handed
its partitions on its first poll, transactions that publish records and offsets together,
a reader outside the group with end-of-partition events, and topic creation. ``up``
switches the broker off and on.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from streamer.kafka_io import KafkaClients


@dataclass
class Record:
    """A stored record, with the accessors of a confluent-kafka Message."""

    topic_name: str
    part: int
    position: int
    key_bytes: bytes | None
    payload: bytes | None
    fault: Any = None

    def topic(self) -> str:
        return self.topic_name

    def partition(self) -> int:
        return self.part

    def offset(self) -> int:
        return self.position

    def key(self) -> bytes | None:
        return self.key_bytes

    def value(self) -> bytes | None:
        return self.payload

    def error(self) -> Any:
        return self.fault

    def timestamp(self) -> tuple[int, int]:
        return (0, 0)  # not given: no latency is observed


def _down() -> KafkaException:
    return KafkaException(KafkaError(KafkaError._TRANSPORT, "broker down", retriable=True))


@dataclass
class Cluster:
    """Topics, committed group offsets and a log of the transactional calls."""

    topics: dict[str, list[list[Record]]] = field(default_factory=dict)
    committed: dict[tuple[str, int], int] = field(default_factory=dict)
    up: bool = True
    drop_at_commit: bool = False  # the next commit finds the broker gone (``up`` turns false)
    fence_at_commit: bool = False  # the next commit finds the member out of its group
    calls: list[tuple[str, Any]] = field(default_factory=list)
    reassign: list[list[int]] = field(default_factory=list)  # rebalances still to come
    lock: threading.Lock = field(default_factory=threading.Lock)

    def create(self, name: str, partitions: int) -> None:
        self.topics.setdefault(name, [[] for _ in range(partitions)])

    def append(self, topic: str, partition: int, key: bytes | None, value: bytes | None) -> None:
        with self.lock:
            log = self.topics[topic][partition]
            log.append(Record(topic, partition, len(log), key, value))

    def ends(self, topic: str) -> dict[int, int]:
        return {p: len(log) for p, log in enumerate(self.topics[topic])}

    def check(self) -> None:
        if not self.up:
            raise _down()

    def clients(self) -> KafkaClients:
        return KafkaClients(
            consumer=lambda config: FakeConsumer(self, config),
            producer=lambda config: FakeProducer(self, config),
            admin=lambda config: FakeAdmin(self),
        )

    def metadata(self, topic: str | None) -> SimpleNamespace:
        self.check()
        names = [topic] if topic is not None else list(self.topics)
        found = {
            n: SimpleNamespace(partitions=dict.fromkeys(range(len(self.topics[n]))), error=None)
            for n in names
            if n in self.topics
        }
        return SimpleNamespace(topics=found)


class FakeConsumer:
    """A group member (after ``subscribe``) or a reader (after ``assign``)."""

    def __init__(self, cluster: Cluster, config: dict[str, Any]) -> None:
        self.cluster, self.config = cluster, config
        self.group = config["group.id"]
        self.eof = bool(config.get("enable.partition.eof"))
        self.topic: str | None = None
        self.callbacks: dict[str, Any] = {}
        self.positions: dict[tuple[str, int], int] = {}
        self.joined = False
        self.closed = False

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> SimpleNamespace:
        return self.cluster.metadata(topic)

    def subscribe(self, topics: list[str], **callbacks: Any) -> None:
        self.topic, self.callbacks = topics[0], callbacks

    def _join(self, partitions: list[int]) -> None:
        assert self.topic is not None
        if self.joined:
            revoked = [TopicPartition(self.topic, p) for _, p in self.positions]
            self.callbacks["on_revoke"](self, revoked)
        given = [TopicPartition(self.topic, p) for p in partitions]
        self.callbacks["on_assign"](self, given)
        self.positions = {
            (self.topic, tp.partition): max(0, tp.offset) for tp in self.committed(given)
        }
        self.joined = True

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Record]:
        self.cluster.check()
        if self.topic is not None and (not self.joined or self.cluster.reassign):
            partitions = self.cluster.reassign.pop(0) if self.cluster.reassign else None
            self._join(partitions or list(range(len(self.cluster.topics[self.topic]))))
        out: list[Record] = []
        for (topic, partition), position in list(self.positions.items()):
            log = self.cluster.topics[topic][partition]
            taken = log[position : position + num_messages - len(out)]
            out.extend(taken)
            self.positions[topic, partition] = position + len(taken)
            if self.eof and position + len(taken) >= len(log) and len(out) < num_messages:
                eof = KafkaError(KafkaError._PARTITION_EOF)
                out.append(Record(topic, partition, len(log), None, None, eof))
        if not out:
            threading.Event().wait(min(timeout, 0.01) if timeout > 0 else 0)
        return out

    def poll(self, timeout: float = -1) -> None:
        return None

    def committed(self, partitions: list[TopicPartition], timeout: float = -1) -> list[Any]:
        self.cluster.check()
        return [
            TopicPartition(
                tp.topic, tp.partition, self.cluster.committed.get((tp.topic, tp.partition), -1001)
            )
            for tp in partitions
        ]

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.positions = {(tp.topic, tp.partition): tp.offset for tp in partitions}

    def unassign(self) -> None:
        self.positions = {}

    def seek(self, tp: TopicPartition) -> None:
        self.positions[tp.topic, tp.partition] = tp.offset

    def get_watermark_offsets(self, tp: TopicPartition, *args: Any, **kwargs: Any) -> tuple:
        self.cluster.check()
        return 0, len(self.cluster.topics[tp.topic][tp.partition])

    def consumer_group_metadata(self) -> str:
        return self.group

    def commit(self, *args: Any, **kwargs: Any) -> None:
        self.cluster.calls.append(("commit outside a transaction", kwargs.get("offsets")))

    def close(self) -> None:
        self.closed = True


class FakeProducer:
    """A transactional producer: records and offsets become visible at commit, together."""

    def __init__(self, cluster: Cluster, config: dict[str, Any]) -> None:
        self.cluster, self.config = cluster, config
        self.pending: list[tuple[str, int, bytes | None, bytes | None]] = []
        self.offsets: list[tuple[str, TopicPartition]] = []

    def init_transactions(self, timeout: float) -> None:
        if not self.cluster.up:
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "timed out", retriable=True))
        self.cluster.calls.append(("init", None))

    def begin_transaction(self) -> None:
        self.pending, self.offsets = [], []
        self.cluster.calls.append(("begin", None))

    def produce(self, topic: str, key: Any = None, value: Any = None, **kwargs: Any) -> None:
        self.pending.append((topic, kwargs.get("partition") or 0, key, value))

    def send_offsets_to_transaction(self, offsets: list, group: str, timeout: float) -> None:
        self.cluster.check()
        self.offsets.extend((group, tp) for tp in offsets)
        self.cluster.calls.append(("offsets", [(tp.partition, tp.offset) for tp in offsets]))

    def commit_transaction(self, timeout: float) -> None:
        if self.cluster.drop_at_commit:
            self.cluster.drop_at_commit, self.cluster.up = False, False
        if self.cluster.fence_at_commit:
            self.cluster.fence_at_commit = False
            raise KafkaException(KafkaError(KafkaError.UNKNOWN_MEMBER_ID, "unknown member"))
        self.cluster.check()
        for topic, partition, key, value in self.pending:
            self.cluster.append(topic, partition, key, value)
        for _, tp in self.offsets:
            self.cluster.committed[tp.topic, tp.partition] = tp.offset
        self.cluster.calls.append(("commit", len(self.pending)))

    def abort_transaction(self, timeout: float) -> None:
        self.cluster.calls.append(("abort", None))

    def flush(self, timeout: float = -1) -> int:
        return 0

    def poll(self, timeout: float = -1) -> int:
        return 0


class FakeAdmin:
    """Topic creation."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def create_topics(self, topics: list[Any], **kwargs: Any) -> dict[str, Future]:
        out = {}
        for new in topics:
            self.cluster.create(new.topic, new.num_partitions)
            future: Future = Future()
            future.set_result(None)
            out[new.topic] = future
        return out

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> SimpleNamespace:
        return self.cluster.metadata(topic)
