"""The batching server and the client over real ZeroMQ sockets (ipc:// and tcp://), in threads."""

import threading
import time

import msgpack
import numpy as np
import pytest
import zmq

from maddpg.envs.spaces import AgentSpec, EnvSpec
from maddpg.replay.queue import LocalQueue
from maddpg.transport.client import InferenceClient, StopRun, TransportError
from maddpg.transport.codec import decode, encode
from maddpg.transport.security import RunKey, secure_client
from maddpg.transport.server import ERROR_CODES, InferenceServer
from maddpg.types import Chunk, Error, Hello, InferenceRequest, Transition, Welcome

OBS_DIMS, ACT_DIMS = (3, 5), (2, 4)
ENV_SPEC = EnvSpec("test", (AgentSpec("a", 3, "discrete", 2, (2,)), AgentSpec("b", 5, "discrete", 4, (4,))))
KEY = RunKey.generate()


class EchoActor:
    """Actions that carry the observation's first value: a reply shows whose request it answered. Remembers
    which explorers' rows each batch held, and which explorers the server told it to forget."""

    def __init__(self):
        self.parts, self.forgotten = [], []

    def act(self, obs, parts):
        assert sum(len(new) for _, new in parts) == obs[0].shape[0]
        self.parts.append([(stream, new.copy()) for stream, new in parts])
        return [np.repeat(o[:, :1], a, axis=1) for o, a in zip(obs, ACT_DIMS)]

    def forget(self, stream):
        self.forgotten.append(stream)


class Served:
    def __init__(self, address, queue_size=100, **kwargs):
        self.queue = LocalQueue(queue_size)
        self.allow = threading.Event()
        self.allow.set()
        self.batch_sizes = []
        self.actor = EchoActor()
        self.server = InferenceServer(address, ENV_SPEC, '{"scenario": "test"}', self.actor,
                                      may_collect=lambda envs, registered: self.allow.is_set(), intake=self.queue, key=KEY,
                                      on_batch=lambda envs, latencies: self.batch_sizes.append(envs), **kwargs)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.server.serve, args=(self.stop,), daemon=True)
        self.thread.start()

    def close(self):
        self.stop.set()
        self.thread.join(5)


@pytest.fixture
def address(tmp_path):
    return f"ipc://{tmp_path}/learner.sock"


def _obs(value, e):
    return [np.full((e, d), value, np.float32) for d in OBS_DIMS]


def _client(address, name, e, **kwargs):
    c = InferenceClient(address, name, e, key=KEY, **kwargs)
    assert c.connect() == '{"scenario": "test"}'
    return c


def test_four_clients_get_their_own_actions_in_batches(address):
    served = Served(address, max_batch=16, max_wait=0.002)
    errors, clients = [], [_client(address, f"explorer-{k}", 8) for k in range(4)]

    def explore(k, client):
        try:
            for round_ in range(30):
                value = k + round_ / 100
                actions = client.infer(_obs(value, 8), np.zeros((8, 2), np.float32), np.zeros(8, bool))
                assert [a.shape for a in actions] == [(8, 2), (8, 4)]
                assert np.allclose(actions[0], value) and np.allclose(actions[1], value)
        except Exception as e:  # reported below: a thread cannot fail the test itself
            errors.append(e)

    threads = [threading.Thread(target=explore, args=(k, c)) for k, c in enumerate(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    served.close()
    assert not errors, errors
    stats = served.server.stats
    assert stats.requests == 120 and stats.envs_served == 960
    assert max(served.batch_sizes) <= 16  # max_batch honoured: two 8-env requests at most
    assert stats.batches < 120  # requests were batched together


def test_the_actor_hears_whose_envs_each_batch_holds_and_which_episodes_began(address):
    served = Served(address, max_wait=0.05)
    a, b = _client(address, "a", 3), _client(address, "b", 2)
    began = {"a": np.array([True, False, True]), "b": np.array([False, True])}
    threads = [threading.Thread(target=c.infer, args=(_obs(0.0, c.num_envs), np.zeros((c.num_envs, 2), np.float32),
                                                      began[c.explorer_id])) for c in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    served.close()
    seen = {stream: new for parts in served.actor.parts for stream, new in parts}
    assert seen.keys() == {"a", "b"}
    for name, new in began.items():
        np.testing.assert_array_equal(seen[name], new)
    assert set(served.actor.forgotten) == {"a", "b"}  # each hello starts the explorer's exploration afresh


def test_max_wait_bounds_how_long_a_lone_request_waits(address):
    served = Served(address, max_batch=64, max_wait=0.05)
    client = _client(address, "lonely", 2)

    def five_rounds() -> float:
        start = time.perf_counter()
        for _ in range(5):
            client.infer(_obs(1.0, 2), np.zeros((2, 2), np.float32), np.zeros(2, bool))
        return time.perf_counter() - start

    alone = five_rounds()  # the only registered explorer: nobody can join, so no waiting
    _client(address, "silent", 2)  # registered, but never asks
    waited = five_rounds()
    served.close()
    assert alone < 5 * 0.05
    assert 5 * 0.05 <= waited < 5 * 0.05 + 2.0  # each waited for the silent one for max_wait, not more


def _transitions(rows: int, value: float = 1.0) -> Transition:
    return Transition([np.full((rows, d), value, np.float32) for d in OBS_DIMS],
                      [np.full((rows, a), value, np.float32) for a in ACT_DIMS], np.full((rows, 2), value, np.float32),
                      [np.full((rows, d), value, np.float32) for d in OBS_DIMS], np.zeros((rows, 2), np.float32))


def _chunk_fields(rows: int = 6, value: float = 1.0) -> dict:
    return {"transitions": _transitions(rows, value), "episode_rewards": np.ones((1, 2), np.float32),
            "episode_lengths": np.array([25], np.int32)}


def _infer(client, value=0.0, e=2):
    return client.infer(_obs(value, e), np.zeros((e, 2), np.float32), np.zeros(e, bool))


def test_chunks_reach_the_queue_and_are_kept_until_a_checkpoint_covers_them(address):
    served = Served(address)
    client = _client(address, "explorer-0", 2)
    seq = client.send_chunk(_chunk_fields())
    _infer(client)  # the Ack arrives before this reply
    [(_, chunk)] = served.queue.get(10, 0.1)
    assert chunk.transitions.obs[1].shape == (6, 5) and chunk.episode_lengths.tolist() == [25]
    assert client.held_chunks == 1  # taken, but a learner crash now would lose it: kept
    served.queue.commit([], {f"explorer-0/{client.run_id}": seq})  # a written checkpoint covers it
    _infer(client)
    served.close()
    assert client.held_chunks == 0


def test_a_full_queue_refuses_chunks_and_the_explorer_sends_them_again_in_order(address):
    served = Served(address, queue_size=2)
    client = _client(address, "explorer-0", 2, resend_after=0.05)
    for k in range(5):
        client.send_chunk(_chunk_fields(value=k))
    _infer(client)
    got = [c.transitions.reward[0, 0] for _, c in served.queue.get(10, 0.1)]
    assert got == [0, 1]  # the rest was refused (queue_full, then chunk_gap), not dropped
    deadline = time.monotonic() + 10
    while len(got) < 5 and time.monotonic() < deadline:
        _infer(client)
        time.sleep(0.06)
        got += [c.transitions.reward[0, 0] for _, c in served.queue.get(10, 0.01)]
    served.close()
    assert got == [0, 1, 2, 3, 4]  # each once, in order
    assert served.server.stats.errors["queue_full"] >= 1


def test_a_restarted_learner_gets_the_held_chunks_from_where_its_checkpoint_stands():
    served = Served("tcp://127.0.0.1:*")
    address = served.server.address
    client = _client(address, "explorer-0", 2, request_timeout=0.5, give_up_after=10.0)
    life = f"explorer-0/{client.run_id}"
    for k in range(4):
        client.send_chunk(_chunk_fields(value=k))
    _infer(client)
    served.queue.commit([], {life: 2})  # chunks 1-2 are in a checkpoint; 3-4 only in the learner's memory
    _infer(client)
    assert client.held_chunks == 2
    served.close()  # killed: chunks 3 and 4 die with it
    time.sleep(0.2)
    revived = Served(address)
    revived.queue = LocalQueue(positions={life: 2})  # restored from the checkpoint
    revived.server._intake = revived.queue
    _infer(client)  # hello again: the Welcome says "from 3 on", the client resends 3 and 4
    time.sleep(0.2)
    got = [(c.seq, c.transitions.reward[0, 0]) for _, c in revived.queue.get(10, 0.5)]
    revived.close()
    assert got == [(3, 2.0), (4, 3.0)]


def _raw(address, identity=b"raw"):
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.IDENTITY, identity)
    sock.setsockopt(zmq.LINGER, 0)
    secure_client(sock, KEY)
    sock.connect(address)
    return sock


def _ask(sock, frames):
    sock.send_multipart(frames)
    assert sock.poll(5000), "the server did not answer"
    return decode(sock.recv_multipart())


def test_malformed_messages_get_error_replies_and_the_server_keeps_serving(address):
    served = Served(address, max_bytes=1 << 16)
    good = _client(address, "good", 2)
    raw = _raw(address)
    request = InferenceRequest("good", good.run_id, 1, _obs(0.5, 2), np.zeros((2, 2), np.float32), np.zeros(2, bool))
    frames = [bytes(f) for f in encode(request)]
    header = msgpack.unpackb(frames[0])
    cases = {
        "bad_header": [b"\x00\xffnot msgpack"],
        "bad_version": [msgpack.packb({**header, "v": 99}), *frames[1:]],
        "bad_shape": [frames[0], frames[1][:8], *frames[2:]],
        "bad_dtype": [msgpack.packb({**header, "a": [["<f8", [2, 3]]] + header["a"][1:]}), *frames[1:]],
        "unknown_explorer": [bytes(f) for f in encode(request._replace(explorer_id="stranger"))],
        "too_large": [frames[0], b"\x00" * (1 << 17), *frames[2:]],
    }
    for code, bad in cases.items():
        reply = _ask(raw, bad)
        assert isinstance(reply, Error) and reply.code == code, (code, reply)
        actions = good.infer(_obs(0.25, 2), np.zeros((2, 2), np.float32), np.zeros(2, bool))
        assert np.allclose(actions[0], 0.25)
    # A request whose shapes do not match the explorer's envs or the agents.
    wrong = request._replace(obs=[np.zeros((2, 4), np.float32), np.zeros((2, 5), np.float32)])
    assert _ask(raw, [bytes(f) for f in encode(wrong)]).code == "bad_shape"
    nan = request._replace(obs=[np.full((2, 3), np.nan, np.float32), np.zeros((2, 5), np.float32)])
    assert _ask(raw, [bytes(f) for f in encode(nan)]).code == "bad_value"
    served.close()
    assert served.server.stats.errors["bad_header"] == 1 and sum(served.server.stats.errors.values()) == 8
    assert set(served.server.stats.errors) <= set(ERROR_CODES)  # the metrics export every code from the start


def test_a_restarted_explorer_gets_a_fresh_state_and_its_old_chunks_are_refused(address):
    served = Served(address)
    old = _client(address, "explorer-0", 2)
    old_run = old.run_id
    old.close()
    new = _client(address, "explorer-0", 2)  # same name, new life
    assert new.run_id != old_run
    raw = _raw(address)
    stale = Chunk("explorer-0", old_run, 1, _transitions(1), np.zeros((0, 2), np.float32), np.zeros(0, np.int32))
    reply = _ask(raw, [bytes(f) for f in encode(stale)])
    assert reply.code == "unknown_explorer" and reply.chunk
    served.close()
    assert served.server.stats.restarts == 1 and served.queue.depth() == 0


def test_registrations_are_capped_and_idle_explorers_are_forgotten(address):
    served = Served(address, max_explorers=2, idle_timeout=0.4)
    _client(address, "a", 2)
    _client(address, "b", 2)
    raw = _raw(address)
    reply = _ask(raw, [bytes(f) for f in encode(Hello("c", "r", 2))])
    assert reply.code == "too_many_explorers"
    time.sleep(0.6)  # a and b say nothing
    deadline = time.monotonic() + 5
    while served.server.num_explorers and time.monotonic() < deadline:
        time.sleep(0.05)
    assert isinstance(_ask(raw, [bytes(f) for f in encode(Hello("c", "r", 2))]), Welcome)
    served.close()
    assert served.actor.forgotten.count("a") == 2 and served.actor.forgotten.count("b") == 2  # hello, then idle


def test_pacing_holds_replies_until_the_trainer_catches_up(address):
    served = Served(address)
    client = _client(address, "explorer-0", 2)
    served.allow.clear()
    result = []
    thread = threading.Thread(target=lambda: result.append(
        client.infer(_obs(1.0, 2), np.zeros((2, 2), np.float32), np.zeros(2, bool))))
    thread.start()
    time.sleep(0.3)
    assert not result  # held
    served.allow.set()
    thread.join(5)
    served.close()
    assert result and np.allclose(result[0][0], 1.0)


def test_a_slow_client_does_not_stop_the_server(address):
    served = Served(address)
    good = _client(address, "good", 2)
    slow = _raw(address, b"slow")
    slow.setsockopt(zmq.RCVHWM, 1)
    assert isinstance(_ask(slow, [bytes(f) for f in encode(Hello("slow", "r", 2))]), Welcome)
    request = InferenceRequest("slow", "r", 1, _obs(0.0, 2), np.zeros((2, 2), np.float32), np.zeros(2, bool))
    for _ in range(2000):  # never reads its replies
        slow.send_multipart([bytes(f) for f in encode(request)])
    for k in range(20):
        assert np.allclose(good.infer(_obs(k, 2), np.zeros((2, 2), np.float32), np.zeros(2, bool))[0], k)
    served.close()


def test_stop_ends_the_explorers_loop(address):
    served = Served(address)
    client = _client(address, "explorer-0", 2)
    served.server.stop_explorers("the run is over")
    with pytest.raises(StopRun, match="the run is over"):
        client.infer(_obs(1.0, 2), np.zeros((2, 2), np.float32), np.zeros(2, bool))
    served.close()


def test_a_client_reconnects_to_a_restarted_server_and_gives_up_without_one():
    served = Served("tcp://127.0.0.1:*")  # a free port, chosen by the OS at bind time
    address = served.server.address
    client = _client(address, "explorer-0", 2, request_timeout=0.5, give_up_after=3.0)
    served.close()  # the learner dies...
    time.sleep(0.2)
    revived = Served(address)  # ...and comes back knowing nothing of this explorer
    actions = client.infer(_obs(2.0, 2), np.zeros((2, 2), np.float32), np.zeros(2, bool))
    assert np.allclose(actions[0], 2.0)
    assert revived.server.explorers == {"explorer-0": client.run_id}
    revived.close()
    start = time.monotonic()
    with pytest.raises(TransportError, match="did not answer"):
        client.infer(_obs(2.0, 2), np.zeros((2, 2), np.float32), np.zeros(2, bool))
    assert time.monotonic() - start < 10
