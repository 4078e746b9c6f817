"""A local Apache Kafka (KRaft, one node) from jars Maven resolves, for tests and benchmarks.

The jars come from ``kafka_pom.xml`` beside this module: the first start runs Maven, which
fetches them from Maven Central into its own cache (``~/.m2``); the resulting classpath is
kept under ``~/.cache/sheetbreak`` keyed by the pom's hash, so later starts skip Maven.
``EmbeddedBroker(kind="kafka")`` runs it; this module knows only how to prepare and
launch it.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import uuid
from importlib import resources
from pathlib import Path
from typing import IO

from streamer.broker import BrokerError, die_with_parent, free_port, host_port

POM = "kafka_pom.xml"
HEAP = ("-Xms128m", "-Xmx512m")
JVM_FLAGS = ("-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-Djava.awt.headless=true")
MAVEN_TIMEOUT_S = 900.0
FORMAT_TIMEOUT_S = 120.0
# What one node needs: internal topics of one replica, no wait before a group's first
# rebalance, and records kept however old their timestamps (the tests replay 2024).
ONE_NODE = {
    "offsets.topic.replication.factor": "1",
    "offsets.topic.num.partitions": "4",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "transaction.state.log.num.partitions": "4",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
    "group.initial.rebalance.delay.ms": "0",
    "num.partitions": "1",
    "auto.create.topics.enable": "true",
    "log.retention.ms": "-1",
}
LOG4J2 = """\
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = OUT
logger.state.name = state.change.logger
logger.state.level = WARN
"""


def require(tool: str, why: str) -> str:
    """The path of ``tool`` on PATH, or a ``BrokerError`` naming it."""
    found = shutil.which(tool)
    if found is None:
        raise BrokerError(
            f"the local Apache Kafka needs `{tool}` on PATH ({why}); install it "
            "(Debian: apt-get install openjdk-17-jre-headless maven) or use --kind tansu"
        )
    return found


def classpath(cache_root: Path | None = None) -> str:
    """The broker's Java classpath: from the cache, else resolved by Maven and cached."""
    pom = resources.files("streamer").joinpath(POM).read_bytes()
    root = cache_root or Path.home() / ".cache" / "sheetbreak"
    folder = root / f"kafka-{hashlib.sha256(pom).hexdigest()[:16]}"
    cached = folder / "classpath.txt"
    if cached.is_file():
        text = cached.read_text().strip()
        if text and all(Path(jar).is_file() for jar in text.split(os.pathsep)):
            return text
    mvn = require("mvn", "Maven resolves the Kafka jars")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pom.xml").write_bytes(pom)
    _resolve(mvn, folder, cached)
    return cached.read_text().strip()


def _resolve(mvn: str, folder: Path, target: Path) -> None:
    """Run Maven on the cached pom, writing the classpath to ``target`` atomically."""
    partial = folder / f"classpath.{os.getpid()}.tmp"
    command = [mvn, "-q", "-B", "-f", str(folder / "pom.xml"), "dependency:build-classpath"]
    try:
        done = subprocess.run(
            [*command, f"-Dmdep.outputFile={partial}"],
            capture_output=True,
            text=True,
            timeout=MAVEN_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise BrokerError(f"Maven took over {MAVEN_TIMEOUT_S:.0f} s to resolve Kafka") from exc
    if done.returncode != 0 or not partial.is_file():
        tail = (done.stdout + done.stderr)[-2000:]
        raise BrokerError(f"Maven could not resolve the Kafka jars of {folder}:\n{tail}")
    partial.replace(target)


def cluster_id() -> str:
    """A random Kafka cluster id (base64 of a UUID) that no tool takes for a flag."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not text.startswith("-"):
            return text


class KafkaLauncher:
    """Writes a one-node KRaft configuration, formats its storage and names the command."""

    port_taken_marker = "Address already in use"
    startup_timeout = 120.0

    def __init__(self, cache_root: Path | None = None) -> None:
        """Find Java and Maven and resolve the classpath (Maven runs on the first start)."""
        self.java = require("java", "the broker is a Java program")
        require("mvn", "Maven resolves the Kafka jars")
        self.classpath = classpath(cache_root)
        self.name = f"{self.java} kafka.Kafka"

    def cluster_id(self) -> str:
        """A fresh cluster id for one launch."""
        return cluster_id()

    def command(
        self, workdir: Path, host: str, port: int, advertised: int, cluster: str, log: IO[bytes]
    ) -> list[str]:
        """Prepare ``workdir`` for one broker on ``port`` and return its command line."""
        controller = free_port(host)
        settings = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{host_port(host, controller)}",
            "listeners": f"PLAINTEXT://{host_port(host, port)},"
            f"CONTROLLER://{host_port(host, controller)}",
            "advertised.listeners": f"PLAINTEXT://{host_port(host, advertised)}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(workdir / "data"),
            **ONE_NODE,
        }
        config = workdir / "server.properties"
        config.write_text("".join(f"{key}={value}\n" for key, value in settings.items()))
        (workdir / "log4j2.properties").write_text(LOG4J2)
        java = [
            self.java,
            *HEAP,
            *JVM_FLAGS,
            f"-Dlog4j2.configurationFile={workdir}/log4j2.properties",
        ]
        java += ["-cp", self.classpath]
        self._format(java, cluster, config, log)
        return [*java, "kafka.Kafka", str(config)]

    def _format(self, java: list[str], cluster: str, config: Path, log: IO[bytes]) -> None:
        """Format the KRaft storage for ``cluster`` (static voters, so no --standalone)."""
        command = [*java, "kafka.tools.StorageTool", "format", "-t", cluster, "-c", str(config)]
        try:
            done = subprocess.run(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=FORMAT_TIMEOUT_S,
                preexec_fn=die_with_parent,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise BrokerError(f"formatting Kafka's storage took over {FORMAT_TIMEOUT_S} s") from exc
        if done.returncode != 0:
            raise BrokerError(f"Kafka's StorageTool failed (code {done.returncode}); see its log")

    def env(self) -> dict[str, str] | None:
        """The caller's environment: Java needs PATH, HOME and the locale from it."""
        return None
