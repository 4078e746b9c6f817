"""The streamer's one settings object, built once by the command line and passed down."""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

SECRET_WORDS = ("password", "secret", "key", "token", "jaas", "credential")


def is_secret(name: str) -> bool:
    """Whether a librdkafka property holds a credential (never logged or shown)."""
    lowered = name.lower()
    return any(word in lowered for word in SECRET_WORDS)


@dataclass(frozen=True)
class KafkaSettings:
    """Where the cluster is and how to talk to it; ``extra`` passes through to librdkafka."""

    bootstrap_servers: str
    extra: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def client_config(self) -> dict[str, Any]:
        """The librdkafka properties shared by every client."""
        return {"bootstrap.servers": self.bootstrap_servers, **self.extra}

    def __repr__(self) -> str:
        shown = {k: ("***" if is_secret(k) else v) for k, v in self.extra.items()}
        return f"KafkaSettings(bootstrap_servers={self.bootstrap_servers!r}, extra={shown})"


@dataclass(frozen=True)
class StreamerSettings:
    """Everything ``streamer run`` needs."""

    kafka: KafkaSettings
    registry: Path
    topic: str = "sensors"
    alerts_topic: str = "breaks"
    dlq_topic: str = "sensors.dlq"
    state_topic: str = "sensors.state"
    checkpoint_minutes: float = 30.0
    group_id: str = "sheetbreak-streamer"
    instance_id: str = field(default_factory=socket.gethostname)
    transactions: bool = True
    max_batch: int = 5000
    poll_seconds: float = 0.05
    max_row_bytes: int = 65_536
    carry_minutes: float | None = None
    min_sensor_share: float = 0.5
    replay_minutes: float = 60.0
    reload_seconds: float = 5.0
    idle_minutes: float = 24 * 60.0
    shadow: Path | None = None
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = 9108
    max_poll_interval_ms: int = 300_000
    session_timeout_ms: int = 10_000
