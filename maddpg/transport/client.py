"""The explorer's DEALER socket to the learner: hello, inference round trips, chunks, reconnects.

Reliability follows the lazy-pirate pattern (zguide `lpclient.py`): a request without a reply within
`retry_after` seconds is sent again with a hello on the same socket (ZeroMQ reconnects by itself, so a learner
restarted on the same address, a new process or pod, gets it within seconds of coming up); without a reply
within `request_timeout` the socket is closed (linger 0) and opened again. After `give_up_after` seconds
without any answer the client raises TransportError.

Chunks sent over ZeroMQ (the local replay queue) are kept until the learner reports a written checkpoint
that covers them (`InferenceReply.durable_chunk`), and sent again from where the learner's Welcome says it
stands, so a learner killed at any moment loses none of them and counts none twice.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import OrderedDict

import numpy as np
import zmq

from maddpg.transport.codec import ProtocolError, decode, encode
from maddpg.transport.security import RunKey, secure_client
from maddpg.types import Ack, Chunk, Error, Hello, InferenceReply, InferenceRequest, Stop, Welcome

log = logging.getLogger(__name__)

# Chunk refusals that are flow control: the learner will take the chunk if it is sent again later.
RESEND_CODES = frozenset({"chunk_gap", "queue_full"})


class TransportError(Exception):
    """The learner cannot be reached or refused the explorer."""


class StopRun(Exception):
    """The learner ended the run."""


class InferenceClient:
    """One explorer's connection to the learner.

    Args:
      address: the learner's address, e.g. "tcp://learner:5555".
      explorer_id: a stable name for this explorer (its pod or process name).
      num_envs: E, the envs this explorer steps.
      key: the run's secret (CURVE); None only for a learner without one.
      request_timeout: seconds to wait for a reply before reopening the socket and resending.
      give_up_after: seconds without any answer before raising TransportError.
      retry_after: seconds without a reply before saying hello and resending on the same socket (a held
        request, while the trainer catches up, is simply replaced).
      resend_after: seconds to wait before sending refused chunks again.
    """

    def __init__(self, address: str, explorer_id: str, num_envs: int, *, key: RunKey | None = None,
                 request_timeout: float = 30.0, give_up_after: float = 600.0, retry_after: float = 2.0,
                 resend_after: float = 0.2, context: zmq.Context | None = None):
        self.address, self.explorer_id, self.num_envs = address, explorer_id, num_envs
        self.run_id = uuid.uuid4().hex[:12]  # a fresh id per life of this explorer
        self._key = key
        self._timeout, self._give_up = request_timeout, give_up_after
        self._retry_after, self._resend_after = min(retry_after, request_timeout), resend_after
        self._ctx = context or zmq.Context.instance()
        self._sock: zmq.Socket | None = None
        self._seq = 0  # inference requests
        self._chunk_seq = 0  # chunks: 1, 2, 3, ... without gaps (the learner's exactly-once intake relies on it)
        self._held: OrderedDict[int, Chunk] = OrderedDict()  # chunks no written checkpoint covers yet
        self._unacked: set[int] = set()  # held chunks the current learner has not taken
        self._resend_at: float | None = None
        self.reconnects = 0  # times the socket was reopened after a silent or restarted learner
        self.welcome: Welcome | None = None

    # ------------------------------------------------------------ connection
    def connect(self) -> str:
        """Says hello and returns the run spec JSON from the learner's Welcome."""
        self._open()
        self._request(self._hello(), want=Welcome, hello=False)
        return self.welcome.spec_json

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None

    def _open(self) -> None:
        self.close()
        self._sock = self._ctx.socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 0)
        # A learner that refused our key drops the connection for good: a send must not block forever then.
        self._sock.setsockopt(zmq.SNDTIMEO, 1000)
        self._sock.setsockopt_string(zmq.IDENTITY, f"{self.explorer_id}/{self.run_id}")
        if self._key is not None:
            secure_client(self._sock, self._key)
        self._sock.connect(self.address)

    def _hello(self) -> Hello:
        oldest = next(iter(self._held), self._chunk_seq + 1)
        return Hello(self.explorer_id, self.run_id, self.num_envs, oldest)

    # ------------------------------------------------------------ requests
    def infer(self, obs: list[np.ndarray], reward: np.ndarray, done: np.ndarray) -> list[np.ndarray]:
        """Sends one round of observations and returns the actions, one [E, act_dim_i] array per agent."""
        if self._resend_at is not None and time.monotonic() >= self._resend_at:
            self._resend_from(min(self._unacked, default=self._chunk_seq + 1))
        self._seq += 1
        request = InferenceRequest(self.explorer_id, self.run_id, self._seq, obs, reward, done)
        reply = self._request(request, want=InferenceReply)
        self._forget_durable(reply.durable_chunk)
        return reply.actions

    def send_chunk(self, chunk_fields: dict) -> int:
        """Sends transitions to the learner's replay queue and keeps them until a checkpoint covers them;
        returns the chunk's seq."""
        self._chunk_seq += 1
        chunk = Chunk(self.explorer_id, self.run_id, self._chunk_seq, **chunk_fields)
        self._held[chunk.seq] = chunk
        self._unacked.add(chunk.seq)
        self._send(chunk)
        return chunk.seq

    @property
    def held_chunks(self) -> int:
        """Chunks sent but not yet covered by a written checkpoint (kept in memory to send again)."""
        return len(self._held)

    def _forget_durable(self, durable: int) -> None:
        while self._held and next(iter(self._held)) <= durable:
            seq, _ = self._held.popitem(last=False)
            self._unacked.discard(seq)

    def _resend_from(self, seq: int) -> None:
        """Sends every held chunk from `seq` on again, in order (the learner takes each life's chunks in order)."""
        self._resend_at = None
        for s, chunk in self._held.items():
            if s >= seq:
                self._unacked.add(s)
                self._send(chunk)

    def _send(self, msg) -> None:
        """Sends `msg`; if no learner takes it within a second, it is not sent: what is waited for times out
        and is sent again (requests), or goes again after the next Welcome (chunks)."""
        assert self._sock is not None, "connect() first"
        try:
            self._sock.send_multipart(encode(msg), copy=False)
        except zmq.Again:
            log.debug("no learner took a message within 1 s")

    def _request(self, msg, want: type, hello: bool = True):
        started = opened = sent = time.monotonic()
        self._send(msg)
        while True:
            if self._sock.poll(min(self._retry_after, 1.0) * 1e3, zmq.POLLIN):
                reply = self._receive()
                if isinstance(reply, Error) and not reply.chunk:  # it forgot us (restart, idle): hello, resend
                    self._send(self._hello())
                    self._send(msg)
                    continue
                if isinstance(reply, want) and (not hasattr(reply, "seq") or reply.seq == getattr(msg, "seq", None)):
                    return reply
                continue
            now = time.monotonic()
            if now - started > self._give_up:
                raise TransportError(f"learner at {self.address} did not answer for {self._give_up:.0f} s")
            if now - opened > self._timeout:  # the connection itself may be stuck (a refused handshake)
                log.warning("no reply from %s in %.0f s: reconnecting", self.address, self._timeout)
                self.reconnects += 1
                self._open()
                opened = now
            elif now - sent < self._retry_after:
                continue
            if hello:  # a learner that restarted knows nothing of us
                self._send(self._hello())
            self._send(msg)
            sent = now

    def _receive(self):
        frames = self._sock.recv_multipart(copy=False)
        try:
            reply = decode([f.buffer for f in frames])
        except ProtocolError as e:
            raise TransportError(f"learner sent an undecodable message: {e}") from None
        if isinstance(reply, Welcome):
            self._welcomed(reply)
        elif isinstance(reply, Ack):
            self._unacked.discard(reply.seq)
        elif isinstance(reply, Stop):
            raise StopRun(reply.reason)
        elif isinstance(reply, Error):
            return self._refused(reply)
        return reply

    def _welcomed(self, welcome: Welcome) -> None:
        """The learner takes chunks from `next_chunk` on: the older held ones it has; send the rest again."""
        self.welcome = welcome
        self._unacked = {s for s in self._held if s >= welcome.next_chunk}
        self._resend_from(welcome.next_chunk)

    def _refused(self, error: Error):
        if error.code == "unknown_explorer":
            return error if not error.chunk else None  # a chunk of a forgotten life: resent after the Welcome
        if error.chunk and error.code in RESEND_CODES:
            if self._resend_at is None:
                self._resend_at = time.monotonic() + self._resend_after
            return None
        what = "chunk" if error.chunk else "message"
        raise TransportError(f"learner refused {what} {error.seq}: {error.code}: {error.message}")
