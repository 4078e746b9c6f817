"""The dev file replayed through a broker scores exactly as ``trainer evaluate`` scores it.

Training and serving share one preprocessing and one adaptive threshold; this is the proof
on real data: every row both sides score gets the same score and the same threshold, and
both sides score the same rows.
"""

import contextlib
import io
import json

import numpy as np
import pandas as pd
import pytest
from confluent_kafka import TopicPartition
from fault_helpers import GroupWatcher
from stream_helpers import produce_rows, running, settings_for, wait_until

import streamer.runner
from streamer.broker import create_topics
from streamer.produce import replay_rows
from trainer.cli import main as trainer_main

pytestmark = [pytest.mark.integration, pytest.mark.data]
MACHINE = "machine-1"


def _trainer(*args):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = trainer_main(list(args), environ={})
    assert code == 0, err.getvalue()[-2000:]
    return json.loads(out.getvalue().splitlines()[-1])


@pytest.fixture
def recorded(monkeypatch):
    """(machine, row time in ms) -> (score, threshold) of every row the streamer scores."""
    scores: dict[tuple[str, int], tuple[float, float]] = {}
    real = streamer.runner.process

    def recording(model, windows, messages, *args, **kwargs):
        outcome = real(model, windows, messages, *args, **kwargs)
        for position, index in enumerate(outcome.scored):
            row = json.loads(messages[index].value())
            scores[row["machine_id"], int(row["ts"])] = (
                float(outcome.scores[position]),
                float(outcome.thresholds[position]),
            )
        return outcome

    monkeypatch.setattr(streamer.runner, "process", recording)
    return scores


def test_streamer_scores_the_dev_file_as_trainer_evaluate_does(
    dev_csv, kafka_bootstrap, unique_name, tmp_path, recorded
):
    registry = tmp_path / "registry"
    # fit's default method, whatever the rule chose: what a plant gets out of the box.
    _trainer(
        "fit", "--data", str(dev_csv), "--epochs", "2", "--no-progress",
        "--registry", str(registry), "--promote", "--json",
    )  # fmt: skip
    scores_csv = tmp_path / "scores.csv"
    _trainer(
        "evaluate", "--data", str(dev_csv), "--registry", str(registry),
        "--scores-out", str(scores_csv), "--json",
    )  # fmt: skip
    judged = pd.read_csv(scores_csv).dropna(subset=["score"])  # rows without a full window
    stamps = pd.to_datetime(judged["time"], utc=True).to_numpy(dtype="datetime64[ms]")
    pairs = zip(judged["score"].tolist(), judged["threshold"].tolist(), strict=True)
    expected = dict(zip(stamps.astype(np.int64).tolist(), pairs, strict=True))

    rows = list(replay_rows(dev_csv, MACHINE))
    settings = settings_for(kafka_bootstrap, registry, unique_name, "dev")
    create_topics(
        kafka_bootstrap, {settings.topic: 1, settings.alerts_topic: 1, settings.dlq_topic: 1}
    )
    produce_rows(kafka_bootstrap, settings.topic, rows)
    # Committed offsets, not a count of rows read: a transaction that failed under load is
    # read again, so the count can pass the number of rows before the last one is scored.
    watcher = GroupWatcher(kafka_bootstrap, settings.group_id, settings.topic, 1)
    _, end = watcher.consumer.get_watermark_offsets(TopicPartition(settings.topic, 0), 10.0)
    with running(settings) as run, contextlib.closing(watcher):
        wait_until(
            lambda: (
                run.value("sheetbreak_rows_consumed_total") >= len(rows)
                and watcher.reached({0: end})
            ),
            300,
            f"the streamer committing {len(rows)} replayed rows",
        )
    served = {ts: score for (machine, ts), score in recorded.items() if machine == MACHINE}

    both = sorted(set(served) & set(expected))
    print(
        f"dev replay: {len(rows)} rows, streamer scored {len(served)}, "
        f"trainer evaluate scored {len(expected)}, compared {len(both)}"
    )
    # Break rows and the lookback after each gap are left unscored by both, the same way.
    assert set(served) == set(expected)
    ours = np.array([served[ts] for ts in both])
    theirs = np.array([expected[ts] for ts in both])
    # Every part reads the same history and the model runs on batches of one size, so the
    # scores agree to the bit (the CSV's decimal text is exact for float64 at 17 digits).
    np.testing.assert_allclose(ours[:, 0], theirs[:, 0], rtol=1e-12, atol=0)
    # The bundle carries the adaptive threshold (fit's default): the streamer's per-machine
    # history gives each row the threshold the trainer's table gives it.
    assert np.ptp(theirs[:, 1]) > 0
    np.testing.assert_allclose(ours[:, 1], theirs[:, 1], rtol=1e-4, atol=1e-6)
    alerts = ours[:, 0] >= ours[:, 1]
    assert np.array_equal(alerts, theirs[:, 0] >= theirs[:, 1])
    print(
        f"dev replay: largest score difference {np.max(np.abs(ours[:, 0] - theirs[:, 0])):.3g}, "
        f"threshold difference {np.max(np.abs(ours[:, 1] - theirs[:, 1])):.3g}; "
        f"{int(alerts.sum())} alert rows on both sides"
    )
