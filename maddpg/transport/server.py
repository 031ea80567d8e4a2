"""The learner's ROUTER socket: batched inference for every explorer, chunk intake, errors as replies.

One thread owns the socket. Each round it drains the requests queued from all explorers (waiting at most
`max_wait` after the first, taking at most `max_batch` envs), runs the actors once on the whole batch and
replies to each explorer with its slice. A request that is malformed, from an unknown explorer or of the
wrong shape is answered with an Error and counted; the server keeps serving.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import zmq

from maddpg.envs.spaces import EnvSpec
from maddpg.transport.codec import ProtocolError, decode, encode, request_problem
from maddpg.transport.security import RunKey, secure_server
from maddpg.types import Ack, Chunk, Error, Hello, InferenceReply, InferenceRequest, Stop, Welcome

log = logging.getLogger(__name__)


class BatchActor(Protocol):
    """What the server asks for actions (maddpg.acting.Actor): it keeps each explorer's exploration state."""

    def act(self, obs: list[np.ndarray], parts: Sequence[tuple[str, np.ndarray]]) -> list[np.ndarray]:
        """Actions [B, a_i] per agent for observations [B, d_i] per agent, whose rows belong to the explorers
        `parts` names in order, each with its envs' new-episode flags."""

    def forget(self, stream: str) -> None:
        """An explorer restarted or went away: its exploration state goes."""


@dataclass
class _Explorer:
    run_id: str
    num_envs: int
    last_seen: float = field(default_factory=time.monotonic)


# Every code a refused or dropped message is counted under (codec errors, checks, chunk intake, a full client
# queue).
ERROR_CODES = ("empty", "bad_header", "bad_version", "bad_type", "bad_fields", "bad_frames", "bad_dtype", "bad_shape",
               "bad_value", "bad_blob", "too_large", "bad_envs", "too_many_explorers", "unknown_explorer",
               "chunk_gap", "queue_full", "slow_client")


class ChunkIntake(Protocol):
    """Where chunks sent over ZeroMQ go (maddpg.replay.queue.LocalQueue)."""

    def hello(self, explorer_id: str, run_id: str, oldest_chunk: int) -> int:
        """Returns the chunk seq the explorer life should send next."""

    def offer(self, chunk: Chunk) -> str | None:
        """None: the chunk is held; else an error code (the explorer sends it again)."""

    def durable(self, explorer_id: str, run_id: str) -> int:
        """The last chunk seq of this life that a written checkpoint covers."""


@dataclass
class ServerStats:
    """Counters the learner exports as metrics."""

    requests: int = 0
    batches: int = 0
    envs_served: int = 0
    chunks: int = 0
    errors: Counter = field(default_factory=Counter)
    restarts: int = 0


class InferenceServer:
    """Serves actions to explorers and hands the chunks they send over ZeroMQ to `intake`.

    Args:
      bind: ZeroMQ address, e.g. "tcp://0.0.0.0:5555" or "ipc:///tmp/x".
      env_spec: the agents (shapes of valid requests).
      spec_json: the run spec sent to explorers in Welcome.
      actor: acts on each batch (and keeps every explorer's exploration state).
      may_collect: called with the env steps a batch would add and the envs of all registered explorers;
        False holds the replies (pacing). None: never held.
      intake: takes chunks sent over ZeroMQ (the local queue); None: explorers send them elsewhere (Redis).
      key: the run's secret; only peers holding it get through (CURVE; None: no authentication).
      max_batch: most envs per inference batch. max_wait: seconds to wait for more requests.
      max_envs: most envs one explorer may own. max_bytes: largest accepted message.
      max_explorers: most explorers registered at once. idle_timeout: seconds after which an explorer that sent
        nothing is forgotten (it says hello again if it comes back).
      queue, run_id: where explorers send chunks ("local" or a redis:// URL) and the run's id (see Welcome).
      on_batch: called after each served batch with its env count and the latency of each request in it
        (seconds from arrival to reply), e.g. to observe metrics.
    """

    def __init__(self, bind: str, env_spec: EnvSpec, spec_json: str, actor: BatchActor, *,
                 may_collect: Callable[[int, int], bool] | None = None, intake: ChunkIntake | None = None,
                 key: RunKey | None = None, max_batch: int = 1024, max_wait: float = 0.0005, max_envs: int = 4096,
                 max_bytes: int = 64 << 20, max_explorers: int = 1024, idle_timeout: float = 600.0,
                 queue: str = "local", run_id: str = "", on_batch: Callable[[int, list[float]], None] | None = None,
                 context: zmq.Context | None = None):
        self._ctx = context or zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.ROUTER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.MAXMSGSIZE, 4 * max_bytes)  # hard cap: ZeroMQ drops the peer beyond it
        self._sock.setsockopt(zmq.ROUTER_HANDOVER, 1)  # a reconnecting explorer takes its identity back
        self._auth = None if key is None else secure_server(self._sock, key)
        self._sock.bind(bind)
        self.address = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._spec_json, self._queue, self._run_id = spec_json, queue, run_id
        self._env_spec = env_spec
        self._obs_dims = env_spec.obs_dims
        self._actor = actor
        self._intake, self._may_collect, self._on_batch = intake, may_collect, on_batch
        self._max_batch, self._max_wait, self._max_envs, self._max_bytes = max_batch, max_wait, max_envs, max_bytes
        self._max_explorers, self._idle_timeout = max_explorers, idle_timeout
        self._explorers: dict[str, _Explorer] = {}
        self._waiting: deque[tuple[bytes, InferenceRequest, float]] = deque()
        self._stop_reason: str | None = None
        self._next_sweep = time.monotonic() + idle_timeout / 4
        self._quiet_until: dict[str, float] = {}
        self.last_request = time.monotonic()  # when an explorer last asked for actions (for "no explorers" alerts)
        self.stats = ServerStats()

    # ------------------------------------------------------------ lifecycle
    def serve(self, stop: threading.Event, poll_ms: int = 50) -> None:
        """Serves until `stop` is set, then closes the socket."""
        try:
            while not stop.is_set():
                self.run_once(poll_ms)
        finally:
            self._sock.close(linger=0)
            if self._auth is not None:
                self._auth.close()

    def stop_explorers(self, reason: str) -> None:
        """From now on every explorer request is answered with Stop (thread-safe: a flag read by the loop)."""
        self._stop_reason = reason

    @property
    def auth_failures(self) -> int:
        """Peers refused for not holding the run's key (handshakes that failed)."""
        return 0 if self._auth is None else self._auth.refused

    @property
    def num_explorers(self) -> int:
        """Explorers registered (safe to read from another thread)."""
        return len(self._explorers)

    @property
    def explorers(self) -> dict[str, str]:
        """Explorer id -> current run id."""
        return {k: v.run_id for k, v in self._explorers.items()}

    # ------------------------------------------------------------ one round
    def run_once(self, poll_ms: int = 50) -> None:
        """Receives what is queued (waiting up to `poll_ms` for the first message), then serves a batch."""
        timeout = 1 if self._waiting else poll_ms
        if self._sock.poll(timeout, zmq.POLLIN):
            self._drain()
        self._serve_waiting()
        if time.monotonic() >= self._next_sweep:
            self._forget_idle()

    def _forget_idle(self) -> None:
        now = time.monotonic()
        self._next_sweep = now + self._idle_timeout / 4
        idle = [k for k, e in self._explorers.items() if now - e.last_seen > self._idle_timeout]
        for name in idle:
            del self._explorers[name]
            self._actor.forget(name)
        if idle:
            self._waiting = deque(w for w in self._waiting if w[1].explorer_id in self._explorers)
            log.info("forgot %d explorer(s) silent for %.0f s: %s", len(idle), self._idle_timeout, ", ".join(idle[:5]))

    def _drain(self) -> None:
        deadline = None
        envs = sum(r.obs[0].shape[0] for _, r, _ in self._waiting)
        while envs < self._max_batch:
            try:
                frames = self._sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                if len({r.explorer_id for _, r, _ in self._waiting}) >= len(self._explorers):
                    return  # every registered explorer is waiting: nobody else can join this batch
                if deadline is None:
                    deadline = time.perf_counter() + self._max_wait
                remaining = deadline - time.perf_counter()
                # zmq polls in whole milliseconds: round up, or a sub-millisecond max_wait would never wait.
                if not self._waiting or remaining <= 0 or not self._sock.poll(math.ceil(remaining * 1e3), zmq.POLLIN):
                    return
                continue
            envs += self._handle(frames[0].bytes, [f.buffer for f in frames[1:]])

    def _handle(self, identity: bytes, frames: list) -> int:
        """Handles one message; returns the envs it added to the waiting batch."""
        size = sum(memoryview(f).nbytes for f in frames)
        if size > self._max_bytes:
            return self._refuse(identity, -1, "too_large", f"message of {size} bytes exceeds {self._max_bytes}")
        try:
            msg = decode(frames)
        except ProtocolError as e:
            return self._refuse(identity, -1, e.code, str(e).removeprefix(f"{e.code}: "))
        if self._stop_reason is not None and not isinstance(msg, Chunk):
            if isinstance(msg, (Hello, InferenceRequest)) and self._known(msg.explorer_id, msg.run_id):
                del self._explorers[msg.explorer_id]  # told: the learner may close once every explorer was
            self._send(identity, Stop(self._stop_reason))
            return 0
        if isinstance(msg, Hello):
            return self._hello(identity, msg)
        if isinstance(msg, InferenceRequest):
            problem = self._check_request(msg)
            if problem:
                return self._refuse(identity, msg.seq, *problem)
            # A resend (the explorer timed out and asked again) replaces what it asked before.
            self._waiting = deque(w for w in self._waiting if w[1].explorer_id != msg.explorer_id)
            self._waiting.append((identity, msg, time.perf_counter()))
            self.last_request = time.monotonic()
            return msg.obs[0].shape[0]
        if isinstance(msg, Chunk):
            return self._chunk(identity, msg)
        return self._refuse(identity, -1, "bad_type", f"{type(msg).__name__} is not a request")

    def _hello(self, identity: bytes, msg: Hello) -> int:
        if not 0 < msg.num_envs <= self._max_envs:
            return self._refuse(identity, -1, "bad_envs", f"num_envs must be 1..{self._max_envs}, got {msg.num_envs}")
        old = self._explorers.get(msg.explorer_id)
        if old is None and len(self._explorers) >= self._max_explorers:
            return self._refuse(identity, -1, "too_many_explorers",
                                f"{self._max_explorers} explorers are registered already (idle ones are forgotten "
                                f"after {self._idle_timeout:.0f} s)")
        if old is not None and old.run_id != msg.run_id:
            self.stats.restarts += 1
            log.info("explorer %s restarted (run %s -> %s): dropping its old state", msg.explorer_id,
                     old.run_id, msg.run_id)
        self._waiting = deque(w for w in self._waiting if w[1].explorer_id != msg.explorer_id)
        self._explorers[msg.explorer_id] = _Explorer(msg.run_id, msg.num_envs)
        self._actor.forget(msg.explorer_id)  # a new life (or a hello again) starts its exploration afresh
        next_chunk = 1 if self._intake is None else self._intake.hello(msg.explorer_id, msg.run_id, msg.oldest_chunk)
        self._send(identity, Welcome(self._spec_json, self._queue, self._run_id, next_chunk))
        return 0

    def _known(self, explorer_id: str, run_id: str) -> _Explorer | None:
        state = self._explorers.get(explorer_id)
        return state if state is not None and state.run_id == run_id else None

    def _check_request(self, msg: InferenceRequest) -> tuple[str, str] | None:
        state = self._known(msg.explorer_id, msg.run_id)
        if state is None:
            return "unknown_explorer", f"explorer {msg.explorer_id!r} run {msg.run_id!r} did not say hello"
        problem = request_problem(msg, self._obs_dims, state.num_envs)
        if problem:
            return problem
        state.last_seen = time.monotonic()
        return None

    def _chunk(self, identity: bytes, msg: Chunk) -> int:
        """Hands a chunk to the intake (its content is checked where it is consumed, as for Redis entries)."""
        state = self._known(msg.explorer_id, msg.run_id)
        if state is None:
            return self._refuse(identity, msg.seq, "unknown_explorer",
                                f"chunk from explorer {msg.explorer_id!r} run {msg.run_id!r}, which did not say hello",
                                chunk=True)
        if self._intake is None:
            return self._refuse(identity, msg.seq, "bad_type", f"chunks go to {self._queue}, not to the learner",
                                chunk=True)
        state.last_seen = time.monotonic()
        code = self._intake.offer(msg)
        if code is not None:
            return self._refuse(identity, msg.seq, code, f"chunk {msg.seq} not taken: {code}", chunk=True, quiet=True)
        self.stats.chunks += 1
        self._send(identity, Ack(msg.seq))
        return 0

    # ------------------------------------------------------------ inference
    def _serve_waiting(self) -> None:
        if not self._waiting:
            return
        if self._stop_reason is not None:  # held or not, every waiting explorer hears that the run is over
            for identity, req, _ in self._waiting:
                self._explorers.pop(req.explorer_id, None)
                self._send(identity, Stop(self._stop_reason))
            self._waiting.clear()
            return
        batch, envs = [], 0
        for item in self._waiting:  # a prefix of at most max_batch envs (at least one request)
            e = item[1].obs[0].shape[0]
            if batch and envs + e > self._max_batch:
                break
            batch.append(item)
            envs += e
        if self._may_collect is not None and not self._may_collect(
                envs, sum(e.num_envs for e in self._explorers.values())):
            return  # the trainer is behind: hold the replies, the explorers wait
        for _ in batch:
            self._waiting.popleft()
        obs = [np.concatenate([r.obs[i] for _, r, _ in batch]) for i in range(len(self._obs_dims))]
        actions = self._actor.act(obs, [(r.explorer_id, r.done) for _, r, _ in batch])
        start = 0
        for identity, req, _ in batch:
            e = req.obs[0].shape[0]
            durable = 0 if self._intake is None else self._intake.durable(req.explorer_id, req.run_id)
            self._send(identity, InferenceReply(req.seq, [a[start:start + e] for a in actions], durable))
            start += e
        if self._on_batch is not None:  # latencies (the metrics' histograms) only for whoever observes them
            now = time.perf_counter()
            self._on_batch(envs, [now - t0 for _, _, t0 in batch])
        self.stats.requests += len(batch)
        self.stats.batches += 1
        self.stats.envs_served += envs

    def _refuse(self, identity: bytes, seq: int, code: str, message: str, chunk: bool = False,
                quiet: bool = False) -> int:
        """Answers with an Error and counts it; logs it unless `quiet` (flow control, not a fault)."""
        self.stats.errors[code] += 1
        if not quiet:
            self._log_refusal(code, message)
        self._send(identity, Error(seq, code, message, chunk))
        return 0

    def _log_refusal(self, code: str, message: str) -> None:
        """At most one line per code every 10 s: a flood of bad messages must not flood the log."""
        now = time.monotonic()
        if now >= self._quiet_until.get(code, 0.0):
            self._quiet_until[code] = now + 10.0
            log.warning("refused a message: %s: %s (%d so far)", code, message, self.stats.errors[code])

    def _send(self, identity: bytes, msg) -> None:
        try:
            self._sock.send_multipart([identity, *encode(msg)], zmq.NOBLOCK, copy=False)
        except zmq.Again:  # the explorer's queue is full (a slow client): drop, it will resend
            self.stats.errors["slow_client"] += 1
