"""A streamer and an archiver started before their broker: alive and unready while it is
down, one log line per interval about it, working once it is up, and quick to stop."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from typing import Any

import pytest
from archiver_process import ArchiverProcess
from fault_helpers import StreamerProcess, committed_alerts, free_port, shared_scenario
from stream_helpers import Scenario, produce_rows, scenario_rows, wait_until

from streamer.broker import EmbeddedBroker, create_topics

pytestmark = pytest.mark.integration

START_SECONDS = 180.0
DOWN_SECONDS = 20.0  # the broker appears this long after both serve


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    return shared_scenario(tmp_path_factory)


def stop_latency(process: StreamerProcess) -> float:
    """Seconds from SIGTERM to the exit, which must be clean."""
    started = time.monotonic()
    process.process.send_signal(signal.SIGTERM)
    code = process.process.wait(30)
    latency = time.monotonic() - started
    assert code == 0, process.tail()
    return latency


def unready(process: StreamerProcess, prefix: str) -> bool:
    status, body = process.probe("/readyz")
    reachable = process.value(f"{prefix}_broker_reachable")
    return status == 503 and body.get("broker_reachable") is False and reachable == 0


def test_started_before_the_broker_they_wait_unready_then_work_and_stop_quickly(
    kafka_broker: Any, unique_name: Callable[[str], str], scenario: Scenario, tmp_path: Any
) -> None:
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    topic, alerts, dlq = unique_name("sensors"), unique_name("breaks"), unique_name("dlq")

    def streamer(instance: str) -> StreamerProcess:
        return StreamerProcess(
            bootstrap, scenario.registry, topic, alerts, dlq, unique_name("g"), instance
        )

    owned = [
        streamer("a"),
        streamer("waiting"),
        ArchiverProcess(bootstrap, tmp_path / "archive", topic, "", "", unique_name("arch"), "x"),
    ]
    first, waiting, archiver = owned
    try:
        for process in owned:
            process.wait_serving(START_SECONDS)
        serving = time.monotonic()
        for process, prefix in ((first, "sheetbreak"), (archiver, "sheetbreak_archive")):
            wait_until(lambda p=process, x=prefix: unready(p, x), 10, "unready while down")
            assert process.probe("/healthz")[0] == 200, "alive while the broker is down"
        waiting_stop = stop_latency(waiting)
        time.sleep(max(0.0, serving + DOWN_SECONDS - time.monotonic()))
        lines = {p.instance: p.log_text().count("\n") for p in (first, archiver)}
        with EmbeddedBroker(kafka_broker.own_kind, port=port):
            up = time.monotonic()
            create_topics(bootstrap, {topic: 2, alerts: 1, dlq: 1})
            for process in (first, archiver):
                wait_until(lambda p=process: p.probe("/readyz")[0] == 200, 120, "ready")
            ready = time.monotonic() - up
            rows = scenario_rows(scenario, normal_machines=2, drift_machines=1)
            produce_rows(bootstrap, topic, rows)
            wait_until(
                lambda: first.value("sheetbreak_rows_consumed_total") >= len(rows),
                120,
                "rows scored",
            )
            wait_until(
                lambda: archiver.value("sheetbreak_archive_rows_total") >= len(rows),
                120,
                "rows archived",
            )
            got = committed_alerts(bootstrap, alerts)
            stops = [stop_latency(first), stop_latency(archiver)]
    finally:
        for process in owned:
            process.close()
    print(
        f"broker ({kafka_broker.own_kind}) up {DOWN_SECONDS:.0f} s after both served: ready "
        f"{ready:.1f} s after it appeared; {len(got)} alerts, {len(rows)} rows archived; "
        f"SIGTERM to exit: {waiting_stop:.2f} s while waiting, {stops[0]:.2f} s (streamer) "
        f"and {stops[1]:.2f} s (archiver) while working; log lines before the broker: {lines}"
    )
    assert {a["machine_id"] for a in got} == {"D-1"} and archiver.archived() > 0
    assert max([waiting_stop, *stops]) < 2.0
    # Start-up lines plus one line per kind of failure per interval, not one per attempt.
    assert max(lines.values()) < 40, lines
