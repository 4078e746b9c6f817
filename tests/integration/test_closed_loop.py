"""The whole loop on one broker: archive the stream, retrain from it, promote, serve, shadow.

Simulated machines produce a few days of rows; the archiver writes them to Parquet; the
trainer fits from that archive and promotes through its guard (a better candidate taken,
a worse one refused); a running streamer picks the promoted bundle up without a restart
and scores the refused one in shadow, which shows in its metrics only.
"""

import contextlib
import io
import itertools
import json
import shutil

import pyarrow.dataset as ds
import pytest
from stream_helpers import (
    alerts_of,
    archiving,
    produce_rows,
    read_all,
    running,
    settings_for,
    wait_until,
)

from streamer.archive_settings import ArchiveSettings
from streamer.broker import create_topics
from streamer.bundle import Registry
from streamer.settings import KafkaSettings
from streamer.simulate import PlantParams, iter_rows
from trainer.cli import main as trainer_main

pytestmark = pytest.mark.integration
MACHINES = 3
HISTORY_DAYS = 4.0
START = "2026-03-01T00:00:00Z"
FIT = ["fit", "--model", "pca", "--no-progress", "--promote", "--json"]
# A threshold at the median score: episodes run for hours and open too early to warn, so
# such a candidate warns no break and raises many false alarms (a worse model, reliably).
NOISY = ["--threshold", "fixed", "--objective", "fpr", "--target-fpr", "0.5"]


def _history(params):
    """A few simulated days of several machines, as contract rows in time order."""
    count = int(HISTORY_DAYS * 86_400 / params.interval_seconds) * MACHINES
    return list(itertools.islice(iter_rows(params, machines=MACHINES, seed=3, start=START), count))


def _archived_rows(root):
    return ds.dataset(root, format="parquet", partitioning="hive").count_rows()


def _fit(archive, registry, *extra):
    """``python -m trainer fit --archive ...`` in-process: exit code and its JSON result."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = trainer_main(
            [*FIT, "--archive", str(archive), "--registry", str(registry), *extra], environ={}
        )
    assert code in (0, 3), f"trainer fit failed with {code}: {err.getvalue()[-2000:]}"
    return code, json.loads(out.getvalue().splitlines()[-1])


def test_archive_retrain_promote_and_shadow_without_a_restart(
    kafka_bootstrap, unique_name, tmp_path
):
    params = PlantParams.load()
    history = _history(params)
    archive, registry, candidate = tmp_path / "archive", tmp_path / "registry", tmp_path / "cand"
    settings = settings_for(
        kafka_bootstrap, registry, unique_name, "loop", shadow=candidate, reload_seconds=0.3
    )
    create_topics(
        kafka_bootstrap,
        {settings.topic: 4, settings.alerts_topic: 1, settings.dlq_topic: 1},
    )
    produce_rows(kafka_bootstrap, settings.topic, history)

    archiver = ArchiveSettings(
        KafkaSettings(kafka_bootstrap),
        str(archive),
        settings.topic,
        unique_name("archiver"),
        flush_rows=2_000,
        flush_seconds=1.0,
        session_timeout_ms=6000,
        poll_seconds=0.2,
        metrics_port=None,
    )
    with archiving(archiver):
        wait_until(
            lambda: archive.is_dir() and _archived_rows(archive) == len(history),
            120,
            f"{len(history)} rows in the archive",
        )

    # A first, noisy model serves; a better one trained on the same archive replaces it.
    code, first = _fit(archive, registry, *NOISY)
    assert code == 0 and first["promotion"]["outcome"] == "first"
    with running(settings) as streamer:
        wait_until(
            lambda: streamer.value("sheetbreak_rows_scored_total") > len(history) / 2,
            120,
            "the streamer scoring the history",
        )
        code, better = _fit(archive, registry)
        assert code == 0 and better["promotion"]["outcome"] == "promoted", better["promotion"]
        wait_until(
            lambda: streamer.streamer.model.bundle.version == better["version"],
            30,
            "the running streamer to load the promoted bundle",
        )

        # A worse candidate is refused; the current pointer stays, and it runs in shadow.
        code, worse = _fit(archive, registry, *NOISY)
        assert code == 3 and worse["promotion"]["outcome"] == "refused", worse["promotion"]
        assert Registry(registry).current() == better["version"]
        shutil.copytree(registry / worse["version"], candidate)
        version = worse["version"]
        wait_until(
            lambda: streamer.value("sheetbreak_shadow_threshold", model_version=version) > 0,
            30,
            "the shadow candidate loading",
        )
        more = list(
            itertools.islice(
                iter_rows(params, machines=MACHINES, seed=4, start="2026-03-10T00:00:00Z"),
                600,
            )
        )
        produce_rows(kafka_bootstrap, settings.topic, more)
        wait_until(
            lambda: (
                streamer.value(
                    "sheetbreak_shadow_reconstruction_error_count", model_version=version
                )
                > 0
            ),
            60,
            "shadow scores of the candidate",
        )
        assert streamer.streamer.model.bundle.version == better["version"]

    published = {
        a["model_version"] for a in alerts_of(read_all(kafka_bootstrap, settings.alerts_topic))
    }
    assert version not in published, "a shadow candidate's alert reached operators"
    assert better["version"] in published or first["version"] in published
    decisions = [
        json.loads(line)["outcome"]
        for line in (registry / "decisions.jsonl").read_text().splitlines()
    ]
    assert decisions == ["first", "promoted", "refused"]
