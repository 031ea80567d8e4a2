"""TensorBoard event files: the tags and steps TensorBoard reads back, and a resumed run's events appended once."""

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.util import tensor_util

from maddpg.episodes import Episode
from maddpg.telemetry.summaries import EVENT_FILES, RunSummaries, drop_events_after


def scalars(logdir) -> dict[str, list[tuple[int, float]]]:
    """What the event files hold, as TensorBoard reads them: tag -> [(step, value)] in file order (without
    TensorBoard's own purge of steps that go back, which would hide duplicates)."""
    acc = EventAccumulator(str(logdir), size_guidance={"tensors": 0}, purge_orphaned_data=False)
    acc.Reload()
    return {tag: [(e.step, float(tensor_util.make_ndarray(e.tensor_proto))) for e in acc.Tensors(tag)]
            for tag in acc.Tags()["tensors"]}


def write_life(logdir, start, episodes, agents=("agent_0", "agent_1")):
    """One life of a run: `episodes` episodes of 25 steps after `start`, losses every 100 steps."""
    s = RunSummaries(logdir, agents, start)
    for k in range(1, episodes + 1):
        step = start + 25 * k
        s.episode(step, Episode(float(-step), np.array([-step / 2, -step / 2]), 25))
        if step % 100 == 0:
            s.losses(step, {"q_loss": np.array([1.0, 2.0]), "p_loss": np.array([3.0, 4.0]), "q": np.array([5.0, 6.0])})
    s.pace(start + 25 * episodes, 1234.0, 12.0)
    return s


def test_tags_steps_and_values_are_what_tensorboard_reads(tmp_path):
    write_life(tmp_path, 0, 8).close()
    got = scalars(tmp_path)
    assert got["charts/episode_reward"] == [(25 * k, -25.0 * k) for k in range(1, 9)]
    assert got["charts/agent_reward/agent_1"] == [(25 * k, -12.5 * k) for k in range(1, 9)]
    assert got["losses/critic_loss/agent_0"] == [(100, 1.0), (200, 1.0)]
    assert got["losses/actor_loss/agent_1"] == [(100, 4.0), (200, 4.0)]
    assert got["losses/q_value/agent_1"] == [(100, 6.0), (200, 6.0)]
    assert got["charts/env_steps_per_s"] == [(200, 1234.0)] and got["charts/updates_per_s"] == [(200, 12.0)]


def test_episodes_that_end_at_one_step_are_one_row_their_mean(tmp_path):
    s = RunSummaries(tmp_path, ["a", "b"], 0)
    for step, totals in ((25, [-1.0, -3.0, -8.0]), (50, [-2.0]), (75, [4.0, 6.0])):
        for total in totals:
            s.episode(step, Episode(total, np.array([total, 0.0]), 25))
    s.close()
    got = scalars(tmp_path)
    assert got["charts/episode_reward"] == [(25, -4.0), (50, -2.0), (75, 5.0)]
    assert got["charts/agent_reward/b"] == [(25, 0.0), (50, 0.0), (75, 0.0)]


def test_flush_puts_every_row_on_disk_before_close(tmp_path):
    s = write_life(tmp_path, 0, 4)
    s.flush()  # what a checkpoint does: a process killed after it loses none of these
    assert [step for step, _ in scalars(tmp_path)["charts/episode_reward"]] == [25, 50, 75, 100]
    s.close()


def test_a_resumed_run_drops_what_its_checkpoint_does_not_cover_and_appends(tmp_path):
    write_life(tmp_path, 0, 8).close()  # a life that died at step 200 after a checkpoint at step 100
    write_life(tmp_path, 100, 6).close()  # the next resumes from that checkpoint: steps 125 .. 250
    got = scalars(tmp_path)
    assert [s for s, _ in got["charts/episode_reward"]] == [25, 50, 75, 100, 125, 150, 175, 200, 225, 250]
    assert [s for s, _ in got["losses/critic_loss/agent_0"]] == [100, 200]
    assert len(list(tmp_path.glob(EVENT_FILES))) == 2


def test_a_record_cut_short_by_a_crash_is_dropped(tmp_path):
    write_life(tmp_path, 0, 4).close()
    [path] = tmp_path.glob(EVENT_FILES)
    path.write_bytes(path.read_bytes()[:-7])  # the process died inside the last record (updates/s)
    assert drop_events_after(tmp_path, 1000) == 0
    got = scalars(tmp_path)
    assert [s for s, _ in got["charts/episode_reward"]] == [25, 50, 75, 100]
    assert "charts/updates_per_s" not in got and got["charts/env_steps_per_s"] == [(100, 1234.0)]


# 4 episodes (3 tags each) at steps 25-100, one row of losses (6 tags) and one of pace (2 tags) at step 100
@pytest.mark.parametrize("start, dropped, kept", [(0, 20, []), (50, 14, [25, 50]), (100, 0, [25, 50, 75, 100])])
def test_drop_events_after_counts_what_it_dropped(tmp_path, start, dropped, kept):
    write_life(tmp_path, 0, 4).close()
    assert drop_events_after(tmp_path, start) == dropped
    assert [s for s, _ in scalars(tmp_path).get("charts/episode_reward", [])] == kept
