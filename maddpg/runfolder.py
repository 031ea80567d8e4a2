"""A run's folder: its spec, the episode-reward CSV, the learning-curve PNG and checkpoints."""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path

import numpy as np

from maddpg import plotting
from maddpg.envs.spaces import EnvSpec
from maddpg.errors import UserError
from maddpg.episodes import Episode
from maddpg.runspec import RunSpec

SPEC = "spec.json"
REWARDS = "rewards.csv"
CURVE = "learning_curve.png"
CHECKPOINTS = "checkpoints"
# Where each episode came from: the explorer life (explorer_id/run_id, empty in a single-process run) and its
# chunk's seq, so that every episode can be matched to the chunk that carried it (no episode counted twice).
SOURCE_COLUMNS = ("source", "chunk")


class RunFolderError(UserError):
    """The run folder cannot be used as asked."""


class RunFolder:
    """Writes one run's artifacts.

    A folder that already holds this run (a restart, with or without a checkpoint) is continued: rows of the
    rewards CSV after `episodes` (recorded before a crash, but not in the checkpoint restored) are dropped, so
    no episode is counted twice. A folder holding a run of another spec is refused. A folder that lost its CSV
    (a new pod's empty folder) takes the restored checkpoint's copy, `rewards`, so the curve goes on unbroken.

    Args:
      path: the folder (created). spec: the run spec. env_spec: the agents.
      episodes: the episodes the restored checkpoint accounts for (0: none restored).
      rewards: the rewards CSV stored in the restored checkpoint (rows up to `episodes`), if it holds one.
    """

    def __init__(self, path: Path, spec: RunSpec, env_spec: EnvSpec, episodes: int = 0,
                 rewards: bytes | None = None):
        self.path = Path(path)
        self.spec, self.env_spec = spec, env_spec
        if self.path.exists() and not self.path.is_dir():
            raise RunFolderError(f"--run-dir {self.path} is a file; choose a folder")
        if (self.path / SPEC).exists():
            self._check_same_run(RunSpec.load(self.path / SPEC))
        self.path.mkdir(parents=True, exist_ok=True)
        spec.save(self.path / SPEC)
        self._columns = ["episode", "env_steps", "updates", "wall_time_s", "length", "reward"] + [
            f"reward_{name}" for name in env_spec.agent_ids] + list(SOURCE_COLUMNS)
        kept = _rows_up_to((self.path / REWARDS).read_text(), episodes) if (self.path / REWARDS).exists() else []
        if rewards is not None:
            stored = _rows_up_to(rewards.decode(errors="replace"), episodes)
            if len(stored) > len(kept) and stored[0].rstrip("\r\n").split(",") == self._columns:
                kept = stored  # the folder is new, or older than the checkpoint (another pod wrote on)
        if kept or (self.path / REWARDS).exists():
            (self.path / REWARDS).write_text("".join(kept))  # nothing: a cut header goes too
        new = not kept
        self._file = open(self.path / REWARDS, "a", newline="", buffering=1)  # line-buffered: readable live
        self._csv = csv.writer(self._file)
        if new:
            self._csv.writerow(self._columns)

    def record(self, index: int, episode: Episode, env_steps: int, updates: int, wall_time: float,
               source: str = "", chunk: int = 0) -> None:
        """Appends episode `index`; `source` and `chunk` name the explorer life and chunk it came in."""
        self._csv.writerow([index, env_steps, updates, f"{wall_time:.3f}", episode.length, f"{episode.total:.6g}"]
                           + [f"{r:.6g}" for r in episode.per_agent] + [_plain(source), chunk])

    def written(self) -> int:
        """Bytes of the rewards CSV written so far (whole rows: a row is written in one call)."""
        self._file.flush()
        return os.fstat(self._file.fileno()).st_size

    def read_rewards(self, size: int) -> bytes:
        """The first `size` bytes of the rewards CSV (rows are only ever appended: a prefix stays as it was)."""
        with open(self.path / REWARDS, "rb") as f:
            return f.read(size)

    def _check_same_run(self, saved: RunSpec) -> None:
        conflicts = self.spec.resume_conflicts(saved)
        if conflicts:
            raise RunFolderError(f"run folder {self.path} holds a run of another spec ({'; '.join(conflicts)}); "
                                 "choose another --run-dir for a new run, or give the same spec to continue it")

    def plot(self) -> Path:
        self._file.flush()
        data = load_rewards(self.path)
        per_agent = {k.removeprefix("reward_"): v for k, v in data.items() if k.startswith("reward_")}
        title = f"MADDPG on {self.spec.scenario} ({self.env_spec.num_agents} agents, mpe2 rewards)"
        return plotting.learning_curve(self.path / CURVE, data["env_steps"], data["reward"], title, per_agent)

    def close(self) -> None:
        self._file.close()


def _rows_up_to(text: str, episodes: int) -> list[str]:
    """The header and the complete rows of episodes 1..`episodes` of a rewards CSV's text (nothing without a
    header)."""
    lines = text.splitlines(keepends=True)
    if not lines or not lines[0].endswith("\n"):
        return []
    return lines[:1] + [line for line in lines[1:] if line.endswith("\n") and line.split(",", 1)[0].isdigit()
                        and int(line.split(",", 1)[0]) <= episodes]


def _plain(text: str) -> str:
    """`text` without what would need CSV quoting (explorer ids are free text): readers split on commas."""
    return re.sub(r'[,"\s]', "_", text)


def load_rewards(path: Path) -> dict[str, np.ndarray]:
    """The rewards CSV of a run folder as columns."""
    with open(Path(path) / REWARDS, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return {"env_steps": np.zeros(0), "reward": np.zeros(0)}
    return {key: np.array([float(r[key]) for r in rows]) for key in rows[0] if key != "source"}
