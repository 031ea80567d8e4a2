"""The replay queue between explorers and the learner's buffer.

Learner side, call order: `get()` chunks, insert them into the replay buffer, then `ack()` their tokens, so a
backend that persists chunks (Redis) can keep every unacknowledged one for re-reading after a crash.
"""

from __future__ import annotations

import queue
from typing import Any, Protocol

from maddpg.types import Chunk


class ChunkSource(Protocol):
    def get(self, max_chunks: int, timeout: float) -> list[tuple[Any, Chunk]]:
        """Up to `max_chunks` chunks with their ack tokens, waiting at most `timeout` seconds for the first."""

    def ack(self, tokens: list[Any]) -> None:
        """Confirms that the chunks are in the replay buffer."""


class LocalQueue:
    """The embedded backend: chunks arrive over the explorers' ZeroMQ connections into a bounded in-process
    queue. `put` refuses (returns False, so the chunk is not acknowledged) when the queue is full."""

    def __init__(self, max_chunks: int = 10_000):
        self._q: queue.Queue[Chunk] = queue.Queue(max_chunks)
        self.acked = 0

    def put(self, chunk: Chunk) -> bool:
        try:
            self._q.put_nowait(chunk)
            return True
        except queue.Full:
            return False

    def get(self, max_chunks: int, timeout: float) -> list[tuple[Any, Chunk]]:
        out = []
        try:
            out.append((None, self._q.get(timeout=timeout)))
            while len(out) < max_chunks:
                out.append((None, self._q.get_nowait()))
        except queue.Empty:
            pass
        return out

    def ack(self, tokens: list[Any]) -> None:
        self.acked += len(tokens)

    def depth(self) -> int:
        """Chunks waiting to be read."""
        return self._q.qsize()
