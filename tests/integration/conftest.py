"""Kafka for the integration tests, in the DESIGN order: explicit, container, embedded.

1. ``KAFKA_BOOTSTRAP_SERVERS`` names a running Kafka cluster: use it as it is.
2. Else, where a Docker engine answers, a KRaft Kafka container through testcontainers.
3. Else the embedded Tansu broker from ``streamer.broker``.

Tests that depend on behaviour the embedded broker lacks ask for the fixtures below that
mark them as expected failures there (strictly, so a fixed broker is noticed).
"""

from __future__ import annotations

import gc
import os
import re
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from streamer.broker import EmbeddedBroker

KAFKA_IMAGE = "confluentinc/cp-kafka:7.6.1"
"""Pinned, KRaft-capable Kafka image for the testcontainers path."""

DOCKER_PING_TIMEOUT_S = 3


@dataclass(frozen=True)
class KafkaUnderTest:
    """The broker the integration tests run against, and what it can be trusted with."""

    bootstrap_servers: str
    source: str
    hides_aborted_transactions: bool
    exact_high_watermark: bool


def _docker_answers() -> bool:
    """Tell whether a Docker engine answers a ping within a few seconds."""
    try:
        import docker  # noqa: PLC0415 - only needed when probing for a Docker engine
    except ImportError:
        return False
    # docker-py leaves its socket unclosed when no engine listens; collect it here, where
    # its ResourceWarning is expected, instead of letting it fail some later test.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            return _ping(docker)
        finally:
            gc.collect()


def _ping(docker: Any) -> bool:
    """Ping the engine the environment points at; any failure means no engine."""
    try:
        client = docker.from_env(timeout=DOCKER_PING_TIMEOUT_S)
    except Exception:
        return False
    try:
        return bool(client.ping())
    except Exception:
        return False
    finally:
        client.close()


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


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[KafkaUnderTest]:
    """The session's broker: explicit, else a container, else embedded; torn down at the end."""
    explicit = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    if explicit:
        yield KafkaUnderTest(explicit, "KAFKA_BOOTSTRAP_SERVERS", True, True)
        return
    if _docker_answers():
        container = _kafka_container()
        container.start()
        try:
            yield KafkaUnderTest(container.get_bootstrap_server(), KAFKA_IMAGE, True, True)
        finally:
            container.stop()
        return
    with EmbeddedBroker() as broker:
        yield KafkaUnderTest(broker.bootstrap_servers, "embedded tansu", False, False)


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
