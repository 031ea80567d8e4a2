"""Run bookkeeping shared by every training loop: episodes to the CSV, checkpoints on schedule (written on a
thread of their own), the progress bar, and the final checkpoint and plot."""

from __future__ import annotations

import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from maddpg import checkpoint
from maddpg.episodes import Episode
from maddpg.runfolder import CHECKPOINTS, RunFolder
from maddpg.storage import BackgroundCheckpointer, CheckpointError, FileStore, open_store


@dataclass
class TrainResult:
    run_dir: Path
    episodes: int
    env_steps: int
    updates: int
    mean_reward: float  # mean episode reward (sum over agents) of the last 100 episodes
    seconds: float
    interrupted: bool
    checkpoint: Path | str | None  # the final checkpoint: a folder, or a URI for a remote store


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

    The loop only takes a snapshot of the agent's arrays; a BackgroundCheckpointer writes it to the store, the
    newest snapshot first, so the loop never waits on storage. `finish()` waits for the final checkpoint.

    Call order: `record()` each finished episode; at each boundary of the loop's unit of work (a chunk, a step)
    `checkpoint()` if `checkpoint_due`; `finish()` once `done`.

    Args:
      run: the run folder. agent: a `maddpg.agent.Agent` (for its state and counters).
      episodes: episodes already done (a restored run). progress: show a tqdm bar. desc: its label.
      checkpoint_uri: where checkpoints go: a folder, file:///path or s3://bucket/prefix (default: the run
        folder's checkpoints/). Checked at once: a store that cannot be listed stops the run before it starts.
      on_checkpoint: called after each checkpoint write with its duration in seconds and whether it succeeded.
      position: returns how far into the replay stream the counters account (the intake ledger's positions
        and counts), merged into each checkpoint's counters.
    """

    def __init__(self, run: RunFolder, agent, episodes: int = 0, progress: bool = True, desc: str = "train",
                 checkpoint_uri: str | None = None, on_checkpoint: Callable[[float, bool], None] | None = None,
                 position: Callable[[], dict] | None = None):
        self.run, self.agent, self.episodes = run, agent, episodes
        self.spec = run.spec
        self.recent: deque[float] = deque(maxlen=100)
        self._start = time.perf_counter()
        self._steps0 = agent.env_steps
        self.store = open_store(checkpoint_uri) if checkpoint_uri else FileStore(run.path / CHECKPOINTS)
        self.store.list()  # fail fast: wrong credentials or a missing bucket, not hours later
        self.checkpoints_submitted = 0  # snapshots handed to the checkpointer, numbered 1, 2, ...
        self._submitted_episodes = episodes
        self._position = position
        self._submitted_counts = self._counts()  # what the newest snapshot (or the restored checkpoint) holds
        self.checkpointer = BackgroundCheckpointer(self._write, on_done=on_checkpoint)
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

    def record(self, episode: Episode, source: str = "", chunk: int = 0) -> None:
        """Counts one finished episode (from chunk `chunk` of explorer life `source`, if it came in one)."""
        self.episodes += 1
        self.recent.append(episode.total)
        self.run.record(self.episodes, episode, self.agent.env_steps, self.agent.updates,
                        time.perf_counter() - self._start, source, chunk)
        self._bar.update(1)
        if self.episodes % 100 == 0 or self.done:
            rate = (self.agent.env_steps - self._steps0) / max(time.perf_counter() - self._start, 1e-9)
            self._bar.set_postfix(reward=f"{self.mean_reward:.2f}", steps_per_s=f"{rate:,.0f}",
                                  updates=self.agent.updates, refresh=False)

    @property
    def checkpoint_due(self) -> bool:
        """`save_rate` more episodes ended since the last snapshot: the loop calls `checkpoint()` at its next
        boundary (the end of a chunk or step), so a checkpoint never splits one."""
        return self.episodes // self.spec.save_rate > self._submitted_episodes // self.spec.save_rate

    def checkpoint(self) -> int:
        """Takes a snapshot now and hands it to the checkpointer; returns its number (1, 2, ...)."""
        self._submit()
        return self.checkpoints_submitted

    @property
    def checkpoints_written(self) -> int:
        """The number of the newest snapshot written whole (0: none yet); every snapshot up to it is covered.

        A consumer of a durable queue acknowledges the entries it had inserted when snapshot k was taken
        (`checkpoints_submitted` became k) once `checkpoints_written >= k`.
        """
        last = self.checkpointer.stats.last_result
        return last[1] if last else 0

    def finish(self) -> TrainResult:
        """Saves a last checkpoint (unless the newest covers every episode) and waits for it, plots, closes.

        Raises:
          CheckpointError: the final checkpoint could not be written (after the plot and CSV are saved).
        """
        self._bar.close()
        if self._counts() != self._submitted_counts:  # anything consumed since the last snapshot
            self._submit()
        self.checkpointer.close()
        self.run.plot()
        self.run.close()
        stats = self.checkpointer.stats
        last = stats.last_result
        if self.checkpoints_submitted and (last is None or last[1] != self.checkpoints_submitted):
            raise CheckpointError(f"the final checkpoint was not written to {self.store.uri}: {stats.last_error}")
        return TrainResult(self.run.path, self.episodes, self.agent.env_steps, self.agent.updates,
                           self.mean_reward, time.perf_counter() - self._start, self.stop.requested,
                           last[0] if last else None)

    def _submit(self) -> None:
        arrays, counters = self.agent.state()  # a snapshot: numpy copies of the variables
        counters = {**counters, "episodes": self.episodes}
        if self._position is not None:
            counters.update(self._position())
        if self.recent:  # for readers of the store alone (the API, for a run whose folder is in a pod)
            counters["mean_reward_last_100"] = self.mean_reward
        self.checkpoints_submitted += 1
        self._submitted_episodes = self.episodes
        self._submitted_counts = self._counts()
        self.checkpointer.submit((arrays, counters, self.run.written(), self.checkpoints_submitted))

    def _counts(self) -> tuple:
        position = self._position() if self._position is not None else None
        return self.episodes, self.agent.env_steps, self.agent.updates, position

    def _write(self, job) -> tuple[Path | str, int, int]:
        """Runs on the checkpointer's thread; returns (where, snapshot number, episodes)."""
        arrays, counters, rewards_bytes, number = job
        where = checkpoint.save(self.store, self.spec, self.run.env_spec, arrays, counters,
                                keep=self.spec.keep_checkpoints, rewards_csv=self.run.read_rewards(rewards_bytes))
        return where, number, counters["episodes"]
