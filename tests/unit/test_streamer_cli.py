"""The streamer's command line and settings: env names in --help, secrets never shown."""

import logging

import pytest

from streamer.cli import build_parser, kafka_settings, main, streamer_settings

pytestmark = pytest.mark.unit


def test_help_names_every_environment_variable_and_hides_secret_values(capsys):
    environ = {"STREAMER_SASL_PASSWORD": "hunter2", "STREAMER_BOOTSTRAP_SERVERS": "k:9092"}
    with pytest.raises(SystemExit):
        build_parser(environ).parse_args(["run", "--help"])
    out = capsys.readouterr().out
    for name in (
        "STREAMER_BOOTSTRAP_SERVERS",
        "STREAMER_REGISTRY",
        "STREAMER_SASL_PASSWORD",
        "STREAMER_MAX_BATCH",
        "STREAMER_METRICS_PORT",
    ):
        assert name in out
    assert "hunter2" not in out
    assert "(set)" in out


def test_security_settings_reach_librdkafka_but_not_the_logs(caplog):
    args = build_parser({}).parse_args(
        [
            "run",
            "--bootstrap-servers",
            "k:9093",
            "--security-protocol",
            "SASL_SSL",
            "--sasl-mechanism",
            "SCRAM-SHA-512",
            "--sasl-username",
            "plant",
            "--sasl-password",
            "hunter2",
            "--kafka-config",
            "ssl.key.password=s3cret",
            "client.id=pm",
        ]
    )
    settings = streamer_settings(args, kafka_settings(args))
    config = settings.kafka.client_config()
    assert config["sasl.password"] == "hunter2"
    assert config["ssl.key.password"] == "s3cret"
    assert config["security.protocol"] == "SASL_SSL"
    assert config["client.id"] == "pm"
    with caplog.at_level(logging.INFO):
        logging.getLogger("streamer").info("settings: %r", settings)
    assert "hunter2" not in caplog.text
    assert "s3cret" not in caplog.text
    assert "plant" in caplog.text


def test_metrics_bind_to_loopback_by_default():
    args = build_parser({}).parse_args(["run", "--bootstrap-servers", "k:9092"])
    assert streamer_settings(args, kafka_settings(args)).metrics_host == "127.0.0.1"


def test_run_without_a_model_or_a_broker_is_one_clear_error(tmp_path, capsys):
    code = main(["run", "--registry", str(tmp_path / "empty"), "--metrics-port", "0"], environ={})
    assert code == 2
    assert "give --bootstrap-servers" in capsys.readouterr().err
    code = main(
        [
            "run",
            "--bootstrap-servers",
            "127.0.0.1:1",
            "--registry",
            str(tmp_path / "empty"),
            "--metrics-port",
            "0",
        ],
        environ={},
    )
    assert code == 2
    assert "has no current model; train one first" in capsys.readouterr().err


def test_bad_pass_through_is_refused(capsys):
    code = main(["run", "--bootstrap-servers", "k:9092", "--kafka-config", "nonsense"], environ={})
    assert code == 2
    assert "KEY=VALUE" in capsys.readouterr().err
