"""Run bookkeeping shared by every training loop: episodes to the CSV, checkpoints on schedule, the progress
bar, and the final checkpoint and plot."""

from __future__ import annotations

import signal
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from maddpg.episodes import Episode
from maddpg.runfolder import RunFolder


@dataclass
class TrainResult:
    run_dir: Path
    episodes: int
    env_steps: int
    updates: int
    mean_reward: float  # mean episode reward (sum over agents) of the last 100 episodes
    seconds: float
    interrupted: bool
    checkpoint: Path | None


class StopFlag:
    """Turns the first SIGINT (Ctrl-C) or SIGTERM (Kubernetes) into a request to stop, checked by the loop.

    Later signals change nothing, so the final checkpoint is always written whole even when a terminal
    signals every process of the group and a launcher forwards one more.
    """

    def __init__(self):
        self.requested = False
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        self.requested = True


class RunTracker:
    """Records episodes of one run and saves the agent every `save_rate` episodes.

    Args:
      run: the run folder. agent: a MADDPGAgent (for its state and counters).
      episodes: episodes already done (a restored run). progress: show a tqdm bar. desc: its label.
    """

    def __init__(self, run: RunFolder, agent, episodes: int = 0, progress: bool = True, desc: str = "train"):
        self.run, self.agent, self.episodes = run, agent, episodes
        self.spec = run.spec
        self.recent: deque[float] = deque(maxlen=100)
        self._start = time.perf_counter()
        self._steps0 = agent.env_steps
        self._saved: tuple[Path, int] | None = None
        self.stop = StopFlag()
        self._bar = tqdm(total=self.spec.num_episodes, initial=episodes, unit="ep", disable=not progress,
                         dynamic_ncols=True, desc=desc)

    @property
    def done(self) -> bool:
        """All episodes are done, or a stop was requested."""
        return self.episodes >= self.spec.num_episodes or self.stop.requested

    @property
    def mean_reward(self) -> float:
        return float(np.mean(self.recent)) if self.recent else float("nan")

    def record(self, episode: Episode) -> None:
        self.episodes += 1
        self.recent.append(episode.total)
        self.run.record(self.episodes, episode, self.agent.env_steps, self.agent.updates,
                        time.perf_counter() - self._start)
        self._bar.update(1)
        if self.episodes % self.spec.save_rate == 0:
            self._save()
        if self.episodes % 100 == 0 or self.done:
            rate = (self.agent.env_steps - self._steps0) / max(time.perf_counter() - self._start, 1e-9)
            self._bar.set_postfix(reward=f"{self.mean_reward:.2f}", steps_per_s=f"{rate:,.0f}",
                                  updates=self.agent.updates, refresh=False)

    def finish(self) -> TrainResult:
        """Saves a last checkpoint (unless the newest covers every episode), plots, closes the folder."""
        self._bar.close()
        if self.episodes and (self._saved is None or self._saved[1] != self.episodes):
            self._save()
        self.run.plot()
        self.run.close()
        return TrainResult(self.run.path, self.episodes, self.agent.env_steps, self.agent.updates,
                           self.mean_reward, time.perf_counter() - self._start, self.stop.requested,
                           self._saved[0] if self._saved else None)

    def _save(self) -> None:
        arrays, counters = self.agent.state()
        self._saved = self.run.checkpoint(arrays, {**counters, "episodes": self.episodes}), self.episodes
