"""An uninterrupted streamer and one SIGKILLed 20 times publish the same alerts, field for
field, on a backlog consumed from the start and on rows that arrive while it runs.

The bundle's thresholds are adaptive (each machine's follows its own history of scores),
machines sit out whole cycles so their partitions' rows leave them idle, and batches are
small (``--max-batch 8``): what is published must depend on the rows alone, not on
wall-clock time, batch boundaries or how the partitions of a backlog interleave.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fault_helpers import shared_scenario
from kill_helpers import WALL_CLOCK_FIELDS, Streaming, compare, killed, presence_rows, uninterrupted
from stream_helpers import Scenario, adaptive_scenario, settings_for

pytestmark = pytest.mark.integration

MACHINES, CYCLES, SEED, GROWTH = 8, 28, 20261203, 0.4
KILLS = 20
LIVE_RATE = 60.0  # rows per second
FLAGS = (
    *("--max-batch", "8"),
    *("--idle-minutes", "90"),  # a cycle sat out (over two hours) leaves a machine idle
    *("--checkpoint-minutes", "20"),
)


@pytest.fixture(scope="module")
def adaptive(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    scenario = shared_scenario(tmp_path_factory)
    return adaptive_scenario(scenario, tmp_path_factory.mktemp("kill-determinism"))


@pytest.mark.parametrize("rate", [None, LIVE_RATE], ids=["backlog", "live"])
def test_twenty_sigkills_publish_exactly_the_uninterrupted_alerts(
    kafka_broker: Any,
    unique_name: Callable[[str], str],
    adaptive: Scenario,
    rate: float | None,
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    rows = presence_rows(adaptive, MACHINES, CYCLES, SEED, GROWTH)

    def streaming(tag: str) -> Streaming:
        return Streaming(
            bootstrap, settings_for(bootstrap, adaptive.registry, unique_name, tag), FLAGS
        )

    reference = uninterrupted(streaming("ref"), rows, rate)
    got = killed(streaming("kill"), rows, rate, KILLS, SEED)
    check = compare(got.alerts, reference.alerts)
    mode = "backlog" if rate is None else f"live at {rate:g} rows/s"
    print(
        f"{mode} on {kafka_broker.source}: {len(rows)} rows of {MACHINES} machines; "
        f"uninterrupted {reference.seconds:.0f} s, {len(reference.alerts)} alerts; "
        f"{len(got.kills)} SIGKILLs ({', '.join(sorted(set(got.kills)))}) in {got.seconds:.0f} s; "
        f"{check.compared} compared, {check.lost} lost, {check.extra} extra, "
        f"{check.repeated} repeated, fields differing: {check.differing or 'none'} "
        f"(not compared: {', '.join(sorted(WALL_CLOCK_FIELDS))})"
    )
    assert len(got.kills) == KILLS
    assert len(reference.alerts) >= 3 * CYCLES, "too few alerts to tell runs apart"
    assert check.lost == 0 and check.extra == 0, check
    assert not check.differing, check
    if kafka_broker.hides_aborted_transactions:
        assert check.repeated == 0, check
