"""Kafka for the integration tests, in the DESIGN order (``broker_choice``):

1. ``KAFKA_BOOTSTRAP_SERVERS`` names a running Kafka cluster: use it as it is.
2. Else, where a Docker engine answers, a KRaft Kafka container through testcontainers.
3. Else, where ``java`` and ``mvn`` exist, the local Apache Kafka (``kind="kafka"``).
4. Else the embedded Tansu broker from ``streamer.broker``.

``SHEETBREAK_TEST_BROKER=tansu|kafka`` picks one of the last two outright. Tests that
depend on behaviour Tansu lacks ask for the fixtures below that mark them as expected
failures there (strictly, so a fixed broker is noticed).
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from broker_choice import KAFKA_IMAGE, choose_broker, has_java_and_maven

from streamer.broker import EmbeddedBroker


@dataclass(frozen=True)
class KafkaUnderTest:
    """The broker the integration tests run against, and what it can be trusted with.

    ``own_kind`` is the kind of ``EmbeddedBroker`` a test starts when it needs a broker of
    its own (the outage test routes one through a proxy): the session's kind where it is
    local, else the local Apache Kafka where it can run, else Tansu.
    """

    bootstrap_servers: str
    source: str
    hides_aborted_transactions: bool
    exact_high_watermark: bool
    own_kind: str


def _kafka_container() -> Any:
    """A single-node KRaft Kafka container that also supports transactions."""
    try:
        from testcontainers.community.kafka import KafkaContainer  # noqa: PLC0415
    except ImportError:  # testcontainers releases before the community split
        from testcontainers.kafka import KafkaContainer  # noqa: PLC0415

    return (
        KafkaContainer(KAFKA_IMAGE)
        .with_kraft()
        # One broker: the transaction log must not ask for three replicas.
        .with_env("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1")
        .with_env("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1")
    )


def _own_kind() -> str:
    """The local broker kind a test may start beside a given cluster or container."""
    return "kafka" if has_java_and_maven() else "tansu"


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[KafkaUnderTest]:
    """The session's broker, as ``choose_broker`` decided; torn down at the end."""
    choice = choose_broker()
    if choice.kind == "explicit":
        explicit = os.environ["KAFKA_BOOTSTRAP_SERVERS"].strip()
        yield KafkaUnderTest(explicit, "KAFKA_BOOTSTRAP_SERVERS", True, True, _own_kind())
    elif choice.kind == "container":
        container = _kafka_container()
        container.start()
        try:
            server = container.get_bootstrap_server()
            yield KafkaUnderTest(server, KAFKA_IMAGE, True, True, _own_kind())
        finally:
            container.stop()
    elif choice.kind == "kafka":
        with EmbeddedBroker("kafka") as broker:
            yield KafkaUnderTest(
                broker.bootstrap_servers, "local Apache Kafka", True, True, "kafka"
            )
    else:
        with EmbeddedBroker("tansu") as broker:
            yield KafkaUnderTest(broker.bootstrap_servers, "embedded tansu", False, False, "tansu")


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: KafkaUnderTest) -> str:
    """The session broker's ``bootstrap.servers``."""
    return kafka_broker.bootstrap_servers


def _expect_failure_unless(
    request: pytest.FixtureRequest, broker: KafkaUnderTest, capable: bool, lack: str
) -> str:
    """Mark the test a strict expected failure on a broker known to lack a behaviour."""
    if not capable:
        request.applymarker(
            pytest.mark.xfail(reason=f"{broker.source} {lack}", raises=AssertionError, strict=True)
        )
    return broker.bootstrap_servers


@pytest.fixture
def kafka_bootstrap_abort_isolated(
    request: pytest.FixtureRequest, kafka_broker: KafkaUnderTest
) -> str:
    """Bootstrap servers for a test that needs aborted transactions hidden from readers."""
    return _expect_failure_unless(
        request,
        kafka_broker,
        kafka_broker.hides_aborted_transactions,
        "delivers aborted transactional records to read_committed consumers",
    )


@pytest.fixture
def kafka_bootstrap_exact_watermark(
    request: pytest.FixtureRequest, kafka_broker: KafkaUnderTest
) -> str:
    """Bootstrap servers for a test that needs the high watermark to count every record."""
    return _expect_failure_unless(
        request,
        kafka_broker,
        kafka_broker.exact_high_watermark,
        "reports the last batch's base offset + 1 as the high watermark",
    )


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """A factory of topic and group names unique to this test: ``unique_name("sensors")``."""
    stem = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:60]
    token = uuid.uuid4().hex[:8]

    def make(prefix: str) -> str:
        """Return ``prefix-<test name>-<token>``, legal as a Kafka topic or group name."""
        return f"{prefix}-{stem}-{token}"

    return make
