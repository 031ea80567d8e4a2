"""What an explorer exports to Prometheus: env steps, episodes and their reward, chunks sent, inference round
trips, reconnects and back-pressure."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

from maddpg.episodes import Episode
from maddpg.telemetry.metrics import LATENCY_BUCKETS, Sample, ServiceMetrics
from maddpg.transport.client import InferenceClient


class ExplorerMetrics:
    """Counts kept by the explorer loop (plain attributes, read on scrape) plus the round-trip histogram.

    Args:
      run_id: the learner's run id (from its Welcome). client: the connection (for its reconnects).
      queue: the Redis queue chunks go to, if any (for the time spent held by back-pressure).
    """

    def __init__(self, run_id: str, client: InferenceClient, queue=None):
        self._client, self._queue = client, queue
        self.env_steps = self.episodes = self.chunks = 0
        self.transitions = self.episodes_sent = 0  # carried by the chunks sent
        self._recent: deque[float] = deque(maxlen=100)
        self.service = m = ServiceMetrics("explorer", run_id)
        self.round_trip = m.histogram("maddpg_inference_round_trip_seconds",
                                      "time from sending observations to receiving actions, seen by the explorer",
                                      LATENCY_BUCKETS)
        m.read(self._read)

    def episodes_ended(self, episodes: list[Episode]) -> None:
        self.episodes += len(episodes)
        self._recent.extend(e.total for e in episodes)

    def chunk_sent(self, transitions: int, episodes: int) -> None:
        self.chunks += 1
        self.transitions += transitions
        self.episodes_sent += episodes

    def _read(self) -> Iterator[Sample]:
        yield Sample("maddpg_env_steps", "counter", "env steps taken (one per env copy and step)", self.env_steps)
        yield Sample("maddpg_episodes", "counter", "episodes finished", self.episodes)
        recent = list(self._recent)
        if recent:
            yield Sample("maddpg_episode_reward", "gauge",
                         "mean episode reward (sum over agents) of the last 100 episodes", sum(recent) / len(recent))
        yield Sample("maddpg_chunks", "counter", "transition chunks sent", self.chunks)
        yield Sample("maddpg_explorer_held_chunks", "gauge",
                     "chunks sent over ZeroMQ that no written checkpoint covers yet (kept to send again)",
                     self._client.held_chunks)
        yield Sample("maddpg_explorer_reconnects", "counter", "reconnects after the learner went silent",
                     self._client.reconnects)
        yield Sample("maddpg_queue_backpressure_seconds", "counter",
                     "time spent waiting for the Redis replay queue to drain (back-pressure; 0 with the local queue)",
                     self._queue.waited_s if self._queue is not None else 0.0)
