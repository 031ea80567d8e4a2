"""The explorer process: steps E envs, asks the learner for actions, sends transition chunks.

It imports no TensorFlow: the actions come from the learner, and turning them into env actions is numpy.
"""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np

from maddpg.acting.heads import make_heads, to_env
from maddpg.envs.mpe import make_env
from maddpg.episodes import EpisodeTracker
from maddpg.runspec import RunSpec
from maddpg.telemetry.logs import LogContext
from maddpg.transport.client import InferenceClient, StopRun
from maddpg.transport.security import RunKey
from maddpg.types import Chunk, Transition
from services.explorer.metrics import ExplorerMetrics

log = logging.getLogger(__name__)


class ChunkBuilder:
    """Collects T steps of E envs and emits them as one chunk of T*E transitions (preallocated arrays)."""

    def __init__(self, steps: int, num_envs: int, obs_dims: list[int], act_dims: list[int]):
        self.steps, self.num_envs, self._t = steps, num_envs, 0
        n = len(obs_dims)
        self._obs = [np.zeros((steps, num_envs, d), np.float32) for d in obs_dims]
        self._next = [np.zeros((steps, num_envs, d), np.float32) for d in obs_dims]
        self._act = [np.zeros((steps, num_envs, a), np.float32) for a in act_dims]
        self._rew = np.zeros((steps, num_envs, n), np.float32)
        self._done = np.zeros((steps, num_envs, n), np.float32)

    def add(self, obs, actions, reward, next_obs, terminated) -> bool:
        """Adds one step; returns True when the chunk is full."""
        t = self._t
        for dst, src in zip(self._obs, obs):
            dst[t] = src
        for dst, src in zip(self._act, actions):
            dst[t] = src
        for dst, src in zip(self._next, next_obs):
            dst[t] = src
        self._rew[t] = reward
        self._done[t] = terminated[:, None]
        self._t += 1
        return self._t == self.steps

    def take(self) -> Transition:
        rows = self._t * self.num_envs
        t = self._t

        def flat(x):
            return x[:t].reshape(rows, -1).copy()

        self._t = 0
        return Transition([flat(o) for o in self._obs], [flat(a) for a in self._act], flat(self._rew),
                          [flat(o) for o in self._next], flat(self._done))


def chunk_sink(client: InferenceClient, redis_url: str | None = None,
               key: RunKey | None = None) -> tuple[Callable[[dict], None], Any]:
    """Where chunks go: over the ZeroMQ connection into the learner's local queue, or into the run's Redis
    stream when the learner's Welcome names one (`redis_url`, e.g. from REDIS_URL, overrides its address;
    entries are signed with the run's key). Returns the send function and the RedisQueue (None for the local
    queue)."""
    welcome = client.welcome
    if welcome is None or welcome.queue == "local":
        return client.send_chunk, None
    from maddpg.replay.redis_queue import RedisQueue

    queue = RedisQueue(redis_url or welcome.queue, welcome.run_id,
                       signing_key=None if key is None else key.stream_key)
    seq = iter(range(1, 1 << 62))  # this life's chunks 1, 2, 3, ...: the learner consumes each once, in order

    def put(fields: dict) -> None:
        queue.put(Chunk(client.explorer_id, client.run_id, next(seq), **fields))
    return put, queue


def run_explorer(learner: str, explorer_id: str, num_envs: int, *, key: RunKey | None = None,
                 redis_url: str | None = None, seed: int | None = None, request_timeout: float = 30.0,
                 give_up_after: float = 600.0, metrics_port: int | None = None,
                 log_context: LogContext | None = None) -> int:
    """Explores until the learner ends the run; returns the env steps taken.

    `key`: the run's secret (the learner accepts only peers holding it). `redis_url`: overrides the Redis
    address the learner's Welcome names. `metrics_port`: serve Prometheus metrics there once connected (0: a
    free port; None: no server). `log_context`: gets the run id and the step count once connected.

    Raises:
      TransportError: the learner was unreachable for `give_up_after` seconds or refused the explorer.
    """
    client = InferenceClient(learner, explorer_id, num_envs, key=key, request_timeout=request_timeout,
                             give_up_after=give_up_after)
    spec = RunSpec.from_stored(client.connect())  # a learner of an earlier version may send retired fields
    send_chunk, queue = chunk_sink(client, redis_url, key)
    metrics = ExplorerMetrics(client.welcome.run_id, client, queue)
    if log_context is not None:
        log_context.run_id, log_context.step = client.welcome.run_id, lambda: metrics.env_steps
    if metrics_port is not None:
        log.info("explorer %s: metrics on port %d", explorer_id, metrics.service.serve(metrics_port))
    env = make_env(spec, num_envs=num_envs)
    heads = make_heads(env.spec, spec.resolved_action_dist)
    builder = ChunkBuilder(spec.chunk_len, num_envs, env.spec.obs_dims, [h.action_dim for h in heads])
    tracker = EpisodeTracker(num_envs, env.spec.num_agents)
    finished = []
    if seed is None:  # distinct, reproducible streams per explorer name
        seed = spec.seed + 1 + zlib.crc32(explorer_id.encode()) % 1_000_000
    obs = env.reset(seed=seed)
    reward = np.zeros((num_envs, env.spec.num_agents), np.float32)
    done = np.ones(num_envs, bool)  # every env starts an episode
    log.info("explorer %s (run %s): %d envs of %s, learner %s", explorer_id, client.run_id, num_envs,
             spec.scenario, learner)
    try:
        while True:
            sent = time.perf_counter()
            actions = client.infer(obs, reward, done)
            metrics.round_trip.observe(time.perf_counter() - sent)
            step = env.step([to_env(h, a) for h, a in zip(heads, actions)])
            ended = step.terminated | step.truncated
            episodes = tracker.add(step.reward, ended)
            finished.extend(episodes)
            metrics.episodes_ended(episodes)
            metrics.env_steps += num_envs
            if builder.add(obs, actions, step.reward, step.next_obs, step.terminated):
                rewards = np.array([e.per_agent for e in finished], np.float32).reshape(-1, env.spec.num_agents)
                lengths = np.array([e.length for e in finished], np.int32)
                transitions = builder.take()
                send_chunk({"transitions": transitions, "episode_rewards": rewards, "episode_lengths": lengths})
                metrics.chunk_sent(transitions.reward.shape[0], len(lengths))
                finished = []
            obs, reward, done = step.obs, step.reward, ended
    except StopRun as stop:
        log.info("explorer %s: %s after %d env steps; sent %d chunks (%d transitions, %d episodes)", explorer_id,
                 stop, metrics.env_steps, metrics.chunks, metrics.transitions, metrics.episodes_sent)
    finally:
        client.close()
        env.close()
        metrics.service.close()
    return metrics.env_steps
