"""The short form of the soak (``tests/benchmarks/soak.py``): a steady load for about a minute.

A ``streamer run`` process consumes simulated rows at a steady rate while its resident
memory, open files and threads are sampled from /proc. After the warm-up, neither open
files nor threads may grow, and memory may grow by a few MiB at most.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Callable

import pytest
from fault_helpers import (
    StreamerProcess,
    sample_table,
    shared_scenario,
    simulator,
    trend,
    watch,
)
from stream_helpers import settings_for, wait_until

from streamer.broker import create_topics

pytestmark = pytest.mark.integration

RATE, MACHINES = 200.0, 40
SECONDS, EVERY, WARMUP = 60.0, 2.0, 20.0
RSS_GROWTH_MIB = 16.0


def test_a_steady_load_keeps_memory_open_files_and_threads_flat(
    kafka_bootstrap: str,
    unique_name: Callable[[str], str],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    scenario = shared_scenario(tmp_path_factory)
    settings = settings_for(kafka_bootstrap, scenario.registry, unique_name, "soak")
    create_topics(
        kafka_bootstrap, {settings.topic: 4, settings.alerts_topic: 1, settings.dlq_topic: 1}
    )
    streamer = StreamerProcess(
        kafka_bootstrap,
        scenario.registry,
        settings.topic,
        settings.alerts_topic,
        settings.dlq_topic,
        settings.group_id,
        "soak",
    )
    with tempfile.TemporaryFile() as log:
        plant = simulator(kafka_bootstrap, settings.topic, MACHINES, RATE, log)
        try:
            streamer.wait_serving(180)
            wait_until(
                lambda: streamer.value("sheetbreak_rows_consumed_total") > 0, 60, "first rows"
            )
            samples, consumed = watch(streamer, SECONDS, EVERY)
            assert plant.poll() is None, "the simulated plant stopped"
        finally:
            plant.terminate()
            try:
                plant.wait(30)
            except subprocess.TimeoutExpired:
                plant.kill()
                plant.wait(10)
            exit_code = streamer.terminate()
            streamer.close()
    assert exit_code == 0
    print(sample_table(samples, consumed))
    found = trend(samples, WARMUP)
    steady = [c for s, c in zip(samples, consumed, strict=True) if s.seconds >= WARMUP]
    pace = (steady[-1] - steady[0]) / (SECONDS - WARMUP - EVERY)
    print(f"soak: {found}, {pace:.0f} rows/s consumed")
    assert pace > 0.7 * RATE, f"the streamer fell behind the steady load: {pace:.0f} rows/s"
    assert found.fd_growth <= 0, f"open files grew: {found}"
    assert found.thread_growth <= 0, f"threads grew: {found}"
    growth = found.rss_end_mib - found.rss_start_mib
    assert growth < RSS_GROWTH_MIB, f"resident memory grew by {growth:.1f} MiB: {found}"
