"""A run's folder: its spec, the episode-reward CSV, the learning-curve PNG and checkpoints."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from maddpg import checkpoint, plotting
from maddpg.envs.spaces import EnvSpec
from maddpg.episodes import Episode
from maddpg.runspec import RunSpec

SPEC = "spec.json"
REWARDS = "rewards.csv"
CURVE = "learning_curve.png"
CHECKPOINTS = "checkpoints"


class RunFolderError(Exception):
    """The run folder cannot be used as asked."""


class RunFolder:
    """Writes one run's artifacts.

    Args:
      path: the folder (created). spec: the run spec. env_spec: the agents.
      resume: continue a run restored from a checkpoint of this folder instead of refusing.
      episodes: with resume, the episodes the checkpoint covers: later rows of the rewards CSV (recorded
        before a crash, but not in the checkpoint) are dropped, so episodes are never counted twice.
    """

    def __init__(self, path: Path, spec: RunSpec, env_spec: EnvSpec, resume: bool = False, episodes: int = 0):
        self.path = Path(path)
        self.spec, self.env_spec = spec, env_spec
        if (self.path / SPEC).exists() and not resume:
            raise RunFolderError(
                f"run folder {self.path} already holds a run; choose another --run-dir, "
                f"or pass --restore {self.path} to continue it")
        self.path.mkdir(parents=True, exist_ok=True)
        spec.save(self.path / SPEC)
        self._columns = ["episode", "env_steps", "updates", "wall_time_s", "length", "reward"] + [
            f"reward_{name}" for name in env_spec.agent_ids]
        if resume and (self.path / REWARDS).exists():
            lines = (self.path / REWARDS).read_text().splitlines(keepends=True)
            kept = lines[:1] + [line for line in lines[1:] if line.split(",", 1)[0].isdigit()
                                and int(line.split(",", 1)[0]) <= episodes]
            (self.path / REWARDS).write_text("".join(kept))
        new = not (self.path / REWARDS).exists()
        self._file = open(self.path / REWARDS, "a", newline="", buffering=1)  # line-buffered: readable live
        self._csv = csv.writer(self._file)
        if new:
            self._csv.writerow(self._columns)

    def record(self, index: int, episode: Episode, env_steps: int, updates: int, wall_time: float) -> None:
        self._csv.writerow([index, env_steps, updates, f"{wall_time:.3f}", episode.length, f"{episode.total:.6g}"]
                           + [f"{r:.6g}" for r in episode.per_agent])

    def checkpoint(self, arrays: dict[str, np.ndarray], counters: dict[str, int]) -> Path:
        return checkpoint.save(self.path / CHECKPOINTS, self.spec, self.env_spec, arrays, counters,
                               keep=self.spec.keep_checkpoints)

    def plot(self) -> Path:
        self._file.flush()
        data = load_rewards(self.path)
        per_agent = {k.removeprefix("reward_"): v for k, v in data.items() if k.startswith("reward_")}
        title = f"MADDPG on {self.spec.scenario} ({self.env_spec.num_agents} agents, mpe2 rewards)"
        return plotting.learning_curve(self.path / CURVE, data["env_steps"], data["reward"], title, per_agent)

    def close(self) -> None:
        self._file.close()


def load_rewards(path: Path) -> dict[str, np.ndarray]:
    """The rewards CSV of a run folder as columns."""
    with open(Path(path) / REWARDS, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return {"env_steps": np.zeros(0), "reward": np.zeros(0)}
    return {key: np.array([float(r[key]) for r in rows]) for key in rows[0]}
