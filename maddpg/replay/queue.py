"""The replay queue between explorers and the learner's buffer.

Learner side, call order: `get()` chunks, insert them into the replay buffer, take a checkpoint, then
`commit()` the tokens and intake positions it covers, so that after a crash every chunk is either in the
restored checkpoint or still held for re-reading: Redis keeps unacknowledged entries; with the local queue the
explorers keep every chunk that no written checkpoint covers yet and send it again.
"""

from __future__ import annotations

import queue
from typing import Any, Protocol

from maddpg.replay.ledger import IntakeLedger, Verdict, life_key
from maddpg.types import Chunk


class ChunkSource(Protocol):
    def get(self, max_chunks: int, timeout: float) -> list[tuple[Any, Chunk]]:
        """Up to `max_chunks` chunks with their tokens, waiting at most `timeout` seconds for the first."""

    def commit(self, tokens: list[Any], positions: dict[str, int]) -> None:
        """A written checkpoint covers these chunks and the intake ledger's `positions`."""

    def depth(self) -> int:
        """Chunks waiting to be read."""


class LocalQueue:
    """The embedded backend: chunks arrive over the explorers' ZeroMQ connections into a bounded in-process queue.

    Each explorer life's chunks are taken in order, each once: `offer` accepts the next one (or acknowledges a
    resend it already holds again) and refuses one after a gap or when the queue is full, with an error code
    the explorer acts on by sending again. Explorers keep a chunk until `durable()` covers it.

    Args:
      max_chunks: the queue's capacity. positions: the restored checkpoint's intake positions.
    """

    def __init__(self, max_chunks: int = 10_000, positions: dict[str, int] | None = None):
        self._q: queue.Queue[Chunk] = queue.Queue(max_chunks)
        self._accepted = IntakeLedger(positions)  # touched by the server thread only
        self._durable: dict[str, int] = dict(positions or {})  # replaced whole (one reference swap): thread-safe

    # ------------------------------------------------------------ server thread
    def hello(self, explorer_id: str, run_id: str, oldest_chunk: int) -> int:
        """An explorer life (re)connects holding chunks from `oldest_chunk` on; returns the seq to resend from.

        Chunks before `oldest_chunk` that were never accepted are gone (the explorer dropped them as durable in
        a checkpoint this learner did not restore): they are not awaited; the trainer counts the gap as lost.
        """
        key = life_key(explorer_id, run_id)
        self._accepted.skip_to(key, oldest_chunk)
        return self._accepted.next_seq(key)

    def offer(self, chunk: Chunk) -> str | None:
        """Takes `chunk` if it is its life's next; None when it is held (now or before), else an error code:
        "chunk_gap" (an earlier chunk is missing: resend from it) or "queue_full" (resend later)."""
        key = life_key(chunk.explorer_id, chunk.run_id)
        verdict, gap = self._accepted.classify(key, chunk.seq)
        if verdict is Verdict.DUPLICATE:
            return None
        if gap:
            return "chunk_gap"
        try:
            self._q.put_nowait(chunk)
        except queue.Full:
            return "queue_full"
        self._accepted.consume(key, chunk.seq)
        return None

    def durable(self, explorer_id: str, run_id: str) -> int:
        """The last chunk seq of this life that a written checkpoint covers."""
        return self._durable.get(life_key(explorer_id, run_id), 0)

    # ------------------------------------------------------------ trainer thread
    def get(self, max_chunks: int, timeout: float) -> list[tuple[Any, Chunk]]:
        out = []
        try:
            out.append((None, self._q.get(timeout=timeout)))
            while len(out) < max_chunks:
                out.append((None, self._q.get_nowait()))
        except queue.Empty:
            pass
        return out

    def commit(self, tokens: list[Any], positions: dict[str, int]) -> None:
        self._durable = dict(positions)

    def depth(self) -> int:
        return self._q.qsize()
