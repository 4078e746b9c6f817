"""Credentials reach librdkafka and nothing else; the HTTP endpoints bind where they are told
(loopback unless told otherwise); alerts carry the contract's fields and no more.

A sentinel password is given by flag and by environment variable, then looked for in every
place a user or an operator could see: ``--help``, settings reprs, log records (with
librdkafka's own debug output on, during a failing connection), error messages and
``/metrics``.
"""

from __future__ import annotations

import argparse
import logging
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from confluent_kafka import Consumer, KafkaException
from prometheus_client import CollectorRegistry, Counter
from tiny_bundle import SENSORS, save_model, write_version

from streamer import cli, kafka_io
from streamer.alerts import CONTRACT_FIELDS, TOP_SENSORS
from streamer.archive_settings import archive_settings
from streamer.bundle import Registry
from streamer.errors import ConfigError
from streamer.machines import DataQuality, MachineWindows
from streamer.pipeline import Model, process
from streamer.settings import StreamerSettings

pytestmark = pytest.mark.unit

SECRET = "Zq9-sentinel-pw-7Hk"
KEY_SECRET = "Vx4-sentinel-keypass-2Lm"
OAUTH_SECRET = "Pj6-sentinel-oauth-8Qw"
SECRETS = (SECRET, KEY_SECRET, OAUTH_SECRET)
ROOT = Path(__file__).resolve().parents[2]

DOCUMENTED = {"episode_started_at", "peak_score", "reason", "warning_window_minutes"}


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def leaks(text: str) -> list[str]:
    return [secret for secret in SECRETS if secret in text]


def security_flags(port: int) -> list[str]:
    return [
        "--bootstrap-servers",
        f"127.0.0.1:{port}",
        "--security-protocol",
        "SASL_PLAINTEXT",
        "--sasl-mechanism",
        "PLAIN",
        "--sasl-username",
        "plant-user",
    ]


ENVIRON = {
    "STREAMER_SASL_PASSWORD": SECRET,
    "STREAMER_KAFKA_CONFIG": f"ssl.key.password={KEY_SECRET} "
    f"sasl.oauthbearer.client.secret={OAUTH_SECRET} client.id=pm",
}


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


# Settings and client configurations -------------------------------------------------


def parsed(command: str, by_env: bool, extra: list[str] | None = None) -> argparse.Namespace:
    argv = [command, *security_flags(closed_port()), *(extra or [])]
    if not by_env:
        argv += ["--sasl-password", SECRET, "--kafka-config"]
        argv += [f"ssl.key.password={KEY_SECRET}", f"sasl.oauthbearer.client.secret={OAUTH_SECRET}"]
    return cli.build_parser(ENVIRON if by_env else {}).parse_args(argv)


def client_configs(monkeypatch: pytest.MonkeyPatch, by_env: bool) -> dict[str, dict[str, Any]]:
    """Every librdkafka configuration the project builds, by client."""
    run = parsed("run", by_env)
    settings = cli.streamer_settings(run, cli.kafka_settings(run))
    made: list[dict[str, Any]] = []

    class Recorder:
        def __init__(self, config: dict[str, Any]) -> None:
            made.append(config)

    monkeypatch.setattr(kafka_io, "Consumer", Recorder)
    kafka_io.reader(settings)
    archive = parsed("archive", by_env, ["--out", "/tmp/archive"])
    return {
        "consumer": kafka_io.consumer_config(settings),
        "producer": kafka_io.producer_config(settings),
        "reader": made[0],
        "archiver": archive_settings(archive, cli.kafka_settings(archive)).consumer_config(),
        "simulate": cli.kafka_settings(parsed("simulate", by_env)).client_config(),
        "demo": cli.kafka_settings(parsed("demo", by_env)).client_config(),
    }


@pytest.mark.parametrize("by_env", [False, True], ids=["flags", "environment"])
def test_security_settings_reach_every_client_and_no_repr(monkeypatch, by_env):
    configs = client_configs(monkeypatch, by_env)
    for client, config in configs.items():
        assert config["sasl.password"] == SECRET, client
        assert config["ssl.key.password"] == KEY_SECRET, client
        assert config["sasl.oauthbearer.client.secret"] == OAUTH_SECRET, client
        assert config["security.protocol"] == "SASL_PLAINTEXT", client
        assert config["sasl.username"] == "plant-user", client
    run = parsed("run", by_env)
    settings = cli.streamer_settings(run, cli.kafka_settings(run))
    archive = parsed("archive", by_env, ["--out", "/tmp/archive"])
    shown = [repr(settings), str(settings), repr(settings.kafka), str(settings.kafka)]
    shown.append(repr(archive_settings(archive, cli.kafka_settings(archive))))
    for text in shown:
        assert leaks(text) == [], text
        assert "plant-user" in text  # what is not a secret stays visible


def test_no_help_shows_a_secret_given_in_the_environment(capsys):
    parser = cli.build_parser(ENVIRON)
    pages = {"": parser.format_help()}
    pages.update({name: sub.format_help() for name, sub in subcommands(parser).items()})
    assert {"run", "simulate", "demo", "archive", "broker"} <= set(pages)
    for name, page in pages.items():
        assert leaks(page) == [], name
    assert "STREAMER_SASL_PASSWORD" in pages["run"] and "(set)" in pages["run"]
    for argv in (["--help"], ["run", "--help"], ["archive", "--help"]):
        with pytest.raises(SystemExit):
            parser.parse_args(argv)
    assert leaks(capsys.readouterr().out) == []


@pytest.mark.parametrize(
    "items",
    [
        [f"sasl.password:{SECRET}"],
        [f"sasl.password {SECRET}"],
        [f"={SECRET}"],
        ["client.id=pm", SECRET],
    ],
    ids=["colon", "space", "no-key", "bare-value"],
)
def test_a_mistyped_pass_through_is_refused_without_echoing_it(items, capsys):
    code = cli.main(["run", "--bootstrap-servers", "k:9092", "--kafka-config", *items], environ={})
    err = capsys.readouterr().err
    assert code == 2
    assert "KEY=VALUE" in err
    assert leaks(err) == []
    args = cli.build_parser({}).parse_args(
        ["run", "--bootstrap-servers", "k:1", "--kafka-config", *items]
    )
    with pytest.raises(ConfigError) as caught:
        cli.kafka_settings(args)
    assert leaks(str(caught.value)) == []


@pytest.mark.parametrize(
    "broken",
    [
        {"security.protocol": "SASL_BOGUS"},
        {"sasl.mechanisms": "NOT-A-MECHANISM"},
        {"security.protocol": "SASL_SSL", "ssl.key.location": "/nonexistent/key.pem"},
        {"no.such.property": SECRET[::-1]},
    ],
    ids=["protocol", "mechanism", "ssl-key", "unknown-property"],
)
def test_librdkafka_refusing_a_config_does_not_echo_the_password(monkeypatch, broken):
    config = {**client_configs(monkeypatch, by_env=False)["consumer"], **broken}
    with pytest.raises(KafkaException) as caught:
        Consumer(config)
    assert leaks(str(caught.value)) == []
    assert leaks(repr(caught.value.args)) == []


# A streamer run against a closed port: logs, errors and /metrics ----------------------


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("secrets")
    save_model(root / "model.keras", seed=0)
    registry = Registry(root / "registry")
    write_version(registry, "v1", root / "model.keras", 1.0)
    registry.set_current("v1")
    return registry.root


def fetch(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return reply.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.read().decode()


@pytest.mark.parametrize("by_env", [False, True], ids=["flags", "environment"])
def test_a_failing_sasl_connection_logs_no_secret(registry, monkeypatch, caplog, capfd, by_env):
    metrics_port = closed_port()
    stop = threading.Event()
    monkeypatch.setattr(cli, "stop_on_signals", lambda: stop)
    pages: dict[str, str] = {}

    def scrape_then_stop() -> None:
        time.sleep(3.0)  # a few reconnection rounds, with librdkafka debug logging on
        for path in ("/metrics", "/healthz", "/readyz"):
            pages[path] = fetch(f"http://127.0.0.1:{metrics_port}{path}")
        stop.set()

    argv = [
        "-v",
        "run",
        *security_flags(closed_port()),
        "--registry",
        str(registry),
        "--no-transactions",
        "--metrics-port",
        str(metrics_port),
        "--group-id",
        f"secrets-{by_env}",
        "--kafka-config",
        "debug=conf,security,broker,protocol",
    ]
    environ = dict(ENVIRON)
    if not by_env:
        argv += [f"ssl.key.password={KEY_SECRET}", f"sasl.oauthbearer.client.secret={OAUTH_SECRET}"]
        argv += ["--sasl-password", SECRET]
        environ = {}
    else:
        # The environment's pass-through is replaced by the flag's; keep its secrets in it.
        argv += [f"ssl.key.password={KEY_SECRET}", f"sasl.oauthbearer.client.secret={OAUTH_SECRET}"]
    caplog.set_level(logging.DEBUG)
    watcher = threading.Thread(target=scrape_then_stop)
    watcher.start()
    try:
        assert cli.main(argv, environ=environ) == 0
    finally:
        stop.set()
        watcher.join(30)
    records = caplog.records
    messages = [record.getMessage() for record in records]
    client_lines = [m for r, m in zip(records, messages, strict=True) if r.name == "librdkafka"]
    # The run did meet the failure, with librdkafka talking: this is not an empty check.
    assert any("Connection refused" in m for m in messages)
    assert any("[redacted]" in m for m in client_lines)
    assert any(r.name == "librdkafka" and r.levelno >= logging.ERROR for r in records)
    assert any("settings:" in m for m in messages)
    for message in messages:
        assert leaks(message) == [], message
    for record in records:
        assert leaks(repr(record.args)) == []
    out, err = capfd.readouterr()
    assert leaks(out) == [] and leaks(err) == []
    assert "sheetbreak_rows_consumed_total" in pages["/metrics"]
    for path, page in pages.items():
        assert leaks(page) == [], path
    print(
        f"\nsecrets ({'environment' if by_env else 'flags'}): {len(records)} log records "
        f"({len(client_lines)} from librdkafka), {sum(map(len, pages.values()))} bytes of "
        "/metrics and probes: no secret"
    )


# Where the HTTP endpoints listen ------------------------------------------------------


def test_metrics_and_probes_listen_on_loopback_by_default_and_where_configured():
    for name, sub in subcommands(cli.build_parser({})).items():
        if any("--metrics-host" in a.option_strings for a in sub._actions):
            assert sub.get_default("metrics_host") == "127.0.0.1", name
    assert StreamerSettings.__dataclass_fields__["metrics_host"].default == "127.0.0.1"
    args = cli.build_parser({"STREAMER_METRICS_HOST": "127.0.0.2"}).parse_args(
        ["run", "--bootstrap-servers", "k:1"]
    )
    assert cli.streamer_settings(args, cli.kafka_settings(args)).metrics_host == "127.0.0.2"
    metrics = CollectorRegistry()
    Counter("probe_hits", "A sample to find on the page", registry=metrics).inc()
    for host in ("127.0.0.1", "127.0.0.2"):
        port = closed_port()
        server = cli.serve_metrics(host, port, metrics)
        try:
            assert server.port == port
            assert "probe_hits_total 1.0" in fetch(f"http://{host}:{port}/metrics")
            other = "127.0.0.2" if host == "127.0.0.1" else "127.0.0.1"
            with pytest.raises(urllib.error.URLError):
                fetch(f"http://{other}:{port}/metrics")
        finally:
            server.close()
    # Containers publish the port, so the image alone opts into every interface.
    assert "STREAMER_METRICS_HOST=0.0.0.0" in (ROOT / "deploy" / "Dockerfile").read_text()


# The alert payload --------------------------------------------------------------------


class Row:
    def __init__(self, value: bytes) -> None:
        self._value = value

    def value(self) -> bytes:
        return self._value

    def key(self) -> bytes:
        return b"PM1"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return 0


def alerts_of_a_stretch(model: Model) -> tuple[list[dict[str, Any]], list[list[float]]]:
    """Alerts for a machine whose rows wander off and come back, and the rows' values."""
    bundle = model.bundle
    quality = DataQuality(
        int(bundle.max_gap_minutes * 60_000), int(bundle.max_gap_minutes * 60_000)
    )
    windows = MachineWindows(bundle.spec, bundle.lookback, quality, bundle.history)
    rng = np.random.default_rng(5)
    # Values with six distinct decimals, so that any of them in an alert can be spotted.
    level = np.r_[np.zeros(12), np.full(8, 6.0), np.zeros(12)]
    values = np.round(level[:, None] + rng.normal(size=(32, len(SENSORS))), 6) + 1.234e-6
    messages = [
        Row(
            orjson.dumps(
                {
                    "machine_id": "PM1",
                    "ts": 1_767_225_600_000 + i * 120_000,
                    "values": dict(zip(SENSORS, row.tolist(), strict=True)),
                    "operator_note": f"private-{i}",
                }
            )
        )
        for i, row in enumerate(values)
    ]
    outcome = process(model, windows, messages, 65_536, now_ms=1_767_300_000_000)
    return outcome.alerts, values.tolist()


def test_alerts_carry_the_contract_and_no_more(registry):
    model = Model.load(registry / "v1")
    alerts, values = alerts_of_a_stretch(model)
    statuses = {alert["status"] for alert in alerts}
    assert {"open", "resolved"} <= statuses
    for alert in alerts:
        assert CONTRACT_FIELDS <= set(alert) <= CONTRACT_FIELDS | DOCUMENTED, (
            set(alert) - CONTRACT_FIELDS
        )
        assert ("reason" in alert) == (alert["status"] == "resolved")
        assert len(alert["top_sensors"]) <= TOP_SENSORS
        for sensor in alert["top_sensors"]:
            assert set(sensor) == {"sensor", "share", "observed", "expected"}
        # No value of any row appears, but the triggering row's top sensors as observed.
        text = orjson.dumps({k: v for k, v in alert.items() if k != "top_sensors"}).decode()
        assert "private-" not in orjson.dumps(alert).decode()
        for row in values:
            for value in row:
                assert f"{value:.6f}" not in text
    producer_records: list[dict[str, Any]] = []

    class Producer:
        def produce(self, topic: str, **record: Any) -> None:
            producer_records.append(record)

    kafka_io.publish_alert(Producer(), "breaks", alerts[0])  # type: ignore[arg-type]
    (record,) = producer_records
    assert record["key"] == b"PM1"
    assert [name for name, _ in record["headers"]] == ["alert_id"]
    assert orjson.loads(record["value"]) == alerts[0]
    print(
        f"\nalerts: {len(alerts)} checked ({sorted(statuses)}), keys {sorted(set().union(*alerts))}"
    )
