"""Guarded promotion, the decision log and the registry command, through the trainer's CLI."""

import contextlib
import io
import json
import shutil

import pytest

from streamer.bundle import Registry
from streamer.simulate import PlantParams, simulate_history
from trainer.cli import main
from trainer.data import Table
from trainer.guard import Judging, Verdict, check, compare
from trainer.registry import DECISIONS_FILE, read_decisions, record_promotion, rollback_target

pytestmark = pytest.mark.unit
SAMPLE = ["--sample", "--sample-days", "4", "--sample-machines", "2", "--seed", "0"]
FIT = ["fit", *SAMPLE, "--model", "pca", "--no-progress", "--promote", "--json"]
# A threshold at the median score: alerts run for hours, so they open too early to warn.
NOISY = ["--threshold", "fixed", "--objective", "fpr", "--target-fpr", "0.5"]


def run(*args):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args), environ={})
    return code, out.getvalue(), err.getvalue()


def fit(registry, *extra):
    code, out, err = run(*FIT, "--registry", str(registry), *extra)
    return code, json.loads(out.splitlines()[-1]) if code in (0, 3) else err


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    """A noisy first model, a good candidate, a noisy one refused, then one forced."""
    registry = tmp_path_factory.mktemp("promotion") / "registry"
    steps = []
    for extra in (NOISY, [], NOISY, [*NOISY, "--force"]):
        code, result = fit(registry, *extra)
        steps.append((code, result, Registry(registry).current()))
    return registry, steps


def test_an_empty_registry_takes_the_first_candidate(history):
    _, steps = history
    code, result, current = steps[0]
    assert code == 0
    assert result["promotion"]["outcome"] == "first"
    assert current == result["version"]


def test_a_better_candidate_is_promoted_with_both_figures_recorded(history):
    registry, steps = history
    code, result, current = steps[1]
    decision = result["promotion"]
    assert code == 0 and decision["outcome"] == "promoted"
    assert current == result["version"]
    assert decision["previous"] == steps[0][1]["version"]
    mine, theirs = decision["figures"]["candidate"], decision["figures"]["current"]
    assert mine["rows"] == theirs["rows"] == decision["held_out"]["rows"] > 500
    assert decision["held_out"]["current_trained_on_them"] is False
    assert mine["breaks"] == theirs["breaks"] > 0
    assert mine["event_recall"] >= theirs["event_recall"]
    assert mine["false_alarm_episodes_per_day"] < theirs["false_alarm_episodes_per_day"]
    manifest = json.loads((registry / current / "manifest.json").read_text())
    assert manifest["promotion_check"]["accepted"] is True
    assert manifest["promotion_check"]["figures"] == decision["figures"]
    assert "## Promotion check" in (registry / current / "MODEL_CARD.md").read_text()


def test_a_worse_candidate_is_refused_and_current_is_kept(history):
    registry, steps = history
    code, result, current = steps[2]
    decision = result["promotion"]
    assert code == 3
    assert decision["outcome"] == "refused" and not result["promoted"]
    assert current == steps[1][1]["version"] == decision["current"] == decision["previous"]
    mine, theirs = decision["figures"]["candidate"], decision["figures"]["current"]
    assert mine["false_alarm_episodes_per_day"] > theirs["false_alarm_episodes_per_day"]
    assert decision["reason"] == compare(mine, theirs, 2.0)  # the guard's own words
    assert (registry / result["version"] / "model.keras").is_file()
    manifest = json.loads((registry / result["version"] / "manifest.json").read_text())
    assert manifest["promotion_check"]["accepted"] is False


def test_force_promotes_and_records_it_as_forced(history):
    _, steps = history
    code, result, current = steps[3]
    decision = result["promotion"]
    assert code == 0 and current == result["version"]
    assert decision["outcome"] == "forced" and decision["forced"] is True
    assert decision["guard_accepted"] is False


def test_the_decision_log_holds_one_line_per_decision(history):
    registry, steps = history
    lines = (registry / DECISIONS_FILE).read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["outcome"] for r in records] == ["first", "promoted", "refused", "forced"]
    assert [r["candidate"] for r in records] == [s[1]["version"] for s in steps]
    for record in records[1:]:
        assert record["rule"] and record["at"] and record["held_out"]["from"]
        assert set(record["figures"]) == {"candidate", "current"}


def test_registry_lists_shows_and_rolls_back_through_the_cli(history, tmp_path):
    source, steps = history
    registry = tmp_path / "registry"
    shutil.copytree(source, registry)
    versions = [s[1]["version"] for s in steps]
    code, out, _ = run("registry", "--registry", str(registry), "--json", "list")
    rows = json.loads(out)
    assert code == 0
    assert [r["version"] for r in rows] == versions
    assert [r["current"] for r in rows] == [False, False, False, True]
    assert [r["decision"] for r in rows] == ["first", "promoted", "refused", "forced"]
    code, out, _ = run("registry", "--registry", str(registry), "list")
    assert code == 0 and out.splitlines()[-1].startswith("* " + versions[3])
    code, out, _ = run("registry", "--registry", str(registry), "rollback")
    assert code == 0 and out.strip() == f"CURRENT: {versions[3]} -> {versions[1]}"
    assert Registry(registry).current() == versions[1]
    # The forced version was rolled away from and the refused one never served: back to the first.
    code, out, _ = run("registry", "--registry", str(registry), "rollback")
    assert code == 0 and Registry(registry).current() == versions[0]
    code, _, err = run("registry", "--registry", str(registry), "rollback")
    assert code == 4 and "name one with --to" in err
    code, _, err = run("registry", "--registry", str(registry), "rollback", "--to", "nope")
    assert code == 4 and "no complete version 'nope'" in err
    code, out, _ = run("registry", "--registry", str(registry), "--json", "show", versions[1])
    shown = json.loads(out)
    assert code == 0 and shown["manifest"]["version"] == versions[1]
    assert [d["outcome"] for d in shown["decisions"]] == [
        "promoted",
        "refused",
        "forced",
        "rolled back",
        "rolled back",
    ]
    assert read_decisions(Registry(registry))[-1]["current"] == versions[0]


def test_a_candidate_with_other_features_is_refused_unless_forced(history, tmp_path):
    source, steps = history
    registry = tmp_path / "registry"
    shutil.copytree(source, registry)
    code, result = fit(registry, "--categorical-mode", "onehot")
    assert code == 3
    assert "features differ" in result["promotion"]["reason"]
    assert Registry(registry).current() == steps[3][1]["version"]


def test_a_current_bundle_that_cannot_be_judged_refuses_the_candidate(history, tmp_path):
    source, steps = history
    registry = Registry(tmp_path / "registry")
    shutil.copytree(source, registry.root)
    current = registry.current()
    (registry.root / current / "model.keras").write_bytes(b"truncated")
    candidate = registry.root / steps[1][1]["version"]
    test_from = json.loads((candidate / "manifest.json").read_text())["data"]["split"]["test_from"]
    frame = simulate_history(PlantParams.load(), machines=2, days=4.0, seed=0)
    frame = frame.rename(columns={"ts": "time", "break": "label"})
    table = Table(frame=frame, sensors=tuple(c for c in frame.columns if c.startswith("x")))
    verdict = check(registry, candidate, table, test_from, Judging())
    assert not verdict.accepted
    assert f"the current bundle {current} cannot be judged" in verdict.reason
    assert verdict.figures["candidate"]["rows"] > 500
    verdict = check(registry, candidate, table, None, Judging())
    assert not verdict.accepted and "chronological" in verdict.reason


@pytest.mark.parametrize(
    ("mine", "theirs", "accepted"),
    [
        ((0.8, 1.0), (0.6, 1.0), True),
        ((0.6, 1.0), (0.6, 1.0), True),
        ((0.6, 0.5), (0.6, 1.0), True),
        ((0.6, 1.5), (0.6, 1.0), False),
        ((0.4, 0.0), (0.6, 3.0), False),
        ((0.8, 1.9), (0.6, 0.5), True),
        ((0.8, 2.5), (0.6, 0.5), False),
        ((0.8, 2.5), (0.6, 3.0), True),
        ((None, 0.5), (None, 0.5), True),
    ],
)
def test_the_rule_puts_breaks_warned_first_and_caps_false_alarms(mine, theirs, accepted):
    def figures(pair):
        return {"event_recall": pair[0], "false_alarm_episodes_per_day": pair[1]}

    assert (compare(figures(mine), figures(theirs), budget=2.0) is None) == accepted


def test_force_is_logged_as_a_warning_and_kept_in_the_log(tmp_path, caplog):
    registry = Registry(tmp_path / "reg")
    for name in ("v1", "v2"):
        registry.write(name, lambda folder: (folder / "manifest.json").write_text("{}"))
    registry.set_current("v1")
    refused = Verdict(False, "the candidate warns fewer breaks", "v1")
    record = record_promotion(registry, "v2", refused.to_dict(), force=True)
    assert registry.current() == "v2"
    assert record is not None and record["outcome"] == "forced"
    assert "by --force although the guard refused it" in caplog.text
    assert record_promotion(registry, "v1", None, force=False) is None


def test_rollback_skips_versions_rolled_away_from():
    decisions = [
        {"outcome": "first", "current": "a"},
        {"outcome": "promoted", "current": "b"},
        {"outcome": "refused", "current": "b"},
        {"outcome": "promoted", "current": "c"},
        {"outcome": "rolled back", "previous": "c", "current": "b"},
    ]

    class Fake(Registry):
        def current(self):
            return "b"

        def versions(self):
            return ["a", "b", "c"]

    assert rollback_target(Fake("unused"), decisions) == "a"


def test_force_needs_promote(capsys):
    assert main(["fit", *SAMPLE, "--force"], environ={}) == 2
    assert "--force only makes sense with --promote" in capsys.readouterr().err
