"""Faults during one run: crashes, a broker out of reach, group churn, slow batches.

Each test streams the same simulated rows (several machines over several cycles, some
drifting into a break in each cycle) and compares the alerts a ``read_committed`` reader
sees at the end with those of one streamer that saw every row without interruption: the
same alert ids, and each once.
"""

from __future__ import annotations

import contextlib
import random
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fault_helpers import (
    GroupWatcher,
    Pacer,
    StreamerProcess,
    committed_alerts,
    compare_alerts,
    cycle_rows,
    free_port,
    shared_scenario,
)
from stream_helpers import (
    Scenario,
    adaptive_scenario,
    produce_rows,
    read_all,
    running,
    settings_for,
    wait_until,
)
from tcp_proxy import TcpProxy

import streamer.runner
from streamer.broker import EmbeddedBroker, create_topics
from streamer.settings import StreamerSettings

pytestmark = pytest.mark.integration

MACHINES, CYCLES, SEED = 6, 5, 20261123
CYCLE_ROWS = 60 * MACHINES  # the scenario's normal stretch is 60 rows per machine
ALERT_ROW = 53 * MACHINES  # within a cycle, drifting machines alarm from here on
PARTITIONS = 4
START_SECONDS = 180.0  # a streamer process imports TensorFlow and loads the model


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    return shared_scenario(tmp_path_factory)


@pytest.fixture(scope="module")
def rows(scenario: Scenario) -> list[dict[str, Any]]:
    return cycle_rows(scenario, MACHINES, CYCLES, SEED)


@pytest.fixture(scope="module")
def reference(kafka_bootstrap: str, scenario: Scenario, rows: list[dict[str, Any]]) -> list[Any]:
    """The alerts of one in-process streamer that sees every row, uninterrupted."""
    return uninterrupted(kafka_bootstrap, scenario, rows)


@pytest.fixture(scope="module")
def adaptive(scenario: Scenario, tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    return adaptive_scenario(scenario, tmp_path_factory.mktemp("adaptive"))


def uninterrupted(
    bootstrap: str, scenario: Scenario, rows: list[dict[str, Any]], **overrides: Any
) -> list[Any]:
    """The alerts of one in-process streamer that sees every row, uninterrupted."""
    token = uuid.uuid4().hex[:8]
    settings = settings_for(
        bootstrap, scenario.registry, lambda p: f"{p}-faults-{token}", "ref", "ref", **overrides
    )
    topics(bootstrap, settings)
    with running(settings) as run:
        produce_rows(bootstrap, settings.topic, rows)
        wait_until(
            lambda: run.value("sheetbreak_rows_consumed_total") >= len(rows),
            120,
            "the reference run to consume every row",
        )
    alerts = committed_alerts(bootstrap, settings.alerts_topic)
    assert len({a["alert_id"] for a in alerts}) == len(alerts) >= 3 * CYCLES
    return alerts


def topics(bootstrap: str, settings: StreamerSettings) -> None:
    create_topics(
        bootstrap, {settings.topic: PARTITIONS, settings.alerts_topic: 1, settings.dlq_topic: 1}
    )


def process_factory(bootstrap: str, settings: StreamerSettings) -> Callable[..., StreamerProcess]:
    """Start ``streamer run`` processes on the settings' topics and group."""

    def start(instance: str, *extra: str) -> StreamerProcess:
        return StreamerProcess(
            bootstrap,
            settings.registry,
            settings.topic,
            settings.alerts_topic,
            settings.dlq_topic,
            settings.group_id,
            instance,
            extra,
        )

    return start


@contextlib.contextmanager
def closing_all(items: list[Any]) -> Iterator[list[Any]]:
    """Close every item (processes, pacers, watchers) however the block ends."""
    try:
        yield items
    finally:
        for item in reversed(items):
            if isinstance(item, Pacer):
                item.halt.set()
                item.release(len(item.holds))
            elif hasattr(item, "close"):
                item.close()


def check_alerts(got: list[Any], reference: list[Any], what: str, repeats: bool = False) -> None:
    """The same alerts as the reference, none lost or extra, and none repeated unless
    ``repeats`` (a broker that delivers aborted transactions' records)."""
    check = compare_alerts(got, reference)
    assert not check.missing, f"{what}: {len(check.missing)} alerts lost"
    assert not check.extra, f"{what}: {len(check.extra)} alerts the reference run never made"
    if not repeats:
        assert check.duplicates == 0, f"{what}: {check.duplicates} alerts published twice"
    print(
        f"{what}: {check.distinct} alerts compared with the reference, 0 lost, "
        f"{check.duplicates} repeated"
    )


# Crashes -----------------------------------------------------------------------------------

KILLS = 20  # on a broker that hides aborted transactions: no repeat allowed over all of them
KILLS_ON_TANSU = 5  # where repeats are allowed, fewer kills prove the rest


def test_sigkill_at_random_moments_loses_and_repeats_no_alert(
    kafka_broker: Any,
    unique_name: Callable[[str], str],
    scenario: Scenario,
    rows: list[dict[str, Any]],
    reference: list[Any],
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    wanted = KILLS if kafka_broker.hides_aborted_transactions else KILLS_ON_TANSU
    settings = settings_for(bootstrap, scenario.registry, unique_name, "kill")
    started = time.monotonic()
    got, kills = kill_repeatedly(bootstrap, settings, rows, wanted, SEED)
    print(f"SIGKILLs, by what the process was doing: {kills}")
    print(f"{len(kills)} kills and the last run took {time.monotonic() - started:.0f} s")
    check_kills(kafka_broker, got, reference, len(kills))


ADAPTIVE_KILLS = 3
CHECKPOINT_MINUTES = "20"  # several checkpoints per machine per two-hour cycle
GROWTH = 0.4


def test_sigkill_with_adaptive_thresholds_resumes_each_machine_exactly(
    kafka_broker: Any,
    unique_name: Callable[[str], str],
    adaptive: Scenario,
) -> None:
    """Each machine's threshold depends on its whole history of scores, far more than a
    rebuild replays: the checkpoints on the state topic make the killed and restarted
    streamer decide exactly as an uninterrupted one. The rows' spread grows from cycle to
    cycle, so a threshold rebuilt from the bundle's prior and the replayed hour alone
    would sit far below the uninterrupted one and alarm on ordinary rows."""
    bootstrap = kafka_broker.bootstrap_servers
    rows = cycle_rows(adaptive, MACHINES, CYCLES, SEED, growth=GROWTH)
    expected = uninterrupted(bootstrap, adaptive, rows, checkpoint_minutes=20.0)
    settings = settings_for(bootstrap, adaptive.registry, unique_name, "adaptive-kill")
    # A short replay: a machine's threshold must come from its checkpoint, not the replay.
    extra = (
        *("--state-topic", settings.state_topic, "--checkpoint-minutes", CHECKPOINT_MINUTES),
        *("--replay-minutes", "12"),
    )
    got, kills = kill_repeatedly(
        bootstrap, settings, rows, ADAPTIVE_KILLS, SEED + 1, extra, scoring=True
    )
    print(f"SIGKILLs (adaptive thresholds), by what the process was doing: {kills}")
    check_kills(kafka_broker, got, expected, ADAPTIVE_KILLS)
    assert read_count(bootstrap, settings.state_topic) > 0, "no checkpoint was written"


def read_count(bootstrap: str, topic: str) -> int:
    return len(read_all(bootstrap, topic, quiet=3.0, timeout=60.0))


def check_kills(kafka_broker: Any, got: list[Any], reference: list[Any], kills: int) -> None:
    repeats = not kafka_broker.hides_aborted_transactions
    check_alerts(got, reference, f"{kills} kills survived ({kafka_broker.source})", repeats)


def kill_repeatedly(
    bootstrap: str,
    settings: StreamerSettings,
    rows: list[dict[str, Any]],
    kills_wanted: int,
    seed: int,
    extra: tuple[str, ...] = (),
    scoring: bool = False,
) -> tuple[list[Any], list[str]]:
    """SIGKILL ``streamer run`` processes at random moments while the rows come in (with
    ``scoring``, only once each has scored some), then let a last one finish; the alerts
    a read_committed reader sees, and what each killed process was doing."""
    topics(bootstrap, settings)
    start = process_factory(bootstrap, settings)
    rng = random.Random(seed)
    kills: list[str] = []
    # One slice of the rows per process, sent from the moment it serves, so every kill
    # lands while rows come in, whatever the start-up takes on a busy machine.
    slices = tuple(len(rows) * k // (kills_wanted + 1) for k in range(kills_wanted + 1))
    with closing_all([]) as owned:
        pacer = Pacer(bootstrap, settings.topic, rows, rate=60.0, holds=slices)
        owned.append(pacer)
        pacer.start()
        # The same instance id each time, as a restarted pod has: its new producer fences
        # the dead one's transaction.
        for _ in range(kills_wanted):
            process = start("a", *extra)
            owned.append(process)
            process.wait_serving(START_SECONDS)
            # Some kills land in the group join or the window rebuild, most while the
            # process scores the rows of its slice as they come.
            if scoring or rng.random() >= 0.3:
                wait_until(lambda p=process: assigned(p), 60, "the restarted member to join")
            pacer.release()
            if scoring:
                wait_until(lambda p=process: scored_some(p), 60, "the member to score rows")
            time.sleep(rng.uniform(0.5, 6.0))
            assert process.alive(), process.tail()
            kills.append(phase(process))
            process.kill()
        last = start("a", *extra)
        owned.append(last)
        last.wait_serving(START_SECONDS)
        pacer.release()
        ends = pacer.finish(300)
        watcher = GroupWatcher(bootstrap, settings.group_id, settings.topic, PARTITIONS)
        owned.append(watcher)
        wait_until(lambda: watcher.reached(ends), 180, "every row committed after the kills")
        assert last.terminate() == 0, last.tail()
    return committed_alerts(bootstrap, settings.alerts_topic), kills


def scored_some(process: StreamerProcess) -> bool:
    return process.value("sheetbreak_rows_consumed_total") >= 1


def phase(process: StreamerProcess) -> str:
    """What a streamer process is doing, as far as its metrics tell."""
    if process.value("sheetbreak_rebalances_total", kind="assigned") < 1:
        return "joining"
    if process.value("sheetbreak_rows_consumed_total") < 1:
        return "joined, before its first commit"
    return "scoring"


# The broker out of reach -------------------------------------------------------------------

OUTAGE_SECONDS = 20.0
CUT_CYCLE = 2  # the outage starts early in this cycle, where no machine alarms


def test_a_broker_outage_is_reported_survived_and_caught_up(
    kafka_broker: Any, scenario: Scenario, rows: list[dict[str, Any]], reference: list[Any]
) -> None:
    # Its own broker: clients must reach it only through the proxy, so it advertises the
    # proxy's port (a test can do this with a broker it starts, not with a given cluster).
    broker_port = free_port()
    with (
        TcpProxy(("127.0.0.1", broker_port)) as proxy,
        EmbeddedBroker(kafka_broker.own_kind, port=broker_port, advertised_port=proxy.port),
        closing_all([]) as owned,
    ):
        bootstrap = proxy.address
        token = uuid.uuid4().hex[:8]
        settings = settings_for(
            bootstrap, scenario.registry, lambda p: f"{p}-outage-{token}", "net"
        )
        topics(bootstrap, settings)
        process = process_factory(bootstrap, settings)("a")
        owned.append(process)
        process.wait_serving(START_SECONDS)
        wait_until(lambda: process.probe("/readyz")[0] == 200, 60, "the streamer to be ready")
        cycle_start = CUT_CYCLE * CYCLE_ROWS
        # Held before the cycle's alarms, so no transaction holding an alert is open when
        # the connection drops (the embedded broker would show an aborted one's records).
        hold = cycle_start + ALERT_ROW - 2 * MACHINES
        pacer = Pacer(bootstrap, settings.topic, rows, rate=60.0, holds=(hold,))
        owned.append(pacer)
        pacer.start()
        watcher = GroupWatcher(bootstrap, settings.group_id, settings.topic, PARTITIONS)
        owned.append(watcher)
        wait_until(
            lambda: pacer.sent >= cycle_start + 60 and watcher.reached(pacer.ends(cycle_start)),
            120,
            "the previous cycle committed",
        )
        proxy.cut()
        pacer.release()
        cut_at = time.monotonic()
        seen = watch_outage(process, cut_at + OUTAGE_SECONDS)
        outage = time.monotonic() - cut_at
        proxy.restore()
        restored_at = time.monotonic()
        assert seen["alive"] and seen["live"], f"not alive during the outage: {seen}"
        assert seen["not_ready"] is not None, f"/readyz did not report the outage: {seen}"
        assert seen["unreachable_metric"] is not None, f"/metrics did not show it: {seen}"
        wait_until(lambda: process.probe("/readyz")[0] == 200, 60, "ready again")
        ends = pacer.finish(300)
        wait_until(lambda: watcher.reached(ends), 120, "every row committed after the outage")
        caught_up = time.monotonic() - restored_at
        wait_until(
            lambda: process.value("sheetbreak_broker_reachable") == 1, 30, "reachable on /metrics"
        )
        assert "lost every broker connection" in process.log_text()
        assert process.terminate() == 0, process.tail()
        got = committed_alerts(bootstrap, settings.alerts_topic)
    print(
        f"outage of {outage:.1f} s survived: not ready after {seen['not_ready']:.1f} s, "
        f"caught up {caught_up:.1f} s after the broker came back"
    )
    check_alerts(got, reference, "after the outage")


def watch_outage(process: StreamerProcess, until: float) -> dict[str, Any]:
    """Poll the process's probes and metric until ``until``; when each outage sign showed."""
    started = time.monotonic()
    seen: dict[str, Any] = {
        "alive": True,
        "live": True,
        "not_ready": None,
        "unreachable_metric": None,
    }
    while time.monotonic() < until:
        now = time.monotonic() - started
        seen["alive"] &= process.alive()
        seen["live"] &= process.probe("/healthz")[0] == 200
        status, body = process.probe("/readyz")
        if status == 503 and body.get("broker_reachable") is False and seen["not_ready"] is None:
            seen["not_ready"] = now
        samples = process.metrics()
        if (
            samples.get(("sheetbreak_broker_reachable", ())) == 0
            and samples.get(("sheetbreak_healthy", (("probe", "readiness"),))) == 0
            and seen["unreachable_metric"] is None
        ):
            seen["unreachable_metric"] = now
        time.sleep(1.0)
    return seen


# Group churn --------------------------------------------------------------------------------

JOINS = 3


def test_members_joining_and_leaving_keep_every_alert_once(
    kafka_bootstrap: str,
    unique_name: Callable[[str], str],
    scenario: Scenario,
    rows: list[dict[str, Any]],
    reference: list[Any],
) -> None:
    settings = settings_for(kafka_bootstrap, scenario.registry, unique_name, "churn")
    topics(kafka_bootstrap, settings)
    start = process_factory(kafka_bootstrap, settings)
    replayed: list[float] = []  # rows each member read back to rebuild windows

    def leave(member: StreamerProcess) -> None:
        replayed.append(member.value("sheetbreak_rows_replayed_total"))
        assert member.terminate() == 0, member.tail()

    def assignments(members: list[StreamerProcess]) -> list[float]:
        return [m.value("sheetbreak_rebalances_total", kind="assigned") for m in members]

    def leave_and_settle(leaver: StreamerProcess, members: list[StreamerProcess]) -> None:
        """Stop one member; wait until each of the others was given partitions again."""
        before = assignments(members)
        leave(leaver)
        wait_until(
            lambda: all(n > b for n, b in zip(assignments(members), before, strict=True)),
            60,
            "the group to settle after a member left",
        )

    with closing_all([]) as owned:
        members = [start("a"), start("b")]
        owned.extend(members)
        for member in members:
            member.wait_serving(START_SECONDS)
        pacer = Pacer(kafka_bootstrap, settings.topic, rows, rate=30.0)
        owned.append(pacer)
        pacer.start()
        wait_until(lambda: all(assigned(m) for m in members), 60, "both members")
        wait_until(lambda: len(pacer.ends()) == PARTITIONS, 30, "rows in every partition")
        # Newcomers have names of their own: a replica's transactional id must not be
        # shared with one still running. Each starts while the previous step finishes.
        names = [chr(ord("c") + k) for k in range(JOINS)]
        fresh = start(names[0])
        owned.append(fresh)
        for k, name in enumerate(names):
            # A member joins while the others work, and rebuilds the windows of the
            # partitions it is given; then the oldest member leaves.
            fresh.wait_serving(START_SECONDS)
            wait_until(
                lambda m=fresh: assigned(m) and m.value("sheetbreak_rows_replayed_total") > 0,
                60,
                f"{name} to join and rebuild its windows",
            )
            members.append(fresh)
            if k + 1 < JOINS:
                fresh = start(names[k + 1])
                owned.append(fresh)
            leave_and_settle(members.pop(0), members)
        ends = pacer.finish(300)
        watcher = GroupWatcher(kafka_bootstrap, settings.group_id, settings.topic, PARTITIONS)
        owned.append(watcher)
        wait_until(lambda: watcher.reached(ends), 180, "every row committed")
        settled = assignments(members)
        time.sleep(8.0)
        now = assignments(members)
        assert now == settled, f"the group kept rebalancing once it stopped changing: {now}"
        for member in members:
            leave(member)
    print(f"{JOINS} joins and {JOINS + 2} leaves; rows read back per member: {replayed}")
    check_alerts(committed_alerts(kafka_bootstrap, settings.alerts_topic), reference, "churn")


def assigned(process: StreamerProcess) -> bool:
    """Whether the member has been given its share of partitions at least once."""
    assert process.alive(), process.tail()
    return process.value("sheetbreak_rebalances_total", kind="assigned") >= 1


# Slow batches -------------------------------------------------------------------------------

POLL_INTERVAL_MS = 6000  # librdkafka's smallest: max.poll.interval.ms >= session.timeout.ms
STALL_SECONDS = 8.0
SLOW_SECONDS_PER_ROW = 0.004


def test_slow_batches_cost_the_partitions_once_and_lose_nothing(
    kafka_bootstrap: str,
    unique_name: Callable[[str], str],
    scenario: Scenario,
    rows: list[dict[str, Any]],
    reference: list[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = streamer.runner.process
    sizes: list[int] = []

    def slow_process(
        model: Any, windows: Any, messages: list[Any], max_bytes: int, now_ms: int, *rest: Any
    ) -> Any:
        # Live batches only (window rebuilds pass now_ms=0). The first one stalls past
        # max.poll.interval.ms, as a long pause would; the model stays slow after that,
        # so a batch of the whole backlog would take longer than the interval too.
        if now_ms:
            sizes.append(len(messages))
            stall = STALL_SECONDS if len(sizes) == 1 else 0.0
            time.sleep(stall + SLOW_SECONDS_PER_ROW * len(messages))
        return real(model, windows, messages, max_bytes, now_ms, *rest)

    monkeypatch.setattr(streamer.runner, "process", slow_process)
    assert SLOW_SECONDS_PER_ROW * len(rows) > POLL_INTERVAL_MS / 1000
    settings = settings_for(
        kafka_bootstrap,
        scenario.registry,
        unique_name,
        "slow",
        max_poll_interval_ms=POLL_INTERVAL_MS,
    )
    topics(kafka_bootstrap, settings)
    produce_rows(kafka_bootstrap, settings.topic, rows)
    with running(settings) as run:
        wait_until(
            lambda: run.value("sheetbreak_rows_consumed_total") >= len(rows),
            180,
            "every row consumed at the slow pace",
        )
        assignments = run.value("sheetbreak_rebalances_total", kind="assigned")
        revocations = run.value("sheetbreak_rebalances_total", kind="revoked")
        time.sleep(3.0)  # the member stays in the group once the backlog is done
        assert run.value("sheetbreak_rebalances_total", kind="assigned") == assignments
    # The stalled batch cost the member its partitions once (Kafka's rule); the batches
    # after it were bounded by their pace and never did.
    assert (assignments, revocations) == (2, 1), (assignments, revocations, sizes)
    budget_rows = POLL_INTERVAL_MS / 1000 / SLOW_SECONDS_PER_ROW
    assert max(sizes[1:]) < budget_rows, f"a batch could outlast the poll interval: {sizes}"
    print(f"slow batches: {len(sizes)} batches of at most {max(sizes[1:])} rows after the stall")
    check_alerts(committed_alerts(kafka_bootstrap, settings.alerts_topic), reference, "slow")
