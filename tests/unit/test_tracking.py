"""The pace behind the progress bar's ETA: start-up and the fast collection before updates are left out."""

import pytest

from maddpg.tracking import Pace


def test_the_pace_starts_at_the_first_episode_not_at_start_up():
    pace = Pace()
    pace.add(30.0, 1, 25, 0)  # 30 s of start-up and compile before the first episode
    assert pace.rates() is None
    pace.add(31.0, 41, 1025, 0)
    assert pace.rates() == pytest.approx((40.0, 1000.0, 0.0))  # not 41 episodes in 31 s


def test_the_pace_starts_again_when_updates_begin():
    pace = Pace()
    for t in range(5):  # collecting alone: 100 episodes/s
        pace.add(float(t), 100 * t, 2500 * t, 0)
    assert not pace.updating and pace.rates()[0] == pytest.approx(100.0)
    pace.add(5.0, 500, 12500, 1)
    assert pace.updating and pace.rates() is None
    for t in range(6, 10):  # training at the update ratio: 20 episodes/s
        pace.add(float(t), 500 + 20 * (t - 5), 12500 + 500 * (t - 5), 1 + 5 * (t - 5))
    assert pace.rates() == pytest.approx((20.0, 500.0, 5.0))


def test_the_pace_is_that_of_the_last_window():
    pace = Pace(window=10.0)
    pace.add(0.0, 0, 0, 1)
    pace.add(1.0, 10, 250, 2)
    for t in range(2, 40):  # the machine got slower: 1 episode/s from t = 20
        pace.add(float(t), 10 * min(t, 20) + max(t - 20, 0), 0, 2)
    assert pace.rates()[0] == pytest.approx(1.0)
