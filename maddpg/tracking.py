"""Run bookkeeping shared by every training loop: episodes to the CSV and TensorBoard, checkpoints on schedule
(written on a thread of their own), the progress bar, and the final checkpoint and plot."""

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
from maddpg.telemetry.summaries import RunSummaries

LOSSES_EVERY = 10  # updates between two rows of losses in TensorBoard
SHOW_EVERY = 2.0  # seconds between two refreshes of the bar's figures (and rows of throughput in TensorBoard)
BAR_FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]"


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


class Pace:
    """The recent throughput of a run: episodes, env steps and updates per second over the last `window` seconds.

    It counts from the first episode on (start-up and the update's XLA compile come before it), and from the
    first update on once updates begin: until the buffer holds `learning_starts` transitions the explorers
    collect several times faster than the run will go at its update ratio, so an ETA from then would be wrong.
    """

    def __init__(self, window: float = 60.0):
        self.window = window
        self.updating = False  # updates have begun since the run (or this life of it) started
        self._samples: deque[tuple[float, int, int, int]] = deque()  # (time, episodes, env steps, updates)

    def add(self, t: float, episodes: int, env_steps: int, updates: int) -> None:
        if self._samples and not self.updating and updates > self._samples[-1][3]:
            self.updating = True
            self._samples.clear()
        self._samples.append((t, episodes, env_steps, updates))
        while len(self._samples) > 2 and self._samples[1][0] <= t - self.window:
            self._samples.popleft()

    def rates(self) -> tuple[float, float, float] | None:
        """(episodes/s, env steps/s, updates/s) over the window; None while it spans no time."""
        (t0, e0, s0, u0), (t1, e1, s1, u1) = self._samples[0], self._samples[-1]
        if t1 <= t0:
            return None
        return (e1 - e0) / (t1 - t0), (s1 - s0) / (t1 - t0), (u1 - u0) / (t1 - t0)


class RunTracker:
    """Records episodes of one run and saves the agent every `save_rate` episodes.

    The loop only takes a snapshot of the agent's arrays; a BackgroundCheckpointer writes it to the store, the
    newest snapshot first, so the loop never waits on storage. `finish()` waits for the final checkpoint.

    Call order: `record()` each finished episode; at each boundary of the loop's unit of work (a chunk, a step)
    `checkpoint()` if `checkpoint_due`; `finish()` once `done`. The counts a row of rewards.csv, the bar and a
    checkpoint show are the agent's when they are taken: a loop runs an episode's updates before recording it.

    TensorBoard (event files in the run folder): each episode's reward, the newest update's losses at the first
    episode's end after every `LOSSES_EVERY` updates, and throughput; flushed with every checkpoint.

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
        self.store = open_store(checkpoint_uri) if checkpoint_uri else FileStore(run.path / CHECKPOINTS)
        self.store.list()  # fail fast: wrong credentials or a missing bucket, not hours later
        self.checkpoints_submitted = 0  # snapshots handed to the checkpointer, numbered 1, 2, ...
        self._submitted_episodes = episodes
        self._position = position
        # What the newest snapshot (or the restored checkpoint) holds.
        self._submitted_counts = self._counts(self._read_position())
        self.checkpointer = BackgroundCheckpointer(self._write, on_done=on_checkpoint)
        self.stop = StopFlag()
        self.summaries = RunSummaries(run.path, run.env_spec.agent_ids, agent.env_steps)
        self._losses_logged = agent.updates
        self.pace = Pace()
        self._next_show = 0.0
        # tqdm's own ETA would count start-up and compile as the time of the first episodes (hours, at first)
        self._bar = tqdm(total=self.spec.num_episodes, initial=episodes, unit="ep", disable=not progress,
                         dynamic_ncols=True, desc=desc, bar_format=BAR_FORMAT)

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
        if self.episodes > self._bar.total:  # the last step or chunk ended a few more episodes than asked
            self._bar.total = self.episodes
        now, env_steps, updates = time.perf_counter(), self.agent.env_steps, self.agent.updates
        self.run.record(self.episodes, episode, env_steps, updates, now - self._start, source, chunk)
        self.summaries.episode(env_steps, episode)
        if updates - self._losses_logged >= LOSSES_EVERY and self.agent.metrics is not None:
            self.summaries.losses(env_steps, self.agent.metrics)
            self._losses_logged = updates
        self.pace.add(now, self.episodes, env_steps, updates)
        if now >= self._next_show or self.done:
            self._next_show = now + SHOW_EVERY
            self._show()
        self._bar.update(1)

    def _show(self) -> None:
        """The bar's figures: the ETA (once the pace is known), the mean reward, throughput and updates."""
        figures = []
        rates = self.pace.rates()
        if rates is not None:
            episodes_per_s, steps_per_s, updates_per_s = rates
            self.summaries.pace(self.agent.env_steps, steps_per_s, updates_per_s)
            if self.pace.updating or self._collecting_only:
                left = max(self.spec.num_episodes - self.episodes, 0)
                figures.append(f"eta {tqdm.format_interval(left / episodes_per_s) if episodes_per_s else '?'}")
            figures.append(f"{steps_per_s:,.0f} steps/s")
        figures += [f"reward {self.mean_reward:.2f}", f"{self.agent.updates:,} updates"]
        self._bar.set_postfix_str(", ".join(figures), refresh=False)

    @property
    def _collecting_only(self) -> bool:
        """No update will run before the end: the remaining episodes do not fill the buffer to learning_starts."""
        left = (self.spec.num_episodes - self.episodes) * self.spec.max_episode_len
        return len(self.agent.trainer.buffer) + left < self.spec.min_replay

    @property
    def checkpoint_due(self) -> bool:
        """`save_rate` more episodes ended since the last snapshot: the loop calls `checkpoint()` at its next
        boundary (the end of a chunk or step), so a checkpoint never splits one."""
        return self.episodes // self.spec.save_rate > self._submitted_episodes // self.spec.save_rate

    def checkpoint(self) -> int:
        """Takes a snapshot now and hands it to the checkpointer; returns its number (1, 2, ...)."""
        self.summaries.flush()  # on disk before the snapshot: a run resumed from it finds every event it covers
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
        self.summaries.close()
        if self._counts(self._read_position()) != self._submitted_counts:  # anything consumed since the last snapshot
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
        position = self._read_position()
        if position is not None:
            counters.update(position)
        if self.recent:  # for readers of the store alone (the API, for a run whose folder is in a pod)
            counters["mean_reward_last_100"] = self.mean_reward
        self.checkpoints_submitted += 1
        self._submitted_episodes = self.episodes
        self._submitted_counts = self._counts(position)
        self.checkpointer.submit((arrays, counters, self.run.written(), self.checkpoints_submitted))

    def _read_position(self) -> dict | None:
        return self._position() if self._position is not None else None

    def _counts(self, position: dict | None) -> tuple:
        """What a snapshot taken now would hold, given the replay position read for it."""
        return self.episodes, self.agent.env_steps, self.agent.updates, position

    def _write(self, job) -> tuple[Path | str, int]:
        """Runs on the checkpointer's thread; returns (where, snapshot number)."""
        arrays, counters, rewards_bytes, number = job
        where = checkpoint.save(self.store, self.spec, self.run.env_spec, arrays, counters,
                                keep=self.spec.keep_checkpoints, rewards_csv=self.run.read_rewards(rewards_bytes))
        return where, number
