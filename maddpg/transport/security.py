"""Per-run keys: ZeroMQ CURVE between learner and explorers, one ZAP handler per context, and a stream HMAC key."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import zmq
from zmq.utils.monitor import parse_monitor_message
from zmq.utils.z85 import decode as z85_decode
from zmq.utils.z85 import encode as z85_encode

log = logging.getLogger(__name__)

ENV_KEY, ENV_KEY_FILE = "MADDPG_RUN_KEY", "MADDPG_RUN_KEY_FILE"
_KEY_BYTES = 32
_SERVER_LABEL, _CLIENT_LABEL = b"maddpg curve server v1", b"maddpg curve client v1"
_STREAM_LABEL = b"maddpg stream hmac v1"
_WARN_EVERY = 10.0  # seconds between two warnings about refused peers of one domain
_ZAP_ENDPOINT = "inproc://zeromq.zap.01"  # fixed by RFC 27: one ZAP handler per context


class CurveKeypair(NamedTuple):
    """A CURVE keypair, both halves z85-encoded (40 bytes each), as ZeroMQ socket options take them."""

    public: bytes
    secret: bytes


class RunKey:
    """The secret of one run: 32 random bytes from which every other key of the run is derived.

    Its text form is 64 hex characters. repr() and str() show only a fingerprint, never the key.
    """

    __slots__ = ("_secret",)

    def __init__(self, secret: bytes):
        if len(secret) != _KEY_BYTES:
            raise ValueError(f"run key: expected {_KEY_BYTES} bytes, got {len(secret)}")
        self._secret = bytes(secret)

    @classmethod
    def generate(cls) -> RunKey:
        """Returns a new random key."""
        return cls(secrets.token_bytes(_KEY_BYTES))

    @classmethod
    def from_text(cls, text: str) -> RunKey:
        """Parses the text form (64 hex characters, nothing else).

        Raises:
          ValueError: wrong length or not hexadecimal; the message never repeats the text.
        """
        if len(text) != 2 * _KEY_BYTES:
            raise ValueError(f"run key: expected {2 * _KEY_BYTES} hex characters, got {len(text)}")
        bad = next((i for i, c in enumerate(text) if c not in "0123456789abcdefABCDEF"), None)
        if bad is not None:
            raise ValueError(f"run key: not hexadecimal (first bad character at position {bad})")
        return cls(bytes.fromhex(text))

    @classmethod
    def load(cls, text: str | None = None, file: str | os.PathLike | None = None) -> RunKey | None:
        """The run's key from `text` (its text form, as env MADDPG_RUN_KEY holds it), else from `file`.

        Empty values count as unset. Surrounding whitespace (a trailing newline) is stripped.

        Returns:
          The key, or None when neither is given.

        Raises:
          ValueError: the key is malformed (the message names where it came from, never the key).
          OSError: the key file cannot be read.
        """
        if text:
            return cls._parse(text, f"${ENV_KEY}")
        if file:
            return cls._parse(Path(file).read_text(), str(file))
        return None

    @classmethod
    def _parse(cls, text: str, source: str) -> RunKey:
        try:
            return cls.from_text(text.strip())
        except ValueError as e:
            raise ValueError(f"{source}: {e}") from None

    def save(self, path: str | os.PathLike) -> None:
        """Writes the text form to `path` atomically, readable by its owner only (mode 0600)."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        # Created 0600 (O_EXCL: never an existing file), so the key is never readable by others, even briefly.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as f:
                os.fchmod(f.fileno(), 0o600)  # the umask may only have removed bits: make the mode exact
                f.write(self.text + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    @property
    def text(self) -> str:
        """The text form: 64 lowercase hex characters. Secret."""
        return self._secret.hex()

    @property
    def fingerprint(self) -> str:
        """First 8 hex characters of the key's SHA-256: safe to log, tells keys apart."""
        return hashlib.sha256(self._secret).hexdigest()[:8]

    @property
    def server_keypair(self) -> CurveKeypair:
        """The learner's CURVE keypair."""
        return self._curve(_SERVER_LABEL)

    @property
    def client_keypair(self) -> CurveKeypair:
        """The CURVE keypair every explorer of the run shares."""
        return self._curve(_CLIENT_LABEL)

    @property
    def stream_key(self) -> bytes:
        """32 bytes for HMAC-signing the run's Redis stream entries."""
        return self._derive(_STREAM_LABEL)

    def _derive(self, label: bytes) -> bytes:
        return hmac.new(self._secret, label, hashlib.sha256).digest()

    def _curve(self, label: bytes) -> CurveKeypair:
        # Any 32 bytes are a valid Curve25519 secret (the scalar is clamped when used).
        secret = z85_encode(self._derive(label))
        return CurveKeypair(zmq.curve_public(secret), secret)

    def __repr__(self) -> str:
        return f"RunKey(fingerprint={self.fingerprint})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunKey) and hmac.compare_digest(self._secret, other._secret)

    def __hash__(self) -> int:
        return hash(self._secret)


def secure_client(sock: zmq.Socket, key: RunKey) -> None:
    """Makes `sock` (an explorer's DEALER) a CURVE client of the run's learner. Call before connect().

    Raises:
      ValueError: the socket is already connected or bound (the options would not apply to that endpoint).
    """
    _check_unused(sock)
    client = key.client_keypair
    sock.curve_serverkey = key.server_keypair.public
    sock.curve_publickey = client.public
    sock.curve_secretkey = client.secret


def secure_server(sock: zmq.Socket, key: RunKey, domain: str | None = None) -> ServerAuth:
    """Makes `sock` (the learner's ROUTER) a CURVE server that accepts only the run's explorers. Call before bind().

    Starts the context's ZAP handler (one thread per context, shared by all its servers) on first use. Refused
    handshakes (a client of another run, a plain client, an unknown client key) are counted and logged.

    Args:
      sock: a socket not yet bound or connected.
      key: the run's key.
      domain: the ZAP domain; default "maddpg-<fingerprint>". Servers of different keys need different domains.

    Returns:
      The handle that counts refusals; close() it when the socket is closed.

    Raises:
      ValueError: the socket is already bound, or `domain` is taken by a server with another key.
    """
    _check_unused(sock)
    domain = domain or f"maddpg-{key.fingerprint}"
    sock.curve_server = True
    sock.curve_secretkey = key.server_keypair.secret
    sock.zap_domain = domain.encode()
    sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)  # fail closed: no ZAP handler means no handshake, not "anyone"
    client_key = z85_decode(key.client_keypair.public)  # raw, as ZAP requests carry it
    return _Authenticator.of(sock.context).register(sock, domain, client_key)


def _check_unused(sock: zmq.Socket) -> None:
    if sock.getsockopt(zmq.LAST_ENDPOINT):
        raise ValueError("set CURVE options before bind() or connect(): the socket is already in use")


@dataclass
class _Domain:
    client_key: bytes  # raw 32 bytes
    refused: int = 0
    servers: int = 0
    last_warning: float = -_WARN_EVERY


class ServerAuth:
    """What secure_server() registered for one server socket: its ZAP domain and the refusals counted there."""

    def __init__(self, auth: _Authenticator, domain: str, entry: _Domain):
        self.domain = domain
        self._auth, self._entry = auth, entry
        self.closed = False

    @property
    def refused(self) -> int:
        """Refused handshakes on this domain so far (maddpg_auth_failures_total); a retrying peer counts each try."""
        return self._entry.refused

    def close(self) -> None:
        """Unregisters the server: its domain accepts no one once its last server is closed. Idempotent."""
        if not self.closed:
            self.closed = True
            self._auth.unregister(self.domain)


_authenticators: dict[zmq.Context, _Authenticator] = {}
_authenticators_lock = threading.Lock()
_MONITORED = zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_MONITOR_STOPPED


class _Authenticator:
    """The ZAP handler of one context and the reader of its servers' handshake-failure monitors.

    Its thread runs until the context is terminated. Registration happens in callers' threads under `_lock`;
    the thread owns the sockets (monitors are handed over under the lock: the memory barrier ZeroMQ asks for
    when a socket changes threads). A monitor is read until its server socket closes, even after close() of
    its ServerAuth: libzmq sends events with a blocking send, so an unread monitor would stall the context.
    """

    _POLL_MS = 100  # how soon a new monitor is polled; a ZAP request wakes the thread at once

    @classmethod
    def of(cls, context: zmq.Context) -> _Authenticator:
        with _authenticators_lock:
            auth = _authenticators.get(context)
            if auth is None:
                auth = _authenticators[context] = cls(context)
            return auth

    def __init__(self, context: zmq.Context):
        self._context = context
        self._zap = context.socket(zmq.REP)
        self._zap.linger = 0
        try:
            self._zap.bind(_ZAP_ENDPOINT)
        except zmq.ZMQError as e:
            self._zap.close()
            raise RuntimeError(f"another ZAP handler already serves this context ({e})") from e
        self._lock = threading.Lock()
        self._domains: dict[str, _Domain] = {}
        self._monitors: dict[zmq.Socket, ServerAuth] = {}
        threading.Thread(target=self._run, name="maddpg-zap", daemon=True).start()

    def register(self, sock: zmq.Socket, domain: str, client_key: bytes) -> ServerAuth:
        with self._lock:
            entry = self._domains.setdefault(domain, _Domain(client_key))
            if not hmac.compare_digest(entry.client_key, client_key):
                raise ValueError(f"ZAP domain {domain!r} already belongs to a server of another run key")
            entry.servers += 1
            handle = ServerAuth(self, domain, entry)
            address = f"inproc://maddpg-security-monitor-{uuid.uuid4().hex}"
            sock.monitor(address, _MONITORED)
            monitor = self._context.socket(zmq.PAIR)
            monitor.connect(address)
            self._monitors[monitor] = handle
        return handle

    def unregister(self, domain: str) -> None:
        with self._lock:
            entry = self._domains[domain]
            entry.servers -= 1
            if entry.servers == 0:
                del self._domains[domain]

    def _run(self) -> None:
        try:
            while True:
                with self._lock:
                    monitors = list(self._monitors)
                poller = zmq.Poller()
                for s in (self._zap, *monitors):
                    poller.register(s, zmq.POLLIN)
                for s, _ in poller.poll(self._POLL_MS):
                    if s is self._zap:
                        self._zap.send_multipart(self._answer(self._zap.recv_multipart()))
                    else:
                        self._note(s, parse_monitor_message(s.recv_multipart()))
        except zmq.ContextTerminated:  # let term() finish: it waits for every socket, ours included
            with self._lock:
                for s in (self._zap, *self._monitors):
                    s.close(linger=0)
        finally:
            with _authenticators_lock:
                if _authenticators.get(self._context) is self:
                    del _authenticators[self._context]

    def _answer(self, request: list[bytes]) -> list[bytes]:
        """A ZAP reply (RFC 27): 200 for the registered client key of the domain, 400 for anything else."""
        # Padded so that a short request is refused rather than crashing the thread.
        version, request_id, domain, _address, _identity, mechanism, key = (request + [b""] * 7)[:7]
        with self._lock:
            entry = self._domains.get(domain.decode(errors="replace"))
        if entry is None and mechanism == b"NULL" and not domain:
            ok = True  # a plain socket of this context asking ZAP: ZeroMQ's default, not ours to judge
        else:
            ok = (entry is not None and version == b"1.0" and mechanism == b"CURVE"
                  and hmac.compare_digest(key, entry.client_key))
        status = [b"200", b"OK", b"explorer"] if ok else [b"400", b"not a client of this run", b""]
        return [b"1.0", request_id, *status, b""]

    def _note(self, monitor: zmq.Socket, event: dict) -> None:
        with self._lock:
            handle = self._monitors[monitor]
            if event["event"] == zmq.EVENT_MONITOR_STOPPED:  # the server socket is closed
                del self._monitors[monitor]
                monitor.close(linger=0)
                return
            if handle.closed:
                return
            entry = handle._entry
            entry.refused += 1
            now = time.monotonic()
            warn = now - entry.last_warning >= _WARN_EVERY
            if warn:
                entry.last_warning = now
        if warn:
            log.warning("refused a peer on %s (ZAP domain %s): %s; %d refused so far",
                        event["endpoint"].decode(errors="replace"), handle.domain, _reason(event), entry.refused)


def _reason(event: dict) -> str:
    if event["event"] == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        return "its client key is not this run's"
    return {zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH: "not a CURVE client (plain ZeroMQ?)",
            zmq.PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC: "wrong server key (another run's key?)"}.get(
        event["value"], f"protocol error {event['value']:#x}")
