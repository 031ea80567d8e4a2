"""Poison never kills: random and mutated messages thrown at a live learner (as an authenticated peer, the worst
case) while a real explorer keeps stepping; garbage written into its Redis stream too."""

from __future__ import annotations

import json
import math
import os
import subprocess
import time
import urllib.request
from pathlib import Path

import msgpack
import numpy as np
import pytest
import redis
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from maddpg.launch import free_tcp_address, free_tcp_port
from maddpg.transport.codec import encode, encode_blob
from maddpg.transport.security import RunKey, secure_client
from maddpg.types import Chunk, Hello, InferenceRequest, Transition
from tests.integration.cli import MADDPG
from tests.integration.redis_server import RedisServer

OBS = 4  # `simple`: one agent, observation 4, action vector 5
SPEC = {"scenario": "simple", "num_episodes": 1_000_000, "learning_starts": 200, "batch_size": 32,
        "num_units": 16, "save_rate": 50}


def _metrics(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


class LiveRun:
    def __init__(self, folder: Path, queue: str):
        self.key = RunKey.generate()
        self.address, self.port = free_tcp_address(), free_tcp_port()
        self.run_dir = folder / "run"
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "MADDPG_RUN_KEY": self.key.text}
        (folder / "spec.json").write_text(json.dumps(SPEC))
        self.log = open(folder / "learner.log", "w")
        self.learner = subprocess.Popen(
            [MADDPG, "learner", "--bind", self.address, "--run-dir", str(self.run_dir), "--spec",
             str(folder / "spec.json"), "--queue", queue, "--run-id", "fuzz", "--metrics-port", str(self.port),
             "--quiet"], env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.explorer = subprocess.Popen(
            [MADDPG, "explorer", "--learner", self.address, "--envs", "4", "--explorer-id", "real",
             "--request-timeout", "2"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SNDHWM, 100_000)
        secure_client(self.sock, self.key)
        self.sock.connect(self.address)

    def episodes(self) -> int:
        path = self.run_dir / "rewards.csv"
        return max(0, len(path.read_text().splitlines()) - 1) if path.exists() else 0

    def wait_for_updates(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.learner.poll() is None, "the learner exited"
            try:
                if _metrics(self.port).get('maddpg_updates_total{role="learner",run_id="fuzz"}', 0) > 0:
                    return
            except OSError:
                pass
            time.sleep(0.5)
        raise AssertionError("no update within the timeout")

    def send(self, frames: list[bytes]) -> None:
        self.sock.send_multipart(frames)
        while self.sock.poll(0):  # drain replies so our own queue never fills
            self.sock.recv_multipart()

    def assert_healthy(self) -> None:
        """The learner answers, the real explorer's episodes keep coming, the losses are finite."""
        assert self.learner.poll() is None, "the learner exited"
        before, deadline = self.episodes(), time.monotonic() + 60
        while self.episodes() < before + 8:
            assert time.monotonic() < deadline, "the real explorer's episodes stopped coming"
            time.sleep(0.2)
        values = _metrics(self.port)
        losses = [v for k, v in values.items() if k.startswith(("maddpg_critic_loss", "maddpg_actor_loss"))]
        assert losses and all(math.isfinite(v) for v in losses), losses
        return values

    def close(self) -> None:
        self.sock.close(0)
        self.ctx.term()
        for p in (self.explorer, self.learner):
            if p.poll() is None:
                p.kill()
                p.wait()
        self.log.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    run = LiveRun(tmp_path_factory.mktemp("fuzz"), "local")
    run.wait_for_updates()
    yield run
    run.close()


# ---------------------------------------------------------------- strategies
scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                    st.text(max_size=20), st.binary(max_size=20), st.lists(st.integers(), max_size=3),
                    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3))
dims = st.one_of(st.integers(-3, 40), st.just(2**62 + 1), st.just(2**31), st.booleans(), st.floats(), st.text(max_size=3))
specs = st.lists(st.one_of(st.tuples(st.sampled_from(["<f4", "|b1", "<i4", "<f8", "x"]), st.lists(dims, max_size=3)),
                           scalars), max_size=6)
values = st.sampled_from([0.0, 1.0, -1.0, np.nan, np.inf, -np.inf, 1e30, -1e30, 3.4e38])


@st.composite
def headers(draw) -> list[bytes]:
    """A header of random fields and array specs, with frames of random sizes."""
    fields = draw(st.dictionaries(st.sampled_from(["explorer_id", "run_id", "seq", "n", "num_envs", "oldest_chunk",
                                                   "x"]), scalars, max_size=6))
    header = {"v": draw(st.sampled_from([2, 1, 3, None, "2"])), "t": draw(st.sampled_from(
        ["hello", "infer", "chunk", "ack", "reply", "welcome", "stop", "error", "nope", 7])), "f": fields,
        "a": [list(s) if isinstance(s, tuple) else s for s in draw(specs)]}
    frames = draw(st.lists(st.binary(max_size=64), max_size=6))
    return [msgpack.packb(header, default=repr), *frames]


def _chunk(explorer_id: str, run_id: str, seq: int, rows: int, value: float, episodes: int) -> Chunk:
    obs = np.full((rows, OBS), value, np.float32)
    t = Transition([obs], [np.full((rows, 5), value, np.float32)], np.full((rows, 1), value, np.float32), [obs],
                   np.zeros((rows, 1), np.float32))
    return Chunk(explorer_id, run_id, seq, t, np.full((episodes, 1), value, np.float32),
                 np.full(episodes, 25, np.int32))


@st.composite
def semantic(draw) -> list[bytes]:
    """Well-formed messages with hostile content: NaN/huge values, wrong shapes, spoofed names, big counts."""
    explorer = draw(st.sampled_from(["real", "fake", "x" * 200]))
    run_id = draw(st.sampled_from(["r1", "r2"]))
    kind = draw(st.sampled_from(["hello", "infer", "chunk"]))
    if kind == "hello":
        return list(map(bytes, encode(Hello(explorer, run_id, draw(st.integers(-5, 10_000)),
                                            draw(st.integers(-5, 2**40))))))
    rows = draw(st.integers(0, 8))
    value = draw(values)
    if kind == "infer":
        return list(map(bytes, encode(InferenceRequest(
            explorer, run_id, draw(st.integers(0, 100)), [np.full((rows, draw(st.integers(1, 6))), value, np.float32)],
            np.full((rows, 1), value, np.float32), np.zeros(rows, bool)))))
    return list(map(bytes, encode(_chunk(explorer, run_id, draw(st.integers(-3, 2**40)), rows, value,
                                         draw(st.integers(0, 3))))))


@st.composite
def mutated(draw) -> list[bytes]:
    """A valid chunk with bytes flipped, frames cut, added or dropped."""
    frames = [bytearray(f) for f in draw(semantic())]
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "cut", "drop", "add"]))
        i = draw(st.integers(0, len(frames) - 1)) if frames else 0
        if op == "flip" and frames and frames[i]:
            j = draw(st.integers(0, len(frames[i]) - 1))
            frames[i][j] ^= draw(st.integers(1, 255))
        elif op == "cut" and frames:
            frames[i] = frames[i][:draw(st.integers(0, len(frames[i])))]
        elif op == "drop" and len(frames) > 1:
            del frames[i]
        elif op == "add":
            frames.insert(i, bytearray(draw(st.binary(max_size=32))))
    return [bytes(f) for f in frames]


messages = st.one_of(st.lists(st.binary(max_size=64), min_size=1, max_size=5), headers(), semantic(), mutated())


@settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck), derandomize=False)
@given(batch=st.lists(messages, min_size=1, max_size=5))
def test_random_messages_never_silence_the_learner(live, batch):
    for frames in batch:
        live.send(frames)


def test_the_learner_still_serves_and_learns_after_the_fuzzing(live):
    # Runs after the property test in this module: the learner must have refused and counted, never stopped.
    values = live.assert_healthy()
    refused = sum(v for k, v in values.items() if k.startswith("maddpg_inference_errors_total"))
    rejected = values.get('maddpg_replay_chunks_rejected_total{role="learner",run_id="fuzz"}', 0)
    assert refused > 100 and rejected >= 0


def test_garbage_in_the_redis_stream_is_skipped_and_counted(tmp_path):
    (tmp_path / "redis").mkdir()
    server = RedisServer(tmp_path / "redis").start()
    run = LiveRun(tmp_path, server.url)
    try:
        run.wait_for_updates()
        r = redis.Redis.from_url(server.url)
        stream = "maddpg:fuzz:chunks"
        bad = _chunk("real", "nan-life", 1, 4, np.nan, 1)
        for fields in ({b"chunk": b"garbage"}, {b"other": b"x"}, {b"chunk": encode_blob(bad)},
                       {b"chunk": encode_blob(_chunk("fake", "f", 1, 3, 1.0, 0))[:-7]}):
            r.xadd(stream, fields)
        run.assert_healthy()
        assert run.learner.poll() is None
    finally:
        run.close()
        server.stop()
