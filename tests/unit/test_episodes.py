"""Alert episodes from alert flags, with hysteresis and segment boundaries."""

import numpy as np
import pytest

from streamer.episodes import EpisodePolicy, episode_starts

pytestmark = pytest.mark.unit


def starts(flags, segments=None, clear=3):
    flags = np.array(flags, dtype=bool)
    segments = np.zeros(flags.size, int) if segments is None else np.array(segments)
    return episode_starts(flags, segments, EpisodePolicy(clear)).tolist()


def test_consecutive_alert_rows_are_one_episode():
    assert starts([0, 1, 1, 1, 0, 0, 0, 0]) == [1]


def test_a_flicker_shorter_than_the_clear_rows_stays_in_the_episode():
    assert starts([1, 0, 1, 0, 0, 1, 0, 0, 0, 1]) == [0, 9]


def test_clear_rows_one_is_plain_runs():
    assert starts([1, 0, 1, 1, 0, 1], clear=1) == [0, 2, 5]


def test_a_segment_boundary_closes_the_episode():
    assert starts([1, 1, 1, 1], segments=[0, 0, 1, 1]) == [0, 2]


def test_no_alerts_no_episodes():
    assert starts([0, 0, 0]) == []
    assert starts([]) == []
