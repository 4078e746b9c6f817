"""``python -m streamer``: run the detector, simulate a plant, run the demo or a local broker."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType, MappingProxyType
from typing import Any

from streamer.cliutil import EnvFlags, start
from streamer.errors import ConfigError, SheetBreakError
from streamer.settings import KafkaSettings, StreamerSettings

log = logging.getLogger("streamer")
ENV_PREFIX = "STREAMER_"
TOPIC_PARTITIONS = {"sensors": 4, "breaks": 1, "sensors.dlq": 1}
_SECURITY_FLAGS = {
    "--security-protocol": "security.protocol",
    "--sasl-mechanism": "sasl.mechanisms",
    "--sasl-username": "sasl.username",
    "--sasl-password": "sasl.password",
    "--ssl-ca-location": "ssl.ca.location",
}


def build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    """The CLI; every flag also reads ``STREAMER_<FLAG>`` from the environment."""
    parser = argparse.ArgumentParser(
        prog="python -m streamer",
        description="Warn paper-machine operators of sheet breaks minutes ahead, from sensor "
        "rows on Kafka.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser(
        "run", help="consume sensor rows, publish alerts (a long-running consumer-group member)"
    )
    _kafka_flags(EnvFlags(run, environ, ENV_PREFIX), required=True)
    _stream_flags(EnvFlags(run, environ, ENV_PREFIX))
    sim = commands.add_parser("simulate", help="produce simulated (or replayed) plant rows")
    _kafka_flags(EnvFlags(sim, environ, ENV_PREFIX), required=True)
    _simulate_flags(EnvFlags(sim, environ, ENV_PREFIX))
    demo = commands.add_parser(
        "demo",
        help="embedded broker, a model, a simulated plant and "
        "the streamer, all in one; prints alerts and a summary",
    )
    flags = EnvFlags(demo, environ, ENV_PREFIX)
    _kafka_flags(flags, required=False)
    flags.add("--registry", type=Path, default=Path("registry"), help="model registry folder")
    flags.add(
        "--duration",
        type=float,
        default=60.0,
        help="stop after this many seconds (0: until Ctrl-C)",
    )
    flags.add("--machines", type=int, default=4, help="simulated machines")
    flags.add("--rate", type=float, default=40.0, help="rows per second across machines")
    flags.add("--seed", type=int, default=7, help="simulator seed")
    flags.add("--epochs", type=int, default=40, help="epochs when a model must be trained")
    flags.add("--metrics-port", type=int, default=9108, help="port of /metrics (0: none)")
    flags.add("--metrics-host", default="127.0.0.1", help="address of /metrics")
    broker = commands.add_parser(
        "broker",
        help="run a local broker in the foreground (prints its bootstrap address first)",
    )
    broker_flags = EnvFlags(broker, environ, ENV_PREFIX)
    broker_flags.add("--port", type=int, help="listen port (default: a free one)")
    broker_flags.add(
        "--kind",
        choices=("tansu", "kafka"),  # streamer.broker.KINDS, without importing a client
        default="tansu",
        help="tansu: the embedded Tansu, zero setup; kafka: a local Apache Kafka (KRaft, one "
        "node), which needs java and mvn and resolves its jars with Maven on its first start",
    )
    archive = commands.add_parser(
        "archive",
        help="write sensor rows to Parquet files by day, exactly once (a consumer-group member)",
    )
    _kafka_flags(EnvFlags(archive, environ, ENV_PREFIX), required=True)
    _archive_flags(EnvFlags(archive, environ, ENV_PREFIX))
    return parser


def _kafka_flags(flags: EnvFlags, required: bool) -> None:
    flags.add(
        "--bootstrap-servers",
        help="Kafka bootstrap servers, host:port[,host:port]"
        + ("" if required else " (default: start the embedded broker)"),
    )
    flags.add("--security-protocol", help="librdkafka security.protocol (SASL_SSL, SSL, ...)")
    flags.add("--sasl-mechanism", help="librdkafka sasl.mechanisms (PLAIN, SCRAM-SHA-512, ...)")
    flags.add("--sasl-username", help="librdkafka sasl.username")
    flags.add("--sasl-password", secret=True, help="librdkafka sasl.password (never logged)")
    flags.add("--ssl-ca-location", help="librdkafka ssl.ca.location")
    flags.add(
        "--kafka-config",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        secret=True,  # it may carry credentials (ssl.key.password=...)
        help="any other librdkafka property, passed through",
    )


def _stream_flags(flags: EnvFlags) -> None:
    flags.add("--registry", type=Path, default=Path("registry"), help="model registry folder")
    flags.add("--topic", default="sensors", help="sensor rows topic")
    flags.add("--alerts-topic", default="breaks", help="alerts topic")
    flags.add("--dlq-topic", default="sensors.dlq", help="dead-letter topic")
    flags.add(
        "--state-topic",
        default="sensors.state",
        help="compacted topic of each machine's adaptive-threshold state (created with the "
        "rows topic's partitions if missing), so a rebuilt streamer resumes it exactly",
    )
    flags.add(
        "--checkpoint-minutes",
        type=float,
        default=30.0,
        help="write a machine's adaptive-threshold state after this many minutes of its rows",
    )
    flags.add("--group-id", default="sheetbreak-streamer", help="consumer group")
    flags.add(
        "--instance-id",
        help="stable name of this replica, part of its transactional id (default: the host name)",
    )
    flags.add(
        "--no-transactions",
        action="store_true",
        help="at-least-once instead of exactly-once; consumers deduplicate by alert_id",
    )
    flags.add("--max-batch", type=int, default=5000, help="most rows per poll and model call")
    flags.add(
        "--max-row-bytes", type=int, default=65536, help="larger rows are dead-lettered unparsed"
    )
    flags.add(
        "--carry-minutes",
        type=float,
        help="carry a missing sensor's last value this long (default: the bundle's gap limit)",
    )
    flags.add(
        "--replay-minutes",
        type=float,
        default=60.0,
        help="rows read back to rebuild windows on assignment",
    )
    flags.add(
        "--reload-seconds",
        type=float,
        default=5.0,
        help="how often the registry pointer is checked",
    )
    flags.add("--idle-minutes", type=float, default=1440.0, help="forget machines silent this long")
    flags.add(
        "--shadow",
        type=Path,
        help="a candidate bundle folder scored beside the current model, publishing nothing: "
        "its alerts, errors and breaks warned go to metrics labelled by model_version; "
        "checked for a new bundle as often as the registry",
    )
    _service_flags(flags, metrics_port=9108)


def _archive_flags(flags: EnvFlags) -> None:
    flags.add("--out", help="archive root: a folder, or a URI (s3://bucket/path)")
    flags.add("--topic", default="sensors", help="sensor rows topic")
    flags.add("--group", default="sheetbreak-archiver", help="consumer group of the archivers")
    flags.add("--flush-rows", type=int, default=200_000, help="flush after this many rows")
    flags.add("--flush-seconds", type=float, default=60.0, help="flush rows at most this old")
    flags.add("--max-row-bytes", type=int, default=65536, help="larger rows are not archived")
    flags.add(
        "--compression",
        default="zstd",
        choices=("zstd", "snappy", "gzip", "lz4", "none"),
        help="Parquet codec",
    )
    _service_flags(flags, metrics_port=9109)


def _service_flags(flags: EnvFlags, metrics_port: int) -> None:
    """Flags every long-running group member has: its /metrics address and session timeout."""
    flags.add("--metrics-port", type=int, default=metrics_port, help="port of /metrics (0: none)")
    flags.add(
        "--metrics-host",
        default="127.0.0.1",
        help="address of /metrics (0.0.0.0 inside a container)",
    )
    flags.add(
        "--session-timeout-ms", type=int, default=10000, help="consumer group session timeout"
    )


def _simulate_flags(flags: EnvFlags) -> None:
    flags.add("--topic", default="sensors", help="topic to produce to")
    flags.add("--machines", type=int, default=4, help="simulated machines")
    flags.add("--rate", type=float, default=100.0, help="rows per second (0: as fast as possible)")
    flags.add("--rows", type=int, help="stop after this many rows (default: run until interrupted)")
    flags.add("--seed", type=int, default=0, help="simulator seed")
    flags.add("--start", help="simulated time of the first row, RFC 3339 (default: now)")
    flags.add("--replay", type=Path, help="replay a labelled CSV instead of simulating")
    flags.add(
        "--machine-id",
        default="PM-1",
        help="machine id for a replayed CSV without a machine_id column",
    )
    flags.add("--time-format", help="strptime format of the replayed CSV's time column")
    flags.add(
        "--speedup",
        type=float,
        help="pace rows by their own timestamps, this many "
        "times faster than real time (instead of --rate)",
    )


def kafka_settings(args: argparse.Namespace, bootstrap: str | None = None) -> KafkaSettings:
    """Bootstrap servers and the librdkafka pass-through (security included)."""
    extra: dict[str, str] = {}
    for number, item in enumerate(args.kafka_config, start=1):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            # The item is not echoed: a mistyped one may well hold a password.
            raise ConfigError(f"--kafka-config takes KEY=VALUE; item {number} is not of that form")
        extra[key.strip()] = value
    for flag, key in _SECURITY_FLAGS.items():
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if value:
            extra[key] = value
    servers = bootstrap or args.bootstrap_servers
    if not servers:
        raise ConfigError("give --bootstrap-servers (or STREAMER_BOOTSTRAP_SERVERS)")
    return KafkaSettings(servers, MappingProxyType(extra))


def streamer_settings(args: argparse.Namespace, kafka: KafkaSettings) -> StreamerSettings:
    """The run command's settings object."""
    optional: dict[str, Any] = {"instance_id": args.instance_id} if args.instance_id else {}
    return StreamerSettings(
        kafka=kafka,
        registry=args.registry,
        topic=args.topic,
        alerts_topic=args.alerts_topic,
        dlq_topic=args.dlq_topic,
        state_topic=args.state_topic,
        checkpoint_minutes=args.checkpoint_minutes,
        group_id=args.group_id,
        transactions=not args.no_transactions,
        max_batch=args.max_batch,
        max_row_bytes=args.max_row_bytes,
        carry_minutes=args.carry_minutes,
        replay_minutes=args.replay_minutes,
        reload_seconds=args.reload_seconds,
        idle_minutes=args.idle_minutes,
        shadow=args.shadow,
        metrics_host=args.metrics_host,
        metrics_port=args.metrics_port or None,
        session_timeout_ms=args.session_timeout_ms,
        **optional,
    )


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or Ctrl-C; the loops check it between batches."""
    stop = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: stopping after the current batch", signum)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


def serve_metrics(host: str, port: int | None, registry: Any, health: Any = None) -> Any:
    """Start /metrics (and /healthz, /readyz given ``health``) on ``host:port``; None if no port."""
    if not port:
        return None
    from streamer.health import HealthServer  # noqa: PLC0415

    server = HealthServer(host, port, registry, health)
    log.info("metrics at http://%s:%d/metrics, probes at /healthz and /readyz", host, port)
    return server


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Entry point; returns the exit code."""
    args = start(build_parser, argv, environ)
    try:
        return {
            "run": _run,
            "simulate": _simulate,
            "demo": _demo,
            "broker": _broker,
            "archive": _archive,
        }[args.command](args)
    except SheetBreakError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    from prometheus_client import CollectorRegistry  # noqa: PLC0415

    from streamer.metrics import StreamerMetrics  # noqa: PLC0415
    from streamer.runner import Streamer  # noqa: PLC0415

    settings = streamer_settings(args, kafka_settings(args))
    log.info("settings: %r", settings)
    registry = CollectorRegistry()
    stop = stop_on_signals()
    streamer = Streamer(settings, StreamerMetrics(registry), stop)
    server = serve_metrics(settings.metrics_host, settings.metrics_port, registry, streamer.health)
    try:
        streamer.run()
    finally:
        if server is not None:
            server.shutdown()
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from confluent_kafka import Producer  # noqa: PLC0415

    from streamer.produce import produce, replay_rows  # noqa: PLC0415
    from streamer.simulate import PlantParams, iter_rows  # noqa: PLC0415

    kafka = kafka_settings(args)
    stop = stop_on_signals()
    if args.replay is not None:
        if not args.replay.is_file():
            raise ConfigError(f"{args.replay}: no such file")
        rows = replay_rows(args.replay, args.machine_id, time_format=args.time_format)
    else:
        start = args.start or time.strftime("%Y-%m-%dT%H:%M:00Z", time.gmtime())
        rows = iter_rows(PlantParams.load(), machines=args.machines, seed=args.seed, start=start)
    producer = Producer({**kafka.client_config(), "linger.ms": 5})
    sent = produce(producer, args.topic, rows, args.rate, args.rows, stop, speedup=args.speedup)
    print(f"produced {sent} rows to {args.topic}", flush=True)
    return 0


def _broker(args: argparse.Namespace) -> int:
    from streamer.broker import EmbeddedBroker  # noqa: PLC0415

    stop = stop_on_signals()
    with EmbeddedBroker(kind=args.kind, port=args.port) as broker:
        print(broker.bootstrap_servers, flush=True)
        broker.create_topics(TOPIC_PARTITIONS)
        log.info("topics %s created; Ctrl-C stops the broker", ", ".join(TOPIC_PARTITIONS))
        while not stop.wait(0.5):
            if not broker.running:
                print("error: the broker exited on its own", file=sys.stderr)
                return 1
    return 0


def _archive(args: argparse.Namespace) -> int:
    from prometheus_client import CollectorRegistry  # noqa: PLC0415

    from streamer.archive import Archiver  # noqa: PLC0415
    from streamer.archive_metrics import ArchiveMetrics  # noqa: PLC0415
    from streamer.archive_settings import archive_settings  # noqa: PLC0415

    settings = archive_settings(args, kafka_settings(args))
    log.info("settings: %r", settings)
    registry = CollectorRegistry()
    archiver = Archiver(settings, ArchiveMetrics(registry), stop_on_signals())
    server = serve_metrics(settings.metrics_host, settings.metrics_port, registry, archiver.health)
    try:
        archiver.run()
    finally:
        if server is not None:
            server.shutdown()
    return 0


def _demo(args: argparse.Namespace) -> int:
    from streamer.demo import run_demo  # noqa: PLC0415

    return run_demo(args, kafka_settings, stop_on_signals(), serve_metrics)
