"""The intake ledger and the stream consumer: each explorer life's chunks consumed once, in order; commits
only for what a written checkpoint covers."""

import numpy as np

from maddpg.replay.intake import StreamConsumer
from maddpg.replay.ledger import IntakeLedger, Verdict
from maddpg.replay.queue import LocalQueue
from maddpg.types import Chunk, Transition

OBS, ACT = [3], [2]


def _chunk(seq: int, life: str = "r1", value: float = 1.0, rows: int = 4) -> Chunk:
    t = Transition([np.full((rows, 3), value, np.float32)], [np.full((rows, 2), value, np.float32)],
                   np.full((rows, 1), value, np.float32), [np.full((rows, 3), value, np.float32)],
                   np.zeros((rows, 1), np.float32))
    return Chunk("e", life, seq, t, np.ones((1, 1), np.float32), np.array([25], np.int32))


def test_the_ledger_skips_what_it_holds_and_counts_gaps_as_lost():
    ledger = IntakeLedger({"e/r1": 3})
    assert ledger.classify("e/r1", 2) == (Verdict.DUPLICATE, 0)
    assert ledger.classify("e/r1", 4) == (Verdict.NEW, 0)
    assert ledger.consume("e/r1", 7) == 3 and ledger.lost == 3
    assert ledger.consume("e/r1", 7) == 0 and ledger.duplicates == 1
    assert ledger.next_seq("e/r2") == 1 and ledger.snapshot() == {"e/r1": 7}


def test_the_ledger_forgets_the_least_recently_active_lives_beyond_its_bound():
    ledger = IntakeLedger(max_lives=2)
    for life in ("a", "b", "a", "c"):
        ledger.consume(life, ledger.next_seq(life))
    assert set(ledger.snapshot()) == {"a", "c"}


class _Queue:
    def __init__(self):
        self.commits = []

    def commit(self, tokens, positions):
        self.commits.append((tokens, positions))


def _consumer(queue, positions=None):
    inserted, recorded = [], []
    consumer = StreamConsumer(queue, IntakeLedger(positions), OBS, ACT, inserted.append, recorded.append)
    return consumer, inserted, recorded


def test_duplicates_and_poison_never_reach_the_buffer_but_are_committed():
    queue = _Queue()
    consumer, inserted, recorded = _consumer(queue, {"e/r1": 1})
    assert not consumer.consume("t1", _chunk(1))  # held by the restored checkpoint already
    assert consumer.consume("t2", _chunk(2))
    assert not consumer.consume("t3", _chunk(3, value=np.nan))  # refused, but consumed: skipped after a restart
    assert not consumer.consume("t4", _chunk(4, value=1e30))
    assert [c.seq for c in inserted] == [2] and recorded == inserted
    assert consumer.rejected == 2 and consumer.ledger.duplicates == 1 and consumer.ledger.last("e/r1") == 4
    consumer.covered_by(1)
    consumer.written(0)
    assert queue.commits == []  # nothing is committed before a checkpoint covering it is written
    consumer.written(1)
    assert queue.commits == [(["t1", "t2", "t3", "t4"], {"e/r1": 4})]


def test_commits_follow_written_checkpoints_in_order_and_the_newest_positions_win():
    queue = _Queue()
    consumer, _, _ = _consumer(queue)
    consumer.consume("a", _chunk(1))
    consumer.covered_by(1)
    consumer.consume("b", _chunk(2))
    consumer.covered_by(2)
    consumer.consume("c", _chunk(3))
    consumer.written(2)  # checkpoint 1 was superseded by 2 before it was written: 2 covers both
    assert queue.commits == [(["a", "b"], {"e/r1": 2})]
    consumer.covered_by(3)
    consumer.consume("d", _chunk(3))  # a duplicate: nothing new for a checkpoint to hold
    consumer.covered_by(3)  # the run ends without a new snapshot: the newest covers it too
    consumer.written(3)
    assert queue.commits[-1] == (["c", "d"], {"e/r1": 3})
    restored = {"chunks_lost": 5, "chunks_rejected": 2, "chunks_duplicate": 1}
    consumer.restored(restored)
    assert {k: consumer.position()[k] for k in restored} == restored


def test_the_local_queue_takes_each_life_in_order_once_and_refuses_what_it_cannot_hold():
    queue = LocalQueue(max_chunks=2, positions={"e/r1": 1})
    assert queue.hello("e", "r1", oldest_chunk=1) == 2  # the restored checkpoint holds chunk 1
    assert queue.offer(_chunk(1)) is None  # a resend of what it holds: acknowledged, not queued
    assert queue.offer(_chunk(3)) == "chunk_gap"
    assert queue.offer(_chunk(2)) is None and queue.offer(_chunk(3)) is None
    assert queue.offer(_chunk(4)) == "queue_full"
    assert [c.seq for _, c in queue.get(10, 0.01)] == [2, 3]
    assert queue.offer(_chunk(4)) is None
    queue.commit([], {"e/r1": 4})
    assert queue.durable("e", "r1") == 4 and queue.durable("e", "other") == 0
    assert queue.hello("e", "r9", oldest_chunk=5) == 5  # chunks 1-4 of r9 are gone: not waited for
