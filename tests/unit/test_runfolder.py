"""A run folder's rewards CSV across restarts: cut back to the restored checkpoint, or taken from it when the
folder lost its own (a new pod), never mixed with a CSV of other columns."""

import csv

import numpy as np
import pytest

from maddpg import checkpoint
from maddpg.envs.spaces import AgentSpec, EnvSpec
from maddpg.episodes import Episode
from maddpg.resume import restore
from maddpg.runfolder import REWARDS, RunFolder
from maddpg.runspec import RunSpec
from maddpg.storage import CheckpointError, FileStore

SPEC = RunSpec(scenario="simple", num_episodes=10)
ENV = EnvSpec("simple", (AgentSpec("agent_0", 4, "discrete", 5, (5,)),))


def _write(folder: RunFolder, episodes: range) -> None:
    for i in episodes:
        folder.record(i, Episode(float(-i), np.array([-i], float), 25), 25 * i, i, float(i), "ex/r", i)


def _episodes(path) -> list[int]:
    with open(path / REWARDS, newline="") as f:
        return [int(row["episode"]) for row in csv.DictReader(f)]


def _snapshot(path) -> bytes:
    folder = RunFolder(path, SPEC, ENV)
    _write(folder, range(1, 7))
    data = folder.read_rewards(folder.written())
    _write(folder, range(7, 9))  # recorded after the checkpoint: not in it
    folder.close()
    return data


def test_a_written_prefix_holds_whole_rows_up_to_the_snapshot(tmp_path):
    data = _snapshot(tmp_path / "a")
    lines = data.decode().splitlines()
    assert lines[0].startswith("episode,env_steps") and [int(x.split(",")[0]) for x in lines[1:]] == list(range(1, 7))


def test_an_empty_folder_takes_the_checkpoints_csv_and_counts_on(tmp_path):
    data = _snapshot(tmp_path / "old-pod")
    folder = RunFolder(tmp_path / "new-pod", SPEC, ENV, episodes=6, rewards=data)
    _write(folder, range(7, 9))
    folder.close()
    assert _episodes(tmp_path / "new-pod") == list(range(1, 9))


def test_a_folder_ahead_of_the_checkpoint_is_cut_back_to_it(tmp_path):
    data = _snapshot(tmp_path / "a")
    RunFolder(tmp_path / "a", SPEC, ENV, episodes=6, rewards=data).close()
    assert _episodes(tmp_path / "a") == list(range(1, 7))  # 7 and 8 were never checkpointed: counted again later


def test_a_stored_csv_of_other_columns_is_not_taken(tmp_path):
    other = b"episode,env_steps,reward\r\n1,25,-3\r\n2,50,-4\r\n"
    RunFolder(tmp_path / "a", SPEC, ENV, episodes=2, rewards=other).close()
    assert _episodes(tmp_path / "a") == []


def test_a_cut_last_line_is_dropped(tmp_path):
    data = _snapshot(tmp_path / "old")
    RunFolder(tmp_path / "new", SPEC, ENV, episodes=6, rewards=data[:-5]).close()
    assert _episodes(tmp_path / "new") == list(range(1, 6))


def test_the_checkpoint_carries_the_csv_and_a_broken_copy_costs_only_the_curve(tmp_path):
    data = _snapshot(tmp_path / "run")
    store = FileStore(tmp_path / "run" / "checkpoints")
    where = checkpoint.save(store, SPEC, ENV, {}, {"episodes": 6, "env_steps": 150, "updates": 6}, rewards_csv=data)
    assert checkpoint.Checkpoint(where, load_arrays=False).rewards_csv() == data
    (where / checkpoint.REWARDS_CSV).write_bytes(b"not gzip")
    with pytest.raises(CheckpointError, match="rewards.csv.gz does not match its manifest"):
        checkpoint.Checkpoint(where, load_arrays=False).rewards_csv()

    class Agent:  # what restore() needs of an agent
        env_spec = ENV

        def restore(self, arrays, counters):
            self.counters = counters

    start = restore(Agent(), SPEC, tmp_path / "run")
    assert start.own and start.episodes == 6 and start.rewards is None
