"""The learner process: the inference server (its own thread) and the trainer (main thread) sharing one agent.

The server answers explorers with the newest actors (a numpy copy swapped in after every update); the trainer
moves chunks from the replay queue into the buffer and runs updates at the run spec's ratio. Collection is
paced: the server holds replies while the trainer is behind, so explorers never starve it.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import numpy as np

from maddpg.agent import build_agent
from maddpg.algo.learning import configure_threads
from maddpg.envs.mpe import make_env
from maddpg.episodes import Episode
from maddpg.memory import check_fits_machine
from maddpg.replay.intake import StreamConsumer
from maddpg.replay.ledger import IntakeLedger, life_key
from maddpg.replay.queue import LocalQueue
from maddpg.resume import restore
from maddpg.runfolder import RunFolder
from maddpg.runspec import RunSpec
from maddpg.tracking import RunTracker, TrainResult
from maddpg.trainer import Trainer
from maddpg.transport.security import RunKey
from maddpg.transport.server import InferenceServer
from services.learner.metrics import LearnerMetrics, Watched

log = logging.getLogger(__name__)


class Pacer:
    """Decides whether explorers may take more env steps.

    Explorers may run ahead of what the trainer has inserted by at most two chunks of every registered env,
    and not at all while more than `max_pending` updates are due but not run. Steps served that will never
    arrive (an explorer killed inside a chunk, chunks a Redis without persistence lost) would hold every
    explorer for good: once the trainer has found the queue empty for `stale_after` seconds with no update
    due, the served count is set back to what was inserted.
    """

    def __init__(self, trainer: Trainer, chunk_len: int, max_pending: int = 2, stale_after: float = 5.0):
        self._trainer, self._chunk_len, self._max_pending = trainer, chunk_len, max_pending
        self._stale_after = stale_after
        self.served_steps = trainer.env_steps  # a restored learner counts on from its checkpoint
        self._starved_since: float | None = None  # when the trainer began finding the queue empty
        self.held = 0

    def intake(self, chunks: int) -> None:
        """The trainer read `chunks` chunks from the queue (0: it found it empty)."""
        if chunks:
            self._starved_since = None
        elif self._starved_since is None:
            self._starved_since = time.monotonic()

    def may_collect(self, envs: int, registered_envs: int) -> bool:
        inserted, pending = self._trainer.env_steps, self._trainer.pending_updates
        if pending > self._max_pending or self.served_steps - inserted > 2 * self._chunk_len * registered_envs:
            starved = self._starved_since
            if pending or starved is None or time.monotonic() - starved < self._stale_after:
                self.held += 1
                return False
            log.info("%d env steps served never arrived (an explorer died inside a chunk?): not waiting for them",
                     self.served_steps - inserted)
            self.served_steps = inserted
        self.served_steps += envs
        return True


def build_env_spec(spec: RunSpec):
    env = make_env(spec, num_envs=1)
    env.close()
    return env.spec


class LearnerFailure(RuntimeError):
    """A learner thread died: the process must exit, never listen without answering."""


class Learner:
    """Wires the agent, the replay queue, the inference server and the run folder of one run.

    A run whose checkpoint store holds a checkpoint continues from the newest (see maddpg.resume): a restarted
    process or pod just carries on, skipping every chunk that checkpoint already accounts for.

    Args:
      spec: the run spec. run_dir: the run folder. bind: the ZeroMQ address explorers connect to.
      key: the run's secret: only explorers holding it can talk to the learner (None: anyone can).
      max_batch, max_wait: inference batching (see InferenceServer).
      checkpoint_uri: the checkpoint store (default: the run folder's checkpoints/).
      queue: the replay queue: None or "local" (chunks over ZeroMQ into memory) or a redis:// URL.
      run_id: names the run's Redis stream (default: the run folder's name); a restarted learner must reuse it.
      metrics_port: serve Prometheus metrics on this port (0: a free one, see `metrics_port`; None: no server).
      idle_warning: seconds without any inference request after which the learner says so in its log.
      warm_start: a checkpoint or run folder of another run to start from when this run has no checkpoint.
    """

    def __init__(self, spec: RunSpec, run_dir: Path, bind: str, *, key: RunKey | None = None,
                 max_batch: int = 1024, max_wait: float = 0.0005, queue: str | None = None,
                 run_id: str | None = None, checkpoint_uri: str | None = None, metrics_port: int | None = None,
                 idle_warning: float = 60.0, warm_start: str | Path | None = None):
        configure_threads(spec.tf_threads)
        self.spec, self._checkpoint_uri, self._idle_warning = spec, checkpoint_uri, idle_warning
        env_spec = build_env_spec(spec)
        check_fits_machine(spec, env_spec.agents)
        self.agent = build_agent(spec, env_spec)
        self.start = restore(self.agent, spec, run_dir, checkpoint_uri, warm_start)
        self.run = RunFolder(run_dir, spec, env_spec, episodes=self.start.episodes, rewards=self.start.rewards)
        self.run_id = run_id or Path(run_dir).resolve().name
        self.queue_url = queue if queue and queue != "local" else "local"
        if self.queue_url == "local":
            self.queue = LocalQueue(positions=self.start.intake)
        else:
            from maddpg.replay.redis_queue import RedisQueue

            self.queue = RedisQueue(self.queue_url, self.run_id,
                                    signing_key=None if key is None else key.stream_key)
        self.pacer = Pacer(self.agent.trainer, spec.chunk_len)
        self.metrics = LearnerMetrics(self.run_id)
        self.server = InferenceServer(
            bind, env_spec, spec.to_json(), self.agent.actor, may_collect=self.pacer.may_collect,
            intake=self.queue if isinstance(self.queue, LocalQueue) else None, key=key,
            max_batch=max_batch, max_wait=max_wait, queue=self.queue_url, run_id=self.run_id,
            on_batch=self.metrics.observe_batch)
        self.address = self.server.address
        self.consumer = StreamConsumer(self.queue, IntakeLedger(self.start.intake), env_spec.obs_dims,
                                       [h.action_dim for h in self.agent.trainer.heads], self._insert, self._record)
        self.consumer.restored(self.start.counters)
        self.metrics.watch(Watched(self.agent.trainer, self.server, self.queue, self.consumer, lambda: self.pacer.held))
        self.metrics_port = None if metrics_port is None else self.metrics.service.serve(metrics_port)
        self._stop_serving = threading.Event()
        self._server_error: BaseException | None = None
        self._thread = threading.Thread(target=self._serve, daemon=True, name="inference")
        self._tracker: RunTracker | None = None

    def _serve(self) -> None:
        try:
            self.server.serve(self._stop_serving)
        except BaseException as e:  # noqa: BLE001 - handed to the trainer thread, which ends the process
            self._server_error = e

    def _insert(self, chunk) -> None:
        """Inserts a chunk's transitions and runs the updates they made due, before its episodes are recorded:
        a row of rewards.csv, the progress bar and a checkpoint taken after the chunk all count the same updates
        (as in the single-process loop, which updates before it records a step's episodes)."""
        self.agent.trainer.insert(chunk.transitions)
        due, start = self.agent.trainer.pending_updates, time.perf_counter()
        losses = self.agent.update()
        if losses is not None:
            self.metrics.observe_updates(time.perf_counter() - start, due, losses)

    def _record(self, chunk) -> None:
        source = life_key(chunk.explorer_id, chunk.run_id)
        for rewards, length in zip(chunk.episode_rewards, chunk.episode_lengths):
            self._tracker.record(Episode(float(rewards.sum()), rewards.astype(np.float64), int(length)),
                                 source, chunk.seq)

    def _check_threads(self) -> None:
        if self._server_error is not None:
            raise LearnerFailure(f"the inference thread died: {self._server_error!r}") from self._server_error
        silent = time.monotonic() - self.server.last_request
        if silent > self._idle_warning and time.monotonic() >= self._next_idle_log:
            self._next_idle_log = time.monotonic() + self._idle_warning
            log.warning("no explorer has asked for actions for %.0f s (%d registered): the run is not collecting",
                        silent, self.server.num_explorers)

    def train(self, progress: bool = True) -> TrainResult:
        """Serves and trains until `num_episodes` episodes ended (or Ctrl-C); writes the run folder.

        Raises:
          LearnerFailure: the inference thread died (the process must exit non-zero).
        """
        self._tracker = tracker = RunTracker(
            self.run, self.agent, self.start.episodes, progress, f"learner {self.spec.scenario}",
            self._checkpoint_uri, on_checkpoint=self.metrics.observe_checkpoint,
            position=self.consumer.position)
        self.metrics.watched.tracker = tracker
        self._next_idle_log = 0.0
        self._thread.start()  # explorers are served while the update compiles
        self.agent.trainer.warm_up()
        consumer = self.consumer
        try:
            while not tracker.done:  # Ctrl-C or SIGTERM sets tracker.stop
                self._check_threads()
                chunks = self.queue.get(max_chunks=64, timeout=0.05)
                self.pacer.intake(len(chunks))
                for token, chunk in chunks:
                    consumer.consume(token, chunk)
                    if tracker.checkpoint_due:  # between two chunks: a checkpoint never splits one
                        consumer.covered_by(tracker.checkpoint())
                    if tracker.done:
                        break  # chunks read but not consumed stay in the queue (Redis) or with their explorer
                consumer.written(tracker.checkpoints_written)
        finally:
            self.server.stop_explorers("the run is over")
            try:
                result = tracker.finish()  # waits for the final checkpoint, which covers every chunk consumed
                consumer.covered_by(tracker.checkpoints_submitted)
                consumer.written(tracker.checkpoints_written)
            finally:
                self._stop_explorers_then_close()
        return result

    def _stop_explorers_then_close(self, grace: float = 2.0) -> None:
        """Keeps answering Stop until every registered explorer was told (or `grace` passed), then closes."""
        deadline = time.monotonic() + grace
        while self.server.num_explorers and time.monotonic() < deadline and self._thread.is_alive():
            time.sleep(0.05)
        self._stop_serving.set()
        self._thread.join(timeout=5)
        self.metrics.service.close()
