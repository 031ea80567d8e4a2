"""The Redis Streams replay queue against a real redis-server started by the test."""

import threading
import time

import numpy as np
import pytest
import redis

from maddpg.replay.redis_queue import RedisQueue, stream_key
from maddpg.types import Chunk, Transition
from tests.integration.redis_server import RedisServer


@pytest.fixture
def server(tmp_path):
    srv = RedisServer(tmp_path).start()
    yield srv
    srv.stop()


def _chunk(seq, rows=4, dims=(3, 5)):
    n = len(dims)
    t = Transition([np.full((rows, d), seq, np.float32) for d in dims], [np.full((rows, 2), seq, np.float32)] * n,
                   np.full((rows, n), seq, np.float32), [np.full((rows, d), seq + 0.5, np.float32) for d in dims],
                   np.zeros((rows, n), np.float32))
    return Chunk("e0", "r0", seq, t, np.zeros((0, n), np.float32), np.zeros(0, np.int32))


def test_chunks_round_trip_through_a_consumer_group(server):
    explorer, learner = RedisQueue(server.url, "run1"), RedisQueue(server.url, "run1")
    ids = [explorer.put(_chunk(k)) for k in range(5)]
    got = learner.get(10, timeout=1)
    assert [token for token, _ in got] == ids
    for k, (_, chunk) in enumerate(got):
        assert chunk.seq == k and chunk.transitions.obs[1].shape == (4, 5)
        np.testing.assert_array_equal(chunk.transitions.next_obs[0], np.full((4, 3), k + 0.5, np.float32))
    assert learner.pending() == 5
    learner.ack([t for t, _ in got])
    assert learner.pending() == 0 and learner.length() == 0  # consumed entries are trimmed
    assert learner.get(10, timeout=0.05) == []


def test_a_restarted_learner_reads_its_unacknowledged_entries_again(server):
    explorer = RedisQueue(server.url, "run1")
    for k in range(6):
        explorer.put(_chunk(k))
    crashed = RedisQueue(server.url, "run1")
    first = crashed.get(4, timeout=1)
    crashed.ack([first[0][0]])  # only entry 0 was covered by a checkpoint before the crash
    del crashed
    restarted = RedisQueue(server.url, "run1")
    seqs = [c.seq for _, c in restarted.get(10, timeout=1)]
    seqs += [c.seq for _, c in restarted.get(10, timeout=1)]
    assert seqs == [1, 2, 3, 4, 5]  # the pending ones first, then the ones never delivered


def test_back_pressure_waits_and_never_trims_unread_entries(server):
    explorer = RedisQueue(server.url, "run1", max_lag=3)
    learner = RedisQueue(server.url, "run1")
    for k in range(3):
        explorer.put(_chunk(k))
    done = threading.Event()
    threading.Thread(target=lambda: (explorer.put(_chunk(3)), done.set()), daemon=True).start()
    time.sleep(0.4)
    assert not done.is_set()  # lag 3 >= max_lag: the explorer waits
    assert learner.length() == 3
    got = learner.get(2, timeout=1)  # the learner reads two: the lag drops
    assert done.wait(5)
    learner.ack([t for t, _ in got])
    assert learner.length() == 2  # only the two acknowledged entries were trimmed
    rest = learner.get(10, timeout=1)
    assert [c.seq for _, c in rest] == [2, 3]


def test_a_corrupted_entry_is_counted_acknowledged_and_skipped(server):
    explorer, learner = RedisQueue(server.url, "run1"), RedisQueue(server.url, "run1")
    explorer.put(_chunk(0))
    raw = redis.Redis.from_url(server.url)
    raw.xadd(stream_key("run1"), {b"chunk": b"\x05\x00\x00\x00garbage"})
    raw.xadd(stream_key("run1"), {b"other": b"x"})
    explorer.put(_chunk(1))
    got = learner.get(10, timeout=1)
    assert [c.seq for _, c in got] == [0, 1]
    assert learner.corrupted == 2 and learner.pending() == 2  # the bad ones were acknowledged


def test_the_queue_survives_a_redis_restart(server):
    explorer, learner = RedisQueue(server.url, "run1"), RedisQueue(server.url, "run1")
    explorer.put(_chunk(0))
    server.stop()
    result = []
    thread = threading.Thread(target=lambda: result.append(explorer.put(_chunk(1))), daemon=True)
    thread.start()  # retries with backoff while Redis is down
    time.sleep(0.5)
    assert not result
    server.start()
    thread.join(15)
    assert result
    assert [c.seq for _, c in learner.get(10, timeout=2)] == [0, 1]  # nothing acknowledged was lost
