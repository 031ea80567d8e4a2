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

from maddpg.agent import MADDPGAgent
from maddpg.algo.exploration import make_noise
from maddpg.algo.learning import configure_threads
from maddpg.envs.mpe import make_env
from maddpg.episodes import Episode
from maddpg.local import restore_into
from maddpg.replay.queue import LocalQueue
from maddpg.runfolder import RunFolder
from maddpg.runspec import RunSpec
from maddpg.tracking import RunTracker, TrainResult
from maddpg.transport.codec import chunk_problem
from maddpg.transport.server import InferenceServer
from services.learner.metrics import LearnerMetrics

log = logging.getLogger(__name__)


class Pacer:
    """Decides whether explorers may take more env steps.

    Explorers may run ahead of what the trainer has inserted by at most two chunks of every registered env,
    and not at all while more than `max_pending` updates are due but not run.
    """

    def __init__(self, agent: MADDPGAgent, chunk_len: int, max_pending: int = 2):
        self._agent, self._chunk_len, self._max_pending = agent, chunk_len, max_pending
        self.served_steps = agent.env_steps  # a restored learner counts on from its checkpoint
        self.held = 0

    def may_collect(self, envs: int, registered_envs: int) -> bool:
        ahead = self.served_steps - self._agent.env_steps
        if self._agent.pending_updates > self._max_pending or ahead > 2 * self._chunk_len * registered_envs:
            self.held += 1
            return False
        self.served_steps += envs
        return True


def build_env_spec(spec: RunSpec):
    env = make_env(spec, num_envs=1)
    env.close()
    return env.spec


class Learner:
    """Wires the agent, the replay queue, the inference server and the run folder of one run.

    Args:
      spec: the run spec. run_dir: the run folder. bind: the ZeroMQ address explorers connect to.
      max_batch, max_wait: inference batching (see InferenceServer).
      checkpoint_uri: the checkpoint store (default: the run folder's checkpoints/).
      queue: the replay queue: None or "local" (chunks over ZeroMQ into memory) or a redis:// URL.
      run_id: names the run's Redis stream (default: the run folder's name); a restarted learner must reuse it.
      metrics_port: serve Prometheus metrics on this port (0: a free one, see `metrics_port`; None: no server).
    """

    def __init__(self, spec: RunSpec, run_dir: Path, bind: str, *, max_batch: int = 1024,
                 max_wait: float = 0.0005, queue: str | None = None, run_id: str | None = None,
                 checkpoint_uri: str | None = None, metrics_port: int | None = None):
        configure_threads(spec.tf_threads)
        self.spec, self._checkpoint_uri = spec, checkpoint_uri
        env_spec = build_env_spec(spec)
        self.agent = MADDPGAgent(spec, env_spec, num_envs=1)
        self._episodes0, resume = restore_into(self.agent, spec, run_dir)
        self.run = RunFolder(run_dir, spec, env_spec, resume=resume, episodes=self._episodes0)
        self.run_id = run_id or Path(run_dir).resolve().name
        self.queue_url = queue if queue and queue != "local" else "local"
        if self.queue_url == "local":
            self.queue = LocalQueue()
        else:
            from maddpg.replay.redis_queue import RedisQueue

            self.queue = RedisQueue(self.queue_url, self.run_id)
        self.pacer = Pacer(self.agent, spec.chunk_len)
        heads = self.agent.heads
        self._act_dims = [h.action_dim for h in heads]
        noise_rng = np.random.default_rng(spec.seed + 17)
        self.server = InferenceServer(
            bind, env_spec, spec.to_json(), self._act,
            lambda e: [make_noise(spec.exploration, (e, h.action_dim), spec.exploration_sigma, spec.ou_theta,
                                  noise_rng) for h in heads],
            self._act_dims, self._local_chunk, self.pacer.may_collect, max_batch=max_batch,
            max_wait=max_wait, queue=self.queue_url, run_id=self.run_id,
            on_batch=lambda envs, latencies: self.metrics.observe_batch(envs, latencies))
        self.address = self.server.address
        self.metrics = LearnerMetrics(self)
        self.metrics_port = None if metrics_port is None else self.metrics.service.serve(metrics_port)
        self._stop_serving = threading.Event()
        self._thread = threading.Thread(target=self.server.serve, args=(self._stop_serving,), daemon=True,
                                        name="inference")

    def _acknowledge(self, covered: dict[int, list], written: int) -> None:
        for number in [k for k in covered if k <= written]:
            self.queue.ack(covered.pop(number))

    def _local_chunk(self, chunk) -> bool:
        return isinstance(self.queue, LocalQueue) and self.queue.put(chunk)

    def _act(self, obs: list[np.ndarray], noise: list[np.ndarray | None]) -> list[np.ndarray]:
        if self.pacer.served_steps <= self.spec.warmup_steps:
            return self.agent.policy.uniform(obs[0].shape[0])
        return self.agent.policy.act(obs, noise=noise)

    def train(self, progress: bool = True) -> TrainResult:
        """Serves and trains until `num_episodes` episodes ended (or Ctrl-C); writes the run folder."""
        tracker = RunTracker(self.run, self.agent, self._episodes0, progress, f"learner {self.spec.scenario}",
                             self._checkpoint_uri, on_checkpoint=self.metrics.observe_checkpoint)
        self.metrics.tracker = tracker
        self.agent.warm_up()  # compile before serving: explorers would otherwise wait on the first update
        self._thread.start()
        # Chunks are acknowledged once a checkpoint covers them: after a crash every chunk is either in the
        # restored checkpoint's counters or still pending in the queue, and read again.
        unacked: list = []  # inserted since the last snapshot
        covered: dict[int, list] = {}  # snapshot number -> chunks it covers, acknowledged once written
        snapshots = tracker.checkpoints_submitted
        try:
            while not tracker.done:  # Ctrl-C or SIGTERM sets tracker.stop
                for token, chunk in self.queue.get(max_chunks=64, timeout=0.05):
                    problem = chunk_problem(chunk, self.agent.env_spec.obs_dims, self._act_dims)
                    if problem:  # only a Redis entry can get here unchecked: drop it, never crash
                        log.error("dropping a chunk from %s: %s", chunk.explorer_id, problem)
                        self.queue.ack([token])
                        continue
                    self.agent.insert(chunk.transitions)
                    unacked.append(token)
                    for rewards, length in zip(chunk.episode_rewards, chunk.episode_lengths):
                        if not tracker.done:
                            tracker.record(Episode(float(rewards.sum()), rewards.astype(np.float64), int(length)))
                            if tracker.checkpoints_submitted != snapshots:  # a snapshot was just taken
                                snapshots = tracker.checkpoints_submitted
                                covered[snapshots] = unacked
                                unacked = []
                self._acknowledge(covered, tracker.checkpoints_written)
                due, start = self.agent.pending_updates, time.perf_counter()
                losses = self.agent.update()
                if losses is not None:
                    self.metrics.observe_updates(time.perf_counter() - start, due, losses)
        finally:
            self.server.stop_explorers("the run is over")
            result = tracker.finish()  # waits for the final checkpoint, which covers every chunk inserted
            self.queue.ack([t for tokens in covered.values() for t in tokens] + unacked)
            time.sleep(0.3)  # the server answers the explorers still waiting with Stop
            self._stop_serving.set()
            self._thread.join(timeout=5)
            self.metrics.service.close()
        return result
