"""The decider on plain lists: thresholds, episode changes, judged breaks, resumed machines,
due checkpoints and a reload, with no windows, messages or broker."""

import itertools
import math

import numpy as np
import pytest

from streamer.calibrate import Calibration
from streamer.checkpoint import Checkpoint
from streamer.decider import Coordinate, Decider
from streamer.episodes import EpisodePolicy, EpisodeState, Step
from streamer.leadtime import Verdict, WarningWindow

pytestmark = pytest.mark.unit
MIN = 60_000


def fixed(threshold: float = 1.0, clear_rows: int = 2) -> Decider:
    return Decider(threshold, EpisodePolicy(clear_rows), WarningWindow(2.0, 20.0), version="v1")


def adaptive(version: str = "v1") -> Decider:
    calibration = Calibration(np.linspace(0.0, 4.0, 9), rate=0.2, minutes=60.0, min_weight=3.0)
    return Decider(1.0, EpisodePolicy(2), WarningWindow(2.0, 20.0), calibration, version)


def scored(machine: str, minute: int, position: int) -> Step:
    return Step(machine, minute * MIN, position=position)


def renumbered(steps: list[Step], first: int) -> list[Step]:
    """The steps of a batch whose first scored row is row ``first`` of the whole."""
    return [
        Step(s.machine, s.ts_ms, s.position - first if s.position >= 0 else -1, s.reason)
        for s in steps
    ]


def statuses(decision) -> list[tuple[str, str, int]]:
    return [(c.machine, c.transition.status, c.ts_ms // MIN) for c in decision.changes]


def test_one_batch_gives_each_row_its_threshold_and_each_machine_its_episode_changes():
    decider = fixed(threshold=1.0)
    steps = [scored("A", 0, 0), scored("B", 0, 1), scored("A", 2, 2), scored("B", 2, 3)]
    steps += [scored("A", 4, 4), scored("A", 6, 5), Step("B", 7 * MIN, reason="break")]
    scores = np.array([1.5, 0.1, 6.0, 2.0, 0.2, 0.2])
    decision = decider.decide(steps, scores)
    np.testing.assert_array_equal(decision.thresholds, np.ones(6))
    assert statuses(decision) == [
        ("A", "open", 0),
        ("A", "update", 2),  # 6x the threshold: critical
        ("B", "open", 2),
        ("A", "resolved", 6),  # two rows under the threshold
        ("B", "resolved", 7),  # the break ends B's episode ...
    ]
    assert decision.breaks == [Verdict(True, 300.0)]  # ... which opened 5 minutes before it
    cut = decision.changes[-1]
    assert (cut.position, cut.score, cut.threshold) == (-1, 2.0, 1.0)
    assert cut.transition.reason == "break"


def test_state_is_made_on_need_and_dropped_with_the_machine():
    decider = fixed(threshold=5.0)
    decision = decider.decide([scored("A", 0, 0), Step("A", MIN, reason="gap")], np.array([1.0]))
    assert decision.changes == [] and decider.machines == {}
    decider.decide([scored("A", 2, 0), scored("B", 2, 1)], np.array([9.0, 9.0]))
    assert sorted(decider.machines) == ["A", "B"]
    decider.keep({"B"})
    assert list(decider.machines) == ["B"]
    decider.start("B")  # the windows started B afresh: so do its decisions
    assert decider.machines == {}


def test_adaptive_thresholds_follow_each_machine_and_a_start_forgets_them():
    decider = adaptive()
    steps = [scored("A", m, k) for k, m in enumerate(range(0, 40, 2))]
    low = decider.decide(steps, np.full(20, 0.5)).thresholds
    steps = [scored("B", m, k) for k, m in enumerate(range(0, 40, 2))]
    high = decider.decide(steps, np.full(20, 3.0)).thresholds
    assert high[-1] > low[-1], "each machine's threshold follows its own scores"
    decider.start("A")
    again = decider.decide([scored("A", 50, 0)], np.array([0.5])).thresholds
    assert again[0] == pytest.approx(low[0])  # back to the prior


def test_a_resumed_machine_skips_what_its_checkpoint_holds():
    live = adaptive()
    steps = [scored("A", m, k) for k, m in enumerate(range(0, 20, 2))]
    scores = np.array([0.5, 0.6, 3.5, 3.6, 0.4, 0.5, 0.6, 0.7, 3.9, 0.5])
    offsets = list(range(100, 110))
    whole = live.decide(steps, scores, offsets)
    # A checkpoint as of the sixth row (offset 105, minute 10): histogram, episode, threshold.
    first = adaptive()
    head = first.decide(steps[:6], scores[:6], offsets[:6])
    state = first.machines["A"]
    checkpoint = Checkpoint(
        "A", 105, "v1", state.calibration, 10 * MIN, state.episode, state.threshold
    )
    resumed = adaptive()
    resumed.start("A", checkpoint)
    # A rebuild replays rows from offset 103 on: those up to the checkpoint change nothing.
    tail = resumed.decide(renumbered(steps[3:], 3), scores[3:], offsets[3:])
    np.testing.assert_allclose(tail.thresholds[3:], whole.thresholds[6:], rtol=1e-12)
    assert statuses(tail) == [s for s in statuses(whole) if s[2] > 10]
    assert statuses(head) + statuses(tail) == statuses(whole)
    # Another model's checkpoint is not taken up.
    other = adaptive("v2")
    other.start("A", checkpoint)
    assert other.machines == {}


def test_checkpoints_fall_due_every_so_many_minutes_of_a_machines_rows():
    decider = adaptive()
    due = []
    for minute in range(0, 70, 2):
        decider.decide([scored("A", minute, 0)], np.array([0.5]), [minute])
        last = {"A": Coordinate(1, minute, minute * MIN), "Z": Coordinate(1, minute, 0)}
        due += decider.due(last, every_minutes=30.0, partitions=2)
    assert [(p, c.offset, c.ts_ms // MIN) for p, c in due] == [(1, 30, 30), (1, 60, 60)]
    assert all(c.version == "v1" and c.episode == EpisodeState() for _, c in due)
    assert decider.due({"A": Coordinate(2, 90, 90 * MIN)}, 30.0, partitions=2) == []
    assert decider.due({"A": Coordinate(0, 90, 90 * MIN)}, 30.0, partitions=0) == []
    assert fixed().due({"A": Coordinate(0, 90, 90 * MIN)}, 30.0, partitions=2) == []


def test_a_reload_keeps_open_episodes_and_restarts_thresholds_from_the_new_prior():
    old = adaptive("v1")
    old.decide([scored("A", m, k) for k, m in enumerate(range(0, 20, 2))], np.full(10, 3.9))
    assert old.machines["A"].episode.started_ms is not None
    new = adaptive("v2")
    new.carry_episodes(old)
    state = new.machines["A"]
    assert state.episode == old.machines["A"].episode and state.openings
    assert state.calibration is None and math.isnan(state.threshold)
    # The episode ends under the new model's decisions, once, as one resolved change.
    decision = new.decide([scored("A", 22, 0), scored("A", 24, 1)], np.array([0.0, 0.0]))
    assert statuses(decision) == [("A", "resolved", 24)]


def test_rows_in_any_batches_decide_alike():
    rng = np.random.default_rng(5)
    steps = [scored(f"M{k % 3}", k, k) for k in range(120)]
    for k in (30, 71):
        steps.insert(k, Step(f"M{k % 3}", k * MIN + 1, reason="break"))
    scores = rng.gamma(2.0, 0.6, 120)
    offsets = list(range(120))
    whole = adaptive().decide(steps, scores, offsets)
    decider, changes, breaks = adaptive(), [], []
    for lo, hi in itertools.pairwise([0, 17, 40, 41, 99, len(steps)]):
        piece = steps[lo:hi]
        rows = [s.position for s in piece if s.position >= 0]
        first, count = (rows[0], len(rows)) if rows else (0, 0)
        part = decider.decide(
            renumbered(piece, first), scores[first : first + count], offsets[first : first + count]
        )
        changes += statuses(part)
        breaks += part.breaks
    assert changes == statuses(whole) and breaks == whole.breaks
