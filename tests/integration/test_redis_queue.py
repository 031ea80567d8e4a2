"""The Redis Streams replay queue against real redis-server processes started, killed and restarted by the tests."""

import hashlib
import hmac
import itertools
import logging
import threading
import time
from urllib.parse import quote

import msgpack
import numpy as np
import pytest
import redis
from hypothesis import example, given, settings
from hypothesis import strategies as st

from maddpg.replay import redis_queue
from maddpg.replay.redis_queue import QueueError, RedisQueue, redact_url, stream_key
from maddpg.transport.codec import VERSION, encode_blob
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


def test_entries_delivered_by_a_read_whose_reply_was_lost_are_read_again(server):
    """Redis executed XREADGROUP (the entries moved to the learner's pending list, written to its AOF) and then
    died or dropped the connection before the reply arrived: the retry must not read past those entries."""
    explorer, learner = RedisQueue(server.url, "run1"), RedisQueue(server.url, "run1")
    explorer.put(_chunk(0))
    assert [c.seq for _, c in learner.get(10, timeout=1)] == [0]  # the pending walk is done: now new entries
    for k in range(1, 4):
        explorer.put(_chunk(k))
    real, lost = learner._redis.xreadgroup, []

    def reply_lost(*args, **kwargs):
        reply = real(*args, **kwargs)  # delivered in Redis...
        if not lost:
            lost.append(reply)
            raise redis.ConnectionError("Connection closed by server.")  # ...but the learner never sees it
        return reply

    learner._redis.xreadgroup = reply_lost
    got = [c.seq for _, c in learner.get(10, timeout=1)]
    assert lost  # the fault was injected once
    assert got == [1, 2, 3]  # from the pending list, once each
    explorer.put(_chunk(4))
    assert [c.seq for _, c in learner.get(10, timeout=1)] == [4]


def test_a_group_an_explorer_recreated_after_redis_lost_its_data_is_stated_by_the_learner(server, caplog):
    """Redis restarted without persistence while the learner's connection was down, and an explorer recreated
    the stream and group first: the learner still says that chunks may have been lost, and reads on."""
    explorer, learner = RedisQueue(server.url, "run1"), RedisQueue(server.url, "run1")
    for k in range(3):
        explorer.put(_chunk(k))
    assert [c.seq for _, c in learner.get(10, timeout=1)] == [0, 1, 2]
    redis.Redis.from_url(server.url).flushall()  # what a restart without persistence leaves
    explorer.put(_chunk(3))  # the explorer notices first: it recreates the group
    real, failed = learner._redis.xreadgroup, []

    def connection_lost(*args, **kwargs):
        if not failed:
            failed.append(True)
            raise redis.ConnectionError("Connection closed by server.")
        return real(*args, **kwargs)

    learner._redis.xreadgroup = connection_lost
    with caplog.at_level(logging.WARNING, logger="maddpg.replay.redis_queue"):
        got = [c.seq for _, c in learner.get(10, timeout=1)]
    assert got == [3] and learner.resets == 1
    assert "may have been lost" in caplog.text and "behind the last entry read" in caplog.text


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


def test_back_pressure_logs_a_long_wait_at_most_every_interval(server, caplog, monkeypatch):
    monkeypatch.setattr(redis_queue, "_WAIT_LOG_S", 0.2)  # 30 s in production
    explorer = RedisQueue(server.url, "run1", max_lag=1)
    learner = RedisQueue(server.url, "run1")
    explorer.put(_chunk(0))
    done = threading.Event()
    threading.Thread(target=lambda: (explorer.put(_chunk(1), poll_s=0.01), done.set()), daemon=True).start()
    time.sleep(0.7)
    learner.get(1, timeout=1)
    assert done.wait(5)
    waits = [r for r in caplog.records if "not yet read by the learner" in r.getMessage()]
    assert explorer.waited_s >= 0.6
    assert 2 <= len(waits) <= explorer.waited_s / 0.2  # dozens of polls, logged once every 0.2 s


# ------------------------------------------------------------ Redis restarts and lost streams
def _drain(learner, want, timeout=15.0):
    """Reads until `want` chunks came (retrying through an outage) or `timeout` passed."""
    got, deadline = [], time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        got += learner.get(want - len(got), timeout=0.1)
    return got


def test_a_redis_killed_and_restarted_with_aof_loses_nothing_and_delivers_each_entry_once(tmp_path, caplog):
    server = RedisServer(tmp_path).start()
    try:
        explorer, learner = RedisQueue(server.url, "run1"), RedisQueue(server.url, "run1")
        server.slow_down_next_load(2.0)  # the restart answers LOADING for ~2 s
        for k in range(8):
            explorer.put(_chunk(k))
        before = learner.get(5, timeout=1)
        learner.ack([t for t, _ in before[:2]])  # 2 covered by a checkpoint; 3 read but not acknowledged
        server.kill()
        threading.Timer(1.0, server.start, kwargs={"wait": False}).start()  # down for a second, then loading
        put = threading.Thread(target=lambda: explorer.put(_chunk(8)), daemon=True)
        put.start()  # retries with backoff through the outage and the loading
        after = _drain(learner, 4)
        put.join(15)
        assert not put.is_alive()
        assert [c.seq for _, c in before + after] == list(range(9))  # every entry, each once
        assert "loading" in caplog.text.lower()  # Redis answered LOADING and both sides waited
        assert learner.pending() == 7 and explorer.resets == learner.resets == 0
        learner.ack([t for t, _ in before[2:] + after])
        assert learner.pending() == 0 and learner.length() == 0
    finally:
        server.stop()


@pytest.mark.parametrize("first", ["learner", "explorer"])
def test_a_redis_restarted_without_persistence_gets_its_group_back(tmp_path, caplog, first):
    server = RedisServer(tmp_path, persistent=False).start()
    try:
        explorer, learner = RedisQueue(server.url, "run1"), RedisQueue(server.url, "run1")
        for k in range(3):
            explorer.put(_chunk(k))
        old = learner.get(2, timeout=1)
        server.kill()
        server.start()  # empty: no stream, no group
        if first == "learner":
            assert learner.get(10, timeout=0.05) == []  # NOGROUP: recreated, nothing there
        explorer.put(_chunk(3))  # XINFO GROUPS: no such key (if the explorer is first)
        new = learner.get(10, timeout=1)
        assert [c.seq for _, c in new] == [3]  # chunk 2 was lost with Redis' memory
        assert (learner if first == "learner" else explorer).resets == 1
        assert explorer.resets + learner.resets == 1  # the other side found the group already back
        assert "chunks not yet read may have been lost" in caplog.text
        learner.ack([t for t, _ in old])  # ids from before the reset: nothing to acknowledge, no error
        assert learner.pending() == 1
        learner.ack([t for t, _ in new])
        assert learner.pending() == 0 and learner.length() == 0
    finally:
        server.stop()


def test_a_stream_or_group_deleted_by_hand_is_recreated(server):
    explorer, learner = RedisQueue(server.url, "run1"), RedisQueue(server.url, "run1")
    raw = redis.Redis.from_url(server.url)
    explorer.put(_chunk(0))
    first = learner.get(10, timeout=1)
    raw.delete(stream_key("run1"))
    explorer.put(_chunk(1))  # the explorer finds no stream
    assert explorer.resets == 1
    assert [c.seq for _, c in learner.get(10, timeout=1)] == [1]
    learner.ack([t for t, _ in first])
    raw.xgroup_destroy(stream_key("run1"), "learner")  # the stream stays, without its group
    assert [c.seq for _, c in learner.get(10, timeout=1)] == [1]  # recreated at id 0: read again
    assert learner.resets == 1 and learner.pending() == 1
    explorer.put(_chunk(2))
    assert explorer.resets == 1 and [c.seq for _, c in learner.get(10, timeout=1)] == [2]


# ------------------------------------------------------------ credentials
PASSWORD, BOB_PASSWORD = "s3cret/@:pw", "b0b#?pw"  # characters a URL must percent-encode
WRONG = "n0t-the-pw"


def test_password_urls_work_for_both_sides(tmp_path):
    server = RedisServer(tmp_path, password=PASSWORD, users={"bob": BOB_PASSWORD}).start()
    try:
        for run_id, url in [("a", server.url), ("b", server.url_as("bob", BOB_PASSWORD))]:  # requirepass, ACL
            explorer, learner = RedisQueue(url, run_id), RedisQueue(url, run_id)
            explorer.put(_chunk(0))
            assert [c.seq for _, c in learner.get(10, timeout=1)] == [0]
            assert "***" in explorer.url and "pw" not in explorer.url
    finally:
        server.stop()


def test_a_wrong_password_fails_at_once_and_never_shows_the_password(tmp_path):
    server = RedisServer(tmp_path, password=PASSWORD, users={"bob": PASSWORD}).start()
    try:
        urls = [server.url_as(password=WRONG), server.url_as("bob", WRONG), server.url_as(),
                f"redis://127.0.0.1:{server.port}/0?password={quote(WRONG)}"]
        for url in urls:
            for call in (lambda q: q.put(_chunk(0)), lambda q: q.get(1, timeout=0)):
                started = time.monotonic()
                with pytest.raises(QueueError) as caught:
                    call(RedisQueue(url, "run1", give_up_after=30))
                assert time.monotonic() - started < 2  # not a retry loop
                message = str(caught.value)
                assert f"127.0.0.1:{server.port}" in message and "refused" in message
                assert WRONG not in message and PASSWORD not in message and quote(PASSWORD, safe="") not in message
    finally:
        server.stop()


def test_redact_url_hides_passwords_only():
    assert redact_url("redis://:pw@h:1/0") == "redis://:***@h:1/0"
    assert redact_url("redis://bob:p%40w@h:1/0") == "redis://bob:***@h:1/0"
    assert redact_url("redis://h:1/0?password=pw&db=2") == "redis://h:1/0?password=***&db=2"
    assert redact_url("redis://h:1/0") == "redis://h:1/0"
    for raw in ("redis://:Zq/9@h:1/0", "redis://u:Zq#9@h:1/0", "redis://h:1/0?password=Zq@9"):  # unencoded
        assert "Zq" not in redact_url(raw)
    for raw in ("redis://:Zq/9@h:1/0", "redis://u:Zq#9@h:1/0"):
        with pytest.raises(ValueError) as caught:
            RedisQueue(raw, "run1")  # redis-py's own message would quote "Zq" as the port
        assert "Zq" not in str(caught.value)


# ------------------------------------------------------------ signed entries
KEY = b"k" * 32


def test_signed_entries_pass_and_forged_ones_are_dropped(server, caplog):
    explorer = RedisQueue(server.url, "run1", signing_key=KEY)
    learner = RedisQueue(server.url, "run1", signing_key=KEY)
    raw = redis.Redis.from_url(server.url)
    good = explorer.put(_chunk(0))
    blob = encode_blob(_chunk(99))
    forged = [raw.xadd(stream_key("run1"), fields) for fields in (
        {b"chunk": blob},  # no MAC
        {b"chunk": blob, b"mac": b"\0" * 32},  # a wrong one
        {b"chunk": blob, b"mac": hmac.new(b"other key", blob, hashlib.sha256).digest()},
        {b"chunk": blob + b"x", b"mac": hmac.new(KEY, blob, hashlib.sha256).digest()})]  # a tampered blob
    explorer.put(_chunk(1))
    assert raw.xrange(stream_key("run1"), good, good)[0][1][b"mac"] == hmac.new(
        KEY, raw.xrange(stream_key("run1"), good, good)[0][1][b"chunk"], hashlib.sha256).digest()
    got = learner.get(10, timeout=1)
    assert [c.seq for _, c in got] == [0, 1]
    assert learner.rejected == 4 and learner.corrupted == 0
    assert learner.pending() == 2  # the forged ones were acknowledged at once
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert all(any(entry_id.decode() in m for m in errors) for entry_id in forged)
    with pytest.raises(ValueError):
        RedisQueue(server.url, "run1", signing_key=b"")


# ------------------------------------------------------------ any entry content
def _raw_blob(header: dict, frames: list[bytes]) -> bytes:
    """A blob in `encode_blob`'s framing around any header: shapes the codec was not written for."""
    frames = [msgpack.packb(header), *frames]
    return np.array([len(frames), *map(len, frames)], "<u4").tobytes() + b"".join(frames)


VALID = encode_blob(_chunk(7))
VALID_MAC = hmac.new(KEY, VALID, hashlib.sha256).digest()
HOSTILE = [  # the codec raises something other than ProtocolError on these, or decodes no usable Chunk
    _raw_blob({"v": VERSION, "t": "chunk", "f": {"explorer_id": "e", "run_id": "r", "seq": 1, "n": -1},
               "a": [["<f4", [0]]]}, [b""]),
    _raw_blob({"v": VERSION, "t": "chunk", "f": {}, "a": [["<f4", [2 ** 32, 2 ** 32]]]}, [b""]),
    _raw_blob({"v": VERSION, "t": "stop", "f": {"reason": "x"}, "a": []}, []),
    _raw_blob({"v": VERSION, "t": "chunk", "f": {"explorer_id": "e", "run_id": "r", "seq": 1, "n": 0},
               "a": [["<f4", [0]]] * 4}, [b""] * 4),
]
_blobs = st.one_of(st.binary(max_size=200), st.just(VALID), st.sampled_from(HOSTILE),
                   st.integers(0, len(VALID) - 1).map(lambda n: VALID[:n]),
                   st.tuples(st.integers(0, len(VALID) - 1), st.integers(1, 255)).map(
                       lambda p: VALID[:p[0]] + bytes([VALID[p[0]] ^ p[1]]) + VALID[p[0] + 1:]))
_values = st.one_of(_blobs, st.just(VALID_MAC), st.binary(min_size=32, max_size=32))
_entries = st.one_of(st.dictionaries(st.one_of(st.sampled_from([b"chunk", b"mac"]), st.binary(max_size=8)),
                                     _values, min_size=1, max_size=4),
                     st.just({b"chunk": VALID, b"mac": VALID_MAC}))


def _is_valid_chunk(c) -> bool:
    if not isinstance(c, Chunk):
        return False
    t = c.transitions
    arrays = [*t.obs, *t.action, t.reward, *t.next_obs, t.done, c.episode_rewards, c.episode_lengths]
    return (isinstance(c.seq, int) and isinstance(c.explorer_id, str)
            and len(t.obs) == len(t.action) == len(t.next_obs) >= 1
            and all(isinstance(a, np.ndarray) for a in arrays) and c.episode_lengths.dtype == np.int32)


def test_get_never_raises_and_returns_only_valid_chunks_whatever_the_entries(server):
    raw = redis.Redis.from_url(server.url)
    runs = itertools.count()

    @settings(max_examples=200, deadline=None, database=None)
    @given(entries=st.lists(_entries, min_size=1, max_size=5), signed=st.booleans())
    @example(entries=[{b"chunk": h} for h in HOSTILE], signed=False)
    def check(entries, signed):
        run_id = f"prop{next(runs)}"
        learner = RedisQueue(server.url, run_id, signing_key=KEY if signed else None, client=raw)
        learner.get(1, timeout=0)  # creates the group
        for fields in entries:
            raw.xadd(stream_key(run_id), fields)
        got = learner.get(len(entries) + 1, timeout=0)
        assert len(got) + learner.corrupted + learner.rejected == len(entries)
        assert all(_is_valid_chunk(c) for _, c in got)
        if signed:  # only the genuine entry can carry a matching MAC
            genuine = [f for f in entries if f.get(b"chunk") == VALID and f.get(b"mac") == VALID_MAC]
            assert [c.seq for _, c in got] == [7] * len(genuine)
        assert learner.pending() == len(got)  # the dropped ones were acknowledged
        raw.delete(stream_key(run_id))

    check()
