"""CURVE servers and clients over real ZeroMQ sockets (tcp:// and ipc://): who gets through, who is counted."""

import threading
import time

import pytest
import zmq

from maddpg.launch import free_tcp_address
from maddpg.transport.security import RunKey, secure_client, secure_server

SILENCE_MS = 500  # how long a refused client's message must stay away


@pytest.fixture(params=["tcp", "ipc"])
def address(request, tmp_path):
    return free_tcp_address() if request.param == "tcp" else f"ipc://{tmp_path}/learner.sock"


@pytest.fixture
def ctx():
    """The process-wide context, as the learner and the tests of the transport use it."""
    return zmq.Context.instance()


class Learner:
    """A ROUTER secured with `key`, echoing what it receives."""

    def __init__(self, ctx, address, key, **kwargs):
        self.sock = ctx.socket(zmq.ROUTER)
        self.sock.linger = 0
        self.auth = secure_server(self.sock, key, **kwargs)
        self.sock.bind(address)

    def got_message(self, timeout_ms):
        return bool(self.sock.poll(timeout_ms, zmq.POLLIN))

    def echo(self):
        self.sock.send_multipart(self.sock.recv_multipart())

    def close(self):
        self.sock.close()
        self.auth.close()


def _explorer(ctx, address, key=None, keypair=None, server_key=None):
    """A DEALER: of the run of `key`, or with an explicit CURVE keypair and server key, or plain."""
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    if key is not None:
        secure_client(sock, key)
    elif keypair is not None:
        sock.curve_publickey, sock.curve_secretkey = keypair
        sock.curve_serverkey = server_key
    sock.connect(address)
    return sock


def _knock(sock, payload=b"let me in"):
    """Sends without blocking: a refused CURVE client has no pipe left, and a blocking send would wait forever."""
    try:
        sock.send(payload, zmq.NOBLOCK)
    except zmq.Again:
        pass


def _wait_refused(auth, at_least=1, timeout=3.0):
    deadline = time.monotonic() + timeout
    while auth.refused < at_least and time.monotonic() < deadline:
        time.sleep(0.01)
    return auth.refused


def _round_trip(learner, explorer, payload=b"obs"):
    explorer.send(payload)
    assert learner.got_message(2000)
    learner.echo()
    assert explorer.poll(2000, zmq.POLLIN) and explorer.recv() == payload


def test_a_client_with_the_runs_key_round_trips(ctx, address):
    key = RunKey.generate()
    learner = Learner(ctx, address, key)
    explorer = _explorer(ctx, address, key)
    try:
        _round_trip(learner, explorer)
        assert learner.auth.refused == 0
    finally:
        explorer.close()
        learner.close()


@pytest.mark.parametrize("who", ["another_run", "plain", "random_keypair"])
def test_a_stranger_gets_nothing_through_and_is_counted(ctx, address, who, caplog):
    key = RunKey.generate()
    learner = Learner(ctx, address, key)
    # A random keypair that knows the server's public key still fails: only the run's client key is accepted.
    explorer = {"another_run": lambda: _explorer(ctx, address, RunKey.generate()),
                "plain": lambda: _explorer(ctx, address),
                "random_keypair": lambda: _explorer(ctx, address, keypair=zmq.curve_keypair(),
                                                    server_key=key.server_keypair.public)}[who]()
    try:
        _knock(explorer)
        assert not learner.got_message(SILENCE_MS)
        # A client that cannot even decrypt the server retries every 0.1 s: more refusals than warnings.
        assert _wait_refused(learner.auth, at_least=2 if who == "another_run" else 1) >= 1
        warnings = [r for r in caplog.records if r.name == "maddpg.transport.security"]
        assert len(warnings) == 1 and learner.auth.domain in warnings[0].getMessage()  # rate-limited
        assert key.text not in caplog.text
    finally:
        explorer.close()
        learner.close()


def test_two_runs_on_one_context_each_accept_only_their_own_explorers(ctx, tmp_path):
    keys = RunKey.generate(), RunKey.generate()
    addresses = free_tcp_address(), f"ipc://{tmp_path}/b.sock"
    learners = [Learner(ctx, a, k) for a, k in zip(addresses, keys)]
    own = [_explorer(ctx, a, k) for a, k in zip(addresses, keys)]
    crossed = [_explorer(ctx, a, k) for a, k in zip(addresses, reversed(keys))]
    try:
        for learner, explorer, stranger in zip(learners, own, crossed):
            _knock(stranger, b"wrong run")
            _round_trip(learner, explorer)
            assert not learner.got_message(SILENCE_MS // 2)
            assert _wait_refused(learner.auth) >= 1
    finally:
        for s in own + crossed + learners:
            s.close()


def test_servers_registered_from_many_threads_at_once_all_work(ctx, tmp_path):
    keys = [RunKey.generate() for _ in range(8)]
    addresses = [f"ipc://{tmp_path}/{i}.sock" for i in range(len(keys))]
    learners = [None] * len(keys)

    def start(i):
        learners[i] = Learner(ctx, addresses[i], keys[i])

    threads = [threading.Thread(target=start, args=(i,)) for i in range(len(keys))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    explorers = [_explorer(ctx, a, k) for a, k in zip(addresses, keys)]
    try:
        for learner, explorer in zip(learners, explorers):
            _round_trip(learner, explorer)
    finally:
        for s in explorers + learners:
            s.close()


def _plain_pair_works(ctx, tmp_path):
    server = ctx.socket(zmq.ROUTER)
    server.linger = 0
    server.bind(f"ipc://{tmp_path}/plain.sock")
    client = _explorer(ctx, f"ipc://{tmp_path}/plain.sock")
    try:
        client.send(b"hello")
        return bool(server.poll(2000, zmq.POLLIN))
    finally:
        client.close()
        server.close()


def test_a_closed_registration_refuses_even_the_runs_own_clients(ctx, address, tmp_path):
    key = RunKey.generate()
    learner = Learner(ctx, address, key)
    learner.auth.close()
    learner.auth.close()  # idempotent
    explorer = _explorer(ctx, address, key)
    try:
        _knock(explorer, b"too late")
        assert not learner.got_message(SILENCE_MS)
        assert learner.auth.refused == 0  # counting stopped with the registration
        # The socket still reports refusals: its monitor must still be read, or libzmq's I/O thread blocks.
        assert _plain_pair_works(ctx, tmp_path)
    finally:
        explorer.close()
        learner.sock.close()


def test_plain_sockets_of_the_same_context_keep_working(ctx, address, tmp_path):
    learner = Learner(ctx, address, RunKey.generate())
    try:
        assert _plain_pair_works(ctx, tmp_path)
    finally:
        learner.close()


def test_options_after_bind_or_connect_are_refused(ctx, address):
    key = RunKey.generate()
    router, dealer = ctx.socket(zmq.ROUTER), ctx.socket(zmq.DEALER)
    try:
        router.bind(address)
        dealer.connect(address)
        with pytest.raises(ValueError, match="before bind"):
            secure_server(router, key)
        with pytest.raises(ValueError, match="before bind"):
            secure_client(dealer, key)
    finally:
        router.close(linger=0)
        dealer.close(linger=0)


def test_a_domain_belongs_to_one_run_key(ctx, tmp_path):
    first = Learner(ctx, f"ipc://{tmp_path}/a.sock", RunKey.generate(), domain="learner")
    other = ctx.socket(zmq.ROUTER)
    try:
        with pytest.raises(ValueError, match="another run key"):
            secure_server(other, RunKey.generate(), domain="learner")
    finally:
        other.close(linger=0)
        first.close()


def test_a_context_with_servers_still_terminates():
    ctx = zmq.Context()
    key = RunKey.generate()
    sock = ctx.socket(zmq.ROUTER)
    secure_server(sock, key)
    sock.close(linger=0)
    done = threading.Thread(target=ctx.term, daemon=True)
    done.start()
    done.join(5)
    assert not done.is_alive(), "the ZAP thread kept the context from terminating"
