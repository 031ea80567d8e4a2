"""What the learner exports to Prometheus: training progress, the inference server, the replay queue,
updates and losses per agent, checkpoints."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from maddpg.replay.redis_queue import QueueError, RedisQueue
from maddpg.telemetry.metrics import BATCH_BUCKETS, CHECKPOINT_BUCKETS, LATENCY_BUCKETS, Sample, ServiceMetrics
from maddpg.transport.server import ERROR_CODES

if TYPE_CHECKING:
    from maddpg.replay.intake import StreamConsumer
    from maddpg.tracking import RunTracker
    from maddpg.trainer import Trainer
    from maddpg.transport.server import InferenceServer

log = logging.getLogger(__name__)


@dataclass
class Watched:
    """The learner's parts whose state the metrics read on scrape."""

    trainer: Trainer
    server: InferenceServer
    queue: object  # LocalQueue or RedisQueue: depth(), and pending() for Redis
    consumer: StreamConsumer
    pacing_holds: Callable[[], int]
    tracker: RunTracker | None = None  # set once training starts


class LearnerMetrics:
    """The learner's metrics: histograms observed as things happen (`observe_*`), the rest read on scrape from
    the parts handed to `watch`."""

    def __init__(self, run_id: str):
        self.watched: Watched | None = None
        self._losses: dict[str, np.ndarray] | None = None
        self.service = m = ServiceMetrics("learner", run_id)
        self._batch = m.histogram("maddpg_inference_batch_size", "envs answered per inference batch", BATCH_BUCKETS)
        self._latency = m.histogram("maddpg_inference_latency_seconds",
                                    "time from an inference request's arrival to its reply", LATENCY_BUCKETS)
        self._update = m.histogram("maddpg_update_duration_seconds", "time of one all-agent MADDPG update",
                                   LATENCY_BUCKETS)
        self._checkpoint = m.histogram("maddpg_checkpoint_duration_seconds",
                                       "time to write one checkpoint (successful or not)", CHECKPOINT_BUCKETS)
        m.read(self._read)

    def watch(self, watched: Watched) -> None:
        self.watched = watched

    def observe_batch(self, envs: int, latencies: list[float]) -> None:
        self._batch.observe(envs)
        for seconds in latencies:
            self._latency.observe(seconds)

    def observe_updates(self, seconds: float, count: int, losses: dict[str, np.ndarray]) -> None:
        """`count` updates took `seconds` together; `losses` are the last one's (q_loss, p_loss, q per agent)."""
        for _ in range(count):
            self._update.observe(seconds / count)
        self._losses = losses

    def observe_checkpoint(self, seconds: float, ok: bool) -> None:
        self._checkpoint.observe(seconds)

    def _read(self) -> Iterator[Sample]:
        w = self.watched
        if w is None:
            return
        trainer, server, stats, tracker = w.trainer, w.server, w.server.stats, w.tracker
        yield Sample("maddpg_env_steps", "counter", "env steps inserted into the replay buffer", trainer.env_steps)
        yield Sample("maddpg_updates", "counter", "all-agent MADDPG updates run", trainer.updates)
        yield Sample("maddpg_replay_buffer_transitions", "gauge", "transitions in the replay buffer",
                     len(trainer.buffer))
        yield Sample("maddpg_pending_updates", "gauge", "updates due but not run yet", trainer.pending_updates)
        if tracker is not None:
            yield Sample("maddpg_episodes", "counter", "episodes finished", tracker.episodes)
            if not math.isnan(tracker.mean_reward):
                yield Sample("maddpg_episode_reward", "gauge",
                             "mean episode reward (sum over agents) of the last 100 episodes", tracker.mean_reward)
            cp = tracker.checkpointer.stats
            yield Sample("maddpg_checkpoints", "counter", "checkpoints written", cp.written)
            yield Sample("maddpg_checkpoint_failures", "counter", "checkpoint writes that failed", cp.failed)
        try:
            yield Sample("maddpg_replay_queue_depth", "gauge",
                         "chunks waiting in the replay queue (Redis: the consumer group's lag)", w.queue.depth())
            if isinstance(w.queue, RedisQueue):
                yield Sample("maddpg_replay_queue_unacked", "gauge",
                             "chunks read but not acknowledged yet (acknowledged once a checkpoint covers them)",
                             w.queue.pending())
        except QueueError as e:
            log.warning("replay queue depth unknown: %s", e)
        yield Sample("maddpg_inference_requests", "counter", "inference requests answered", stats.requests)
        yield Sample("maddpg_inference_batches", "counter", "inference batches run", stats.batches)
        yield Sample("maddpg_chunks", "counter", "transition chunks received over ZeroMQ", stats.chunks)
        for code in ERROR_CODES:  # every code from the start, so that rates and dashboards see zeros
            yield Sample("maddpg_inference_errors", "counter", "messages refused or dropped, by error code", stats.errors[code],
                         {"code": code})
        yield Sample("maddpg_explorers", "gauge", "explorers registered with the inference server",
                     server.num_explorers)
        yield Sample("maddpg_auth_failures", "counter", "peers refused for not holding the run's key",
                     server.auth_failures)
        yield Sample("maddpg_inference_idle_seconds", "gauge",
                     "seconds since an explorer last asked for actions (a run without explorers collects nothing)",
                     time.monotonic() - server.last_request)
        counts = w.consumer.counts()
        for name, help_text, value in (
                ("maddpg_replay_chunks_consumed", "chunks inserted into the replay buffer", counts.consumed),
                ("maddpg_replay_chunks_duplicate", "chunks skipped because a checkpoint or the buffer already held "
                 "them (resent, or re-read after a restart)", counts.duplicate),
                ("maddpg_replay_chunks_lost", "chunks that never arrived (gaps in an explorer's numbering, e.g. a "
                 "Redis restarted without persistence)", counts.lost),
                ("maddpg_replay_chunks_rejected", "chunks refused as malformed, non-finite or out of range",
                 counts.rejected)):
            yield Sample(name, "counter", help_text, value)
        yield Sample("maddpg_pacing_holds", "counter",
                     "inference batches held back because the trainer was behind (back-pressure)", w.pacing_holds())
        if self._losses is not None:
            names = trainer.env_spec.agent_ids
            for key, name, help_text in (("q_loss", "maddpg_critic_loss", "critic loss of the last update"),
                                         ("p_loss", "maddpg_actor_loss", "actor loss of the last update"),
                                         ("q", "maddpg_q_value", "mean Q of the last update's batch")):
                for agent_name, value in zip(names, self._losses[key]):
                    yield Sample(name, "gauge", help_text, float(value), {"agent": agent_name})
