"""The archiver's one settings object, built once by the command line and passed down."""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from typing import Any

from streamer.errors import ConfigError
from streamer.settings import KafkaSettings


@dataclass(frozen=True)
class ArchiveSettings:
    """Everything ``streamer archive`` needs."""

    kafka: KafkaSettings
    out: str
    topic: str = "sensors"
    group_id: str = "sheetbreak-archiver"
    flush_rows: int = 200_000
    flush_seconds: float = 60.0
    max_row_bytes: int = 65_536
    compression: str = "zstd"
    max_batch: int = 10_000
    poll_seconds: float = 0.5
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = 9109
    session_timeout_ms: int = 10_000

    def consumer_config(self) -> dict[str, Any]:
        """A group member that commits by hand, only after its files are on disk."""
        return {
            **self.kafka.client_config(),
            "logger": logging.getLogger("librdkafka"),
            "group.id": self.group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "session.timeout.ms": self.session_timeout_ms,
        }


def archive_settings(args: argparse.Namespace, kafka: KafkaSettings) -> ArchiveSettings:
    """The archive command's settings object, checked."""
    if not args.out:
        raise ConfigError("give --out (or STREAMER_OUT): the archive folder or URI")
    if args.flush_rows < 1 or args.flush_seconds <= 0:
        raise ConfigError("--flush-rows must be at least 1 and --flush-seconds above 0")
    return ArchiveSettings(
        kafka=kafka,
        out=str(args.out),
        topic=args.topic,
        group_id=args.group,
        flush_rows=args.flush_rows,
        flush_seconds=args.flush_seconds,
        max_row_bytes=args.max_row_bytes,
        compression=args.compression,
        metrics_host=args.metrics_host,
        metrics_port=args.metrics_port or None,
        session_timeout_ms=args.session_timeout_ms,
    )
