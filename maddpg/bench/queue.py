"""Suite `queue`: transitions/s from explorer chunks into the replay buffer, through the Redis Streams queue
(XADD -> XREADGROUP -> buffer -> XACK, a real redis-server started here) beside the local queue, for
simple_spread N=3 chunks of 10 steps x 16 envs. The need it is measured against: the e2e run's env steps/s."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import redis

from maddpg.bench.harness import Result, interleaved, write
from maddpg.replay.buffer import ReplayBuffer
from maddpg.replay.queue import LocalQueue
from maddpg.replay.redis_queue import RedisQueue
from maddpg.types import Chunk, Transition

OBS, ACT, N, ROWS = 18, 5, 3, 160  # simple_spread N=3, 10 steps x 16 envs per chunk


def _chunk(seq: int) -> Chunk:
    rng = np.random.default_rng(seq)
    t = Transition([rng.normal(size=(ROWS, OBS)).astype(np.float32) for _ in range(N)],
                   [rng.uniform(size=(ROWS, ACT)).astype(np.float32) for _ in range(N)],
                   rng.normal(size=(ROWS, N)).astype(np.float32),
                   [rng.normal(size=(ROWS, OBS)).astype(np.float32) for _ in range(N)],
                   np.zeros((ROWS, N), np.float32))
    return Chunk("bench", "run", seq, t, np.zeros((0, N), np.float32), np.zeros(0, np.int32))


def start_redis(folder: str) -> tuple[subprocess.Popen, str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", folder, "--save", "",
                             "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    for _ in range(200):
        try:
            redis.Redis.from_url(url).ping()
            return proc, url
        except redis.ConnectionError:
            time.sleep(0.05)
    raise RuntimeError("redis-server did not start")


def _through(put, get, ack, chunks: int) -> float:
    """Transitions/s with a producer thread putting `chunks` chunks and this thread draining into a buffer."""
    buffer = ReplayBuffer(200_000, [OBS] * N, [ACT] * N)
    payload = [_chunk(k) for k in range(8)]
    producer = threading.Thread(target=lambda: [put(payload[k % 8]._replace(seq=k + 1)) for k in range(chunks)])
    start = time.perf_counter()
    producer.start()
    done = 0
    while done < chunks:
        items = get(64, 0.05)
        for _, chunk in items:
            buffer.add(chunk.transitions)
        ack([token for token, _ in items])
        done += len(items)
    producer.join()
    return done * ROWS / (time.perf_counter() - start)


def run(quick: bool = False, out: Path | None = None) -> dict:
    chunks = 300 if quick else 2000
    with tempfile.TemporaryDirectory() as folder:
        proc, url = start_redis(folder)
        try:
            runs = iter(range(1_000_000))

            def via_redis() -> float:
                name = f"bench{next(runs)}"
                explorer, learner = RedisQueue(url, name, max_lag=10_000), RedisQueue(url, name)
                return _through(explorer.put, learner.get, learner.ack, chunks)

            def via_local() -> float:
                q = LocalQueue()
                return _through(q.offer, q.get, lambda tokens: q.commit(tokens, {}), chunks)

            med = interleaved({"redis": via_redis, "local": via_local}, rounds=2 if quick else 3)
        finally:
            proc.terminate()
            proc.wait(10)
    results = [
        Result("simple_spread N=3, chunks of 160 transitions", "transitions_per_s", med["redis"], "transitions/s",
               med["local"], note="Redis Streams (XADD, XREADGROUP, buffer, XACK) vs the in-process local queue"),
        Result("simple_spread N=3, chunks of 160 transitions", "local_transitions_per_s", med["local"],
               "transitions/s"),
    ]
    return write("queue", results, out)
