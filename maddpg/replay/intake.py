"""The learner's side of the replay queue: chunks into the buffer exactly once, commits once a checkpoint covers them.

Call order, on the trainer thread::

    for token, chunk in queue.get(...):
        consumer.consume(token, chunk)       # checked, deduplicated, inserted, its episodes recorded
        if tracker.checkpoint_due:
            consumer.covered_by(tracker.checkpoint())
    consumer.written(tracker.checkpoints_written)   # commits what written checkpoints cover

A chunk that is malformed or holds non-finite or absurd values is refused, counted and consumed (its seq
advances the ledger, so it is skipped after a restart too): nothing a peer sends reaches the buffer unchecked.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from maddpg.replay.ledger import IntakeLedger, life_key
from maddpg.replay.queue import ChunkSource
from maddpg.transport.codec import chunk_problem
from maddpg.types import Chunk

log = logging.getLogger(__name__)


class ChunkCounts(NamedTuple):
    consumed: int
    duplicate: int
    lost: int
    rejected: int


class StreamConsumer:
    """Consumes chunks from `queue` in each explorer life's order, each once.

    Args:
      queue: the replay queue (commits go back to it).
      ledger: the intake positions (restored from the checkpoint the run resumed from).
      obs_dims, act_dims: the agents' sizes, to check chunks against.
      insert: takes a valid chunk's transitions into the buffer.
      record: called with each valid chunk (to record its episodes).
    """

    def __init__(self, queue: ChunkSource, ledger: IntakeLedger, obs_dims: list[int], act_dims: list[int],
                 insert: Callable[[Chunk], None], record: Callable[[Chunk], None]):
        self._queue, self.ledger = queue, ledger
        self._obs_dims, self._act_dims = obs_dims, act_dims
        self._insert, self._record = insert, record
        self._uncovered: list[Any] = []  # tokens consumed since the last snapshot
        self._covered: dict[int, tuple[list[Any], dict[str, int]]] = {}  # snapshot -> (tokens, positions)
        self.inserted = 0
        self.rejected = 0
        self._quiet_until = 0.0

    def consume(self, token: Any, chunk: Chunk) -> bool:
        """Inserts `chunk` unless it was consumed before or is malformed; True when inserted."""
        self._uncovered.append(token)
        key = life_key(chunk.explorer_id, chunk.run_id)
        duplicates = self.ledger.duplicates
        problem = chunk_problem(chunk, self._obs_dims, self._act_dims)
        lost = self.ledger.consume(key, chunk.seq)
        if self.ledger.duplicates != duplicates:
            return False
        if lost:
            log.warning("%d chunk(s) of explorer life %s never arrived (before chunk %d): counted as lost",
                        lost, key, chunk.seq)
        if problem:
            self.rejected += 1
            self._log_rejection(key, chunk.seq, problem)
            return False
        self._insert(chunk)
        self._record(chunk)
        self.inserted += 1
        return True

    def counts(self) -> ChunkCounts:
        """The chunks consumed, skipped as duplicates, lost and rejected, over the whole run."""
        return ChunkCounts(self.inserted, self.ledger.duplicates, self.ledger.lost, self.rejected)

    def position(self) -> dict:
        """For a checkpoint: the ledger's positions and the run's chunk counts (see `restored`)."""
        return {"intake": self.ledger.snapshot(), "chunks_lost": self.ledger.lost,
                "chunks_duplicate": self.ledger.duplicates, "chunks_rejected": self.rejected}

    def restored(self, counters: dict) -> None:
        """Continues the counts of the checkpoint the run resumed from."""
        self.ledger.lost = int(counters.get("chunks_lost", 0))
        self.ledger.duplicates = int(counters.get("chunks_duplicate", 0))
        self.rejected = int(counters.get("chunks_rejected", 0))

    def covered_by(self, snapshot: int) -> None:
        """Snapshot `snapshot` (the newest taken) covers everything consumed so far."""
        tokens = self._covered.get(snapshot, ([], {}))[0]  # the final one may be the newest again
        self._covered[snapshot] = (tokens + self._uncovered, self.ledger.snapshot())
        self._uncovered = []

    def written(self, snapshot: int) -> None:
        """Checkpoints up to `snapshot` are written: commit what they cover (the newest positions win)."""
        done = sorted(k for k in self._covered if k <= snapshot)
        if not done:
            return
        tokens = [t for k in done for t in self._covered[k][0]]
        positions = self._covered[done[-1]][1]
        for k in done:
            del self._covered[k]
        self._queue.commit(tokens, positions)

    def _log_rejection(self, key: str, seq: int, problem: str) -> None:
        now = time.monotonic()
        if now >= self._quiet_until:  # a flood of bad chunks must not flood the log
            self._quiet_until = now + 10.0
            log.error("refused chunk %d of %s: %s (%d refused so far)", seq, key, problem, self.rejected)
