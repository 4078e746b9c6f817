"""Which broker the integration tests run on, decided without starting anything.

The DESIGN order: an explicit ``KAFKA_BOOTSTRAP_SERVERS``; else a Kafka container where a
Docker engine answers; else the local Apache Kafka where ``java`` and ``mvn`` exist; else
the embedded Tansu. ``SHEETBREAK_TEST_BROKER=tansu|kafka`` overrides the order (CI runs
its Tansu smoke set so). The session fixture and pytest's header both ask this module.
"""

from __future__ import annotations

import functools
import gc
import os
import shutil
import warnings
from dataclasses import dataclass
from typing import Any

import pytest

OVERRIDE = "SHEETBREAK_TEST_BROKER"
OVERRIDES = ("tansu", "kafka")
KAFKA_IMAGE = "confluentinc/cp-kafka:7.6.1"
"""Pinned, KRaft-capable Kafka image for the testcontainers path."""

DOCKER_PING_TIMEOUT_S = 3


@dataclass(frozen=True)
class BrokerChoice:
    """A broker kind (``explicit``, ``container``, ``kafka``, ``tansu``) and why it won."""

    kind: str
    why: str

    def header(self) -> str:
        """One line for pytest's header."""
        names = {
            "explicit": "the cluster at KAFKA_BOOTSTRAP_SERVERS",
            "container": f"{KAFKA_IMAGE} through testcontainers",
            "kafka": "a local Apache Kafka (KRaft, one node)",
            "tansu": "the embedded Tansu",
        }
        return f"integration broker: {names[self.kind]} ({self.why})"


def has_java_and_maven() -> bool:
    """Whether the local Apache Kafka can be started here."""
    return shutil.which("java") is not None and shutil.which("mvn") is not None


@functools.cache
def choose_broker() -> BrokerChoice:
    """The session's broker, by the override or the DESIGN order; asked once per session."""
    override = os.environ.get(OVERRIDE, "").strip().lower()
    if override:
        if override not in OVERRIDES:
            raise pytest.UsageError(f"{OVERRIDE}={override!r}: expected one of {OVERRIDES}")
        return BrokerChoice(override, f"{OVERRIDE}={override}")
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip():
        return BrokerChoice("explicit", "KAFKA_BOOTSTRAP_SERVERS is set")
    if _docker_answers():
        return BrokerChoice("container", "a Docker engine answers")
    if has_java_and_maven():
        return BrokerChoice("kafka", "no Docker engine; java and mvn are on PATH")
    return BrokerChoice("tansu", "no Docker engine, and java or mvn is missing")


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
