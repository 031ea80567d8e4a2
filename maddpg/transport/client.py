"""The explorer's DEALER socket to the learner: hello, inference round trips, chunks, reconnects.

Reliability follows the lazy-pirate pattern (zguide `lpclient.py`): a request without a reply within
`request_timeout` closes the socket (linger 0), reconnects, says hello again and resends; after `give_up_after`
seconds without any answer the client raises TransportError.
"""

from __future__ import annotations

import logging
import time
import uuid

import numpy as np
import zmq

from maddpg.transport.codec import ProtocolError, decode, encode
from maddpg.types import Ack, Chunk, Error, Hello, InferenceReply, InferenceRequest, Stop, Welcome

log = logging.getLogger(__name__)


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
      request_timeout: seconds to wait for a reply before reconnecting and resending.
      give_up_after: seconds without any answer before raising TransportError.
    """

    def __init__(self, address: str, explorer_id: str, num_envs: int, *, request_timeout: float = 30.0,
                 give_up_after: float = 120.0, context: zmq.Context | None = None):
        self.address, self.explorer_id, self.num_envs = address, explorer_id, num_envs
        self.run_id = uuid.uuid4().hex[:12]  # a fresh id per life of this explorer
        self._timeout, self._give_up = request_timeout, give_up_after
        self._ctx = context or zmq.Context.instance()
        self._sock: zmq.Socket | None = None
        self._seq = 0
        self.reconnects = 0  # times the socket was reopened after a silent learner
        self.acked: set[int] = set()
        self.welcome: Welcome | None = None

    # ------------------------------------------------------------ connection
    def connect(self) -> str:
        """Says hello and returns the run spec JSON from the learner's Welcome."""
        self._open()
        self.welcome = self._request(Hello(self.explorer_id, self.run_id, self.num_envs), want=Welcome, hello=False)
        return self.welcome.spec_json

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None

    def _open(self) -> None:
        self.close()
        self._sock = self._ctx.socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt_string(zmq.IDENTITY, f"{self.explorer_id}/{self.run_id}")
        self._sock.connect(self.address)

    # ------------------------------------------------------------ requests
    def infer(self, obs: list[np.ndarray], reward: np.ndarray, done: np.ndarray) -> list[np.ndarray]:
        """Sends one round of observations and returns the actions, one [E, act_dim_i] array per agent."""
        self._seq += 1
        request = InferenceRequest(self.explorer_id, self.run_id, self._seq, obs, reward, done)
        return self._request(request, want=InferenceReply).actions

    def send_chunk(self, chunk_fields: dict) -> int:
        """Sends transitions to the learner's replay queue (acknowledged asynchronously); returns its seq."""
        self._seq += 1
        self._send(Chunk(self.explorer_id, self.run_id, self._seq, **chunk_fields))
        return self._seq

    def _send(self, msg) -> None:
        assert self._sock is not None, "connect() first"
        self._sock.send_multipart(encode(msg), copy=False)

    def _request(self, msg, want: type, hello: bool = True):
        started = time.monotonic()
        self._send(msg)
        while True:
            if self._sock.poll(self._timeout * 1e3, zmq.POLLIN):
                reply = self._receive()
                if isinstance(reply, Error):  # the learner restarted and forgot us: hello again, resend
                    self._send(Hello(self.explorer_id, self.run_id, self.num_envs))
                    self._send(msg)
                    continue
                if isinstance(reply, want) and (not hasattr(reply, "seq") or reply.seq == getattr(msg, "seq", None)):
                    return reply
                continue
            if time.monotonic() - started > self._give_up:
                raise TransportError(f"learner at {self.address} did not answer for {self._give_up:.0f} s")
            log.warning("no reply from %s in %.0f s: reconnecting", self.address, self._timeout)
            self.reconnects += 1
            self._open()
            if hello:
                self._send(Hello(self.explorer_id, self.run_id, self.num_envs))
            self._send(msg)

    def _receive(self):
        frames = self._sock.recv_multipart(copy=False)
        try:
            reply = decode([f.buffer for f in frames])
        except ProtocolError as e:
            raise TransportError(f"learner sent an undecodable message: {e}") from None
        if isinstance(reply, Ack):
            self.acked.add(reply.seq)
        elif isinstance(reply, Stop):
            raise StopRun(reply.reason)
        elif isinstance(reply, Error):
            if reply.code == "unknown_explorer":
                return reply
            raise TransportError(f"learner refused message {reply.seq}: {reply.code}: {reply.message}")
        return reply
