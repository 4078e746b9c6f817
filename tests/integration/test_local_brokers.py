"""The local brokers the project starts itself: the Apache Kafka one, and both under SIGKILL."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from broker_choice import has_java_and_maven
from confluent_kafka.admin import AdminClient

from streamer.broker import BrokerError, EmbeddedBroker

pytestmark = pytest.mark.integration

needs_java = pytest.mark.skipif(
    not has_java_and_maven(), reason="the local Apache Kafka needs java and mvn on PATH"
)
KINDS = [pytest.param("tansu"), pytest.param("kafka", marks=needs_java)]


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie waiting for its reaper is not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _wait_gone(pid: int, timeout: float) -> bool:
    """Wait until ``pid`` is no longer alive; whether it went within ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return False


def _listening(port: int) -> bool:
    """Whether anything accepts connections on the loopback port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@needs_java
def test_local_kafka_starts_serves_and_stops_without_leftovers() -> None:
    started = time.monotonic()
    broker = EmbeddedBroker("kafka")
    with broker:
        startup = time.monotonic() - started
        bootstrap, pid, log_path = broker.bootstrap_servers, broker.pid, broker.log_path
        assert pid is not None and log_path is not None and log_path.is_file()
        metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
        assert [f"{b.host}:{b.port}" for b in metadata.brokers.values()] == [bootstrap]
        assert b"Kafka Server started" in log_path.read_bytes()
        broker.create_topics({"local-kafka-check": 3})
    print(f"\nlocal Apache Kafka: ready in {startup:.1f} s (classpath cached, storage formatted)")
    assert not broker.running and _wait_gone(pid, 5), "the broker outlived stop()"
    assert not _listening(int(bootstrap.rsplit(":", 1)[1])), "the port still accepts connections"
    assert not log_path.parent.exists(), "the broker's directory was left behind"


@needs_java
def test_local_kafka_on_a_taken_port_fails_naming_it() -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        with pytest.raises(BrokerError) as caught:
            EmbeddedBroker("kafka", port=port, startup_timeout=60).start()
    message = str(caught.value)
    assert "kafka.Kafka exited" in message and "Address already in use" in message


def _broker_command(kind: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """``python -m streamer broker --kind KIND`` with its output piped."""
    return subprocess.Popen(
        [sys.executable, "-m", "streamer", "broker", "--kind", kind],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _children(pid: int) -> list[int]:
    """The direct children of ``pid``."""
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(child) for child in text.split()]


@pytest.mark.parametrize("kind", KINDS)
def test_sigkill_of_streamer_broker_takes_its_broker_along(kind: str) -> None:
    process = _broker_command(kind)
    try:
        assert process.stdout is not None
        first = process.stdout.readline()  # the bootstrap address, once the broker serves
        assert first.strip(), process.stderr.read() if process.stderr else ""
        children = _children(process.pid)
        assert len(children) == 1, f"expected one broker child, found {children}"
        os.kill(process.pid, signal.SIGKILL)
        _, err = process.communicate(timeout=10)
        assert _wait_gone(children[0], 10), f"the {kind} broker outlived its killed parent"
        # Nobody was left to remove the broker's directory: the test does.
        for log_path in re.findall(r"\(log (\S+)\)", err):
            shutil.rmtree(Path(log_path).parent, ignore_errors=True)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=10)


@pytest.mark.parametrize(
    ("tools", "missing"),
    [
        pytest.param((), "java", id="no-java"),
        pytest.param(("java",), "mvn", id="no-mvn", marks=needs_java),
    ],
)
def test_a_missing_java_or_maven_is_one_clear_line(
    tmp_path: Path, tools: tuple[str, ...], missing: str
) -> None:
    for tool in tools:  # a PATH that holds only these tools
        found = shutil.which(tool)
        assert found is not None
        (tmp_path / tool).symlink_to(found)
    process = _broker_command("kafka", env={"PATH": str(tmp_path), "HOME": str(tmp_path)})
    _, err = process.communicate(timeout=60)
    assert process.returncode == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and f"needs `{missing}` on PATH" in lines[0], err
