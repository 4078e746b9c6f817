"""The streamer end to end on a real broker: alerts, dead letters, restarts, joins, reloads."""

from __future__ import annotations

import dataclasses
import shutil

import orjson
import pytest
from stream_helpers import (
    alerts_of,
    build_scenario,
    copy_bundle,
    produce_raw,
    produce_rows,
    read_all,
    running,
    scenario_rows,
    settings_for,
    wait_until,
)

from streamer.alerts import CONTRACT_FIELDS
from streamer.broker import create_topics
from streamer.bundle import Registry
from streamer.rows import parse_ts

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    return build_scenario(tmp_path_factory.mktemp("scenario"))


@pytest.fixture
def setup(kafka_bootstrap, unique_name, scenario):
    def make(tag="run", instance="a", **overrides):
        registry = overrides.pop("registry", scenario.registry)
        settings = settings_for(kafka_bootstrap, registry, unique_name, tag, instance, **overrides)
        create_topics(
            kafka_bootstrap, {settings.topic: 4, settings.alerts_topic: 1, settings.dlq_topic: 1}
        )
        return settings

    return make


@pytest.mark.smoke
def test_a_drifting_machine_warns_once_before_its_break_normal_ones_stay_quiet(
    kafka_bootstrap, setup, scenario
):
    settings = setup()
    rows = scenario_rows(scenario, normal_machines=3, drift_machines=1)
    with running(settings) as run:
        produce_rows(kafka_bootstrap, settings.topic, rows)
        wait_until(
            lambda: run.value("sheetbreak_rows_consumed_total") >= len(rows),
            60,
            "every row consumed",
        )
    alerts = alerts_of(read_all(kafka_bootstrap, settings.alerts_topic))
    assert {a["machine_id"] for a in alerts} == {"D-1"}
    opens = [a for a in alerts if a["status"] == "open"]
    assert len(opens) == 1
    assert set(opens[0]) >= CONTRACT_FIELDS
    break_ts = max(r["ts"] for r in rows if r["break"])
    assert parse_ts(opens[0]["ts"]) < break_ts
    assert opens[0]["model_version"] == "v1"
    assert len(opens[0]["top_sensors"]) == 3
    assert {s["sensor"] for s in opens[0]["top_sensors"]} <= {f"x{i}" for i in range(1, 21)}
    assert [a["status"] for a in alerts][-1] == "resolved"
    assert alerts[-1]["reason"] == "break"
    assert run.value("sheetbreak_rows_scored_total") > 0.8 * len(rows)
    assert run.value("sheetbreak_alerts_total", status="open") == 1


@pytest.mark.smoke
def test_malformed_rows_are_dead_lettered_and_good_rows_still_scored(
    kafka_bootstrap, setup, scenario
):
    settings = setup(max_row_bytes=8192)
    good = scenario_rows(scenario, normal_machines=2, drift_machines=0)
    first = good[0]
    bad = {
        "invalid_json": (b"N-1", b"{not json"),
        "missing_machine_id": (None, orjson.dumps({"ts": 1, "values": {}})),
        "missing_timestamp": (b"N-9", orjson.dumps({"machine_id": "N-9", "values": {}})),
        "bad_timestamp": (b"N-9", orjson.dumps({"machine_id": "N-9", "ts": "later", "values": {}})),
        "non_numeric": (
            b"N-9",
            orjson.dumps({"machine_id": "N-9", "ts": 5, "values": {"x1": "hot"}}),
        ),
        "too_large": (b"N-9", b'{"pad": "' + b"x" * 9000 + b'"}'),
        "out_of_order": (b"N-1", orjson.dumps({**first, "ts": first["ts"]})),
        "incompatible_sensors": (
            b"N-8",
            orjson.dumps({"machine_id": "N-8", "ts": 5, "values": {"flow": 1.0}}),
        ),
        "key_mismatch": (b"N-2", orjson.dumps({**first, "machine_id": "N-3"})),
    }
    half = len(good) // 2
    with running(settings) as run:
        produce_rows(kafka_bootstrap, settings.topic, good[:half])
        produce_raw(kafka_bootstrap, settings.topic, list(bad.values()))
        produce_rows(kafka_bootstrap, settings.topic, good[half:])
        total = len(good) + len(bad)
        wait_until(
            lambda: run.value("sheetbreak_rows_consumed_total") >= total, 60, "every row consumed"
        )
    dead = read_all(kafka_bootstrap, settings.dlq_topic)
    reasons = {dict(m.headers())["dlq.reason"].decode(): m for m in dead}
    assert set(reasons) == set(bad)
    for reason, message in reasons.items():
        headers = dict(message.headers())
        assert message.value() == bad[reason][1]
        assert headers["dlq.source.topic"].decode() == settings.topic
        assert int(headers["dlq.source.offset"]) >= 0
        assert run.value("sheetbreak_rows_dead_lettered_total", reason=reason) == 1
    warmup = 2 * 4  # each machine's first lookback-1 rows fill its window
    assert run.value("sheetbreak_rows_scored_total") == len(good) - warmup


def uninterrupted_alert_ids(kafka_bootstrap, setup, rows):
    """The alert ids of one streamer that sees every row without interruption, sorted."""
    reference = setup("ref", "ref")
    with running(reference) as run:
        produce_rows(kafka_bootstrap, reference.topic, rows)
        wait_until(
            lambda: run.value("sheetbreak_rows_consumed_total") >= len(rows), 60, "the reference"
        )
    return sorted(
        a["alert_id"] for a in alerts_of(read_all(kafka_bootstrap, reference.alerts_topic))
    )


@pytest.mark.smoke
def test_a_restarted_streamer_neither_loses_nor_duplicates_alerts(kafka_bootstrap, setup, scenario):
    rows = scenario_rows(scenario, normal_machines=3, drift_machines=2)
    expected = uninterrupted_alert_ids(kafka_bootstrap, setup, rows)
    assert len(expected) >= 4
    settings = setup("run", "a")
    # Stop in the middle of the drifting machines' episodes (their last rows ramp).
    cut = len(rows) - 2 * 5
    with running(settings) as run:
        produce_rows(kafka_bootstrap, settings.topic, rows[:cut])
        wait_until(lambda: run.value("sheetbreak_rows_consumed_total") >= cut, 60, "the first part")
    with running(settings) as run:
        produce_rows(kafka_bootstrap, settings.topic, rows[cut:])
        wait_until(
            lambda: run.value("sheetbreak_rows_consumed_total") >= len(rows) - cut, 60, "the rest"
        )
        assert run.value("sheetbreak_rows_replayed_total") > 0
    got = [a["alert_id"] for a in alerts_of(read_all(kafka_bootstrap, settings.alerts_topic))]
    assert len(got) == len(set(got)), "an alert was published twice"
    assert sorted(got) == sorted(expected)


def test_a_joining_streamer_takes_over_partitions_after_rebuilding_windows(
    kafka_bootstrap, setup, scenario
):
    rows = scenario_rows(scenario, normal_machines=7, drift_machines=1)
    expected = uninterrupted_alert_ids(kafka_bootstrap, setup, rows)
    first = setup("run", "a")
    second = dataclasses.replace(first, instance_id="b")
    half = len(rows) // 2
    with running(first) as a:
        produce_rows(kafka_bootstrap, first.topic, rows[:half])
        wait_until(lambda: a.value("sheetbreak_rows_consumed_total") >= half, 60, "first half")
        with running(second) as b:
            wait_until(
                lambda: b.streamer.assigned and len(a.streamer.assigned) < 4,
                60,
                "the second member to get partitions",
            )
            produce_rows(kafka_bootstrap, first.topic, rows[half:])
            wait_until(
                lambda: (
                    a.value("sheetbreak_rows_consumed_total")
                    + b.value("sheetbreak_rows_consumed_total")
                    >= len(rows)
                ),
                60,
                "the second half",
            )
            assert b.value("sheetbreak_rows_replayed_total") > 0
            assert b.value("sheetbreak_rows_scored_total") > 0
    got = sorted(a["alert_id"] for a in alerts_of(read_all(kafka_bootstrap, first.alerts_topic)))
    assert got == expected


def test_a_new_bundle_is_used_without_restart_and_a_broken_one_refused(
    kafka_bootstrap, setup, scenario, tmp_path
):
    registry = Registry(tmp_path / "registry")
    source = scenario.registry / "v1"
    copy_bundle(source, registry, "v1")
    registry.set_current("v1")
    settings = setup(registry=registry.root)
    rows = scenario_rows(scenario, normal_machines=1, drift_machines=1)
    half = len(rows) // 2
    with running(settings) as run:
        produce_rows(kafka_bootstrap, settings.topic, rows[:half])
        wait_until(lambda: run.value("sheetbreak_rows_consumed_total") >= half, 60, "rows")
        broken = copy_bundle(source, registry, "v2-broken")
        (broken / "model.keras").write_bytes(b"not a model")
        registry.set_current("v2-broken")
        wait_until(
            lambda: run.value("sheetbreak_model_reloads_total", result="refused") == 1,
            30,
            "the broken bundle to be refused",
        )
        assert run.value("sheetbreak_model_info", version="v1") == 1
        copy_bundle(source, registry, "v3")
        registry.set_current("v3")
        wait_until(
            lambda: run.value("sheetbreak_model_info", version="v3") == 1,
            30,
            "the new bundle to be used",
        )
        produce_rows(kafka_bootstrap, settings.topic, rows[half:])
        wait_until(lambda: run.value("sheetbreak_rows_consumed_total") >= len(rows), 60, "the rest")
    alerts = alerts_of(read_all(kafka_bootstrap, settings.alerts_topic))
    assert {a["model_version"] for a in alerts} == {"v3"}
    shutil.rmtree(registry.root)
