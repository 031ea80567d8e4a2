"""The Redis Streams backend of the replay queue: one stream per run, a consumer group for the learner.

Explorers XADD one entry per chunk (the transport's binary encoding, plus an HMAC-SHA256 of it when the run
has a signing key). The learner reads with XREADGROUP without blocking (a blocking read waits ~100 ms at
Redis' default `hz 10`): first its own pending entries, which a crashed learner left unacknowledged, then new
ones. When it XACKs is the learner's choice (see services/learner): after a checkpoint covers the entries, so
that after a crash every chunk is either accounted for by the restored checkpoint or read again. Only
acknowledged entries are ever trimmed; explorers wait while the group's lag is over `max_lag` (back-pressure
without losing data).

Faults: lost connections and a Redis still loading its data are retried with backoff (an XADD retried after
a lost reply may store a chunk twice: the learner skips a `seq` it already holds). Wrong credentials fail at
once. A stream or consumer group that vanished (Redis restarted without persistence, or the key was
deleted) is recreated from id 0 and counted in `resets`. An entry that cannot be a chunk is acknowledged,
counted (`corrupted`, or `rejected` when its MAC is missing or wrong) and skipped: no entry can make `get`
raise.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import time
from collections.abc import Callable
from typing import Any, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.exceptions import (AuthenticationError, AuthenticationWrongNumberOfArgsError, AuthorizationError,
                              NoPermissionError)
from redis.retry import Retry

from maddpg.transport.codec import chunk_problem, decode_blob, encode_blob
from maddpg.types import Chunk

log = logging.getLogger(__name__)
T = TypeVar("T")

CHUNK_FIELD, MAC_FIELD = b"chunk", b"mac"
_WAIT_LOG_S = 30.0  # back-pressure waits longer than this are logged, at most this often
_RESET_TRIES = 3  # recreations of a vanished group in a row before giving up on one command
# Redis refused who we are or what we may do: retrying cannot help, and the URL must be fixed.
_REFUSED = (AuthenticationError, AuthenticationWrongNumberOfArgsError, AuthorizationError, NoPermissionError)


class QueueError(Exception):
    """Redis stayed unreachable longer than allowed, refused the credentials, or keeps losing the group."""


def stream_key(run_id: str) -> str:
    return f"maddpg:{run_id}:chunks"


def redact_url(url: str) -> str:
    """The URL with any password (in its user info or a `password=` query) replaced by ***, for messages.

    Works on the raw text rather than a parsed URL, so that a password with an unencoded / # ? or @, which a
    URL parser reads as something else, is still hidden."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, hostpart = rest.rpartition("@")
    if at and ":" in userinfo:
        rest = f"{userinfo.partition(':')[0]}:***@{hostpart}"
    return re.sub(r"([?&]password=)[^&#]*", r"\1***", scheme + sep + rest)


def _text(entry_id: str | bytes) -> str:
    return entry_id.decode() if isinstance(entry_id, bytes) else entry_id


def _entry_id(entry_id: str | bytes) -> tuple[int, int]:
    """A stream entry id ("ms-seq", or "0") as a comparable pair."""
    ms, _, seq = _text(entry_id).partition("-")
    return int(ms), int(seq or 0)


def _group_gone(e: redis.ResponseError) -> bool:
    """Redis' replies to a command on a stream or consumer group that does not exist."""
    message = str(e)
    return message.startswith("NOGROUP") or "no such key" in message.lower()


class RedisQueue:
    """One run's chunk stream.

    Args:
      url: redis://[[user]:password@]host:port/db. run_id: names the stream. group, consumer: the learner's
      consumer group and name (a restarted learner must reuse the name to find its pending entries).
      max_lag: entries not yet delivered to the learner beyond which `put` waits. give_up_after: seconds of
      failed retries before QueueError. signing_key: explorers sign each entry with it and the learner drops
      entries whose MAC is missing or wrong (None: entries are neither signed nor checked). client: an
      existing redis.Redis (tests).

    Raises:
      ValueError: an empty signing key (it would sign nothing), or a URL redis-py cannot parse.
    """

    def __init__(self, url: str, run_id: str, *, group: str = "learner", consumer: str = "learner",
                 max_lag: int = 2000, give_up_after: float = 300.0, signing_key: bytes | None = None,
                 client: redis.Redis | None = None):
        if signing_key is not None and not signing_key:
            raise ValueError("signing_key is empty: pass None to leave entries unsigned")
        self.key, self.url = stream_key(run_id), redact_url(url)
        self.group, self.consumer, self.max_lag = group, consumer, max_lag
        self._give_up, self._signing_key = give_up_after, signing_key
        self._redis = client or self._connect(url)
        self._cursor: str | bytes | None = "0"  # walks our own pending entries first; None: read new ones
        self._last_seen: str | bytes = "0"  # the newest entry handed out to the caller
        self._reconnected = False  # a call failed on the connection: get() checks that Redis kept our group
        self._group_ready = False  # created once; later losses show up as NOGROUP / no such key
        self.corrupted = 0  # entries that are no chunk
        self.rejected = 0  # entries whose MAC is missing or wrong
        self.resets = 0  # times the stream or group had vanished and was recreated
        self.waited_s = 0.0  # time explorers spent held by back-pressure

    def _connect(self, url: str) -> redis.Redis:
        try:
            # No retries inside redis-py: `_call` is the one retry loop, so that `give_up_after` holds.
            return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5, retry=Retry(NoBackoff(), 0))
        except ValueError:  # its message may quote a piece of the password
            raise ValueError(f"cannot parse the Redis URL {self.url} (a password needs its / # ? @ "
                             "percent-encoded)") from None

    # ------------------------------------------------------------ retries and resets
    def _call(self, fn: Callable[[], T], what: str) -> T:
        delay, started = 0.05, time.monotonic()
        while True:
            try:
                return fn()
            except _REFUSED as e:
                raise QueueError(f"Redis at {self.url} refused {what}: {e} (check the user and password in "
                                 "the URL)") from None
            except (redis.ConnectionError, redis.TimeoutError) as e:  # BusyLoadingError too: still loading
                self._reconnected = True  # Redis may have restarted meanwhile: get() checks our group's state
                if time.monotonic() - started > self._give_up:
                    raise QueueError(f"Redis at {self.url} unreachable for {self._give_up:.0f} s ({what}): "
                                     f"{e}") from None
                log.warning("Redis %s at %s failed (%s); retrying in %.2f s", what, self.url, e, delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _create_group(self) -> None:
        try:
            self._call(lambda: self._redis.xgroup_create(self.key, self.group, id="0", mkstream=True),
                       "XGROUP CREATE")
        except redis.ResponseError as e:
            if "BUSYGROUP" not in str(e):  # BUSYGROUP: the other side created it first
                raise

    def _ensure_group(self) -> None:
        if not self._group_ready:
            self._create_group()
            self._group_ready = True

    def _reset(self, what: str, why: str, create: bool = True) -> None:
        # From id 0: entries XADDed since the loss are still delivered; those Redis lost cannot be.
        if create:
            self._create_group()
        self.resets += 1
        self._cursor = self._last_seen = "0"  # our old pending entries are gone: walk the new (empty) list, then new ones
        log.warning("replay stream %s on %s lost its consumer group %r (%s: %s; Redis restarted without "
                    "persistence or the stream was deleted): recreated it, chunks not yet read may have been "
                    "lost", self.key, self.url, self.group, what, why)

    def _check_group_kept(self) -> None:
        """After a lost connection: a group whose delivery position is behind what we were handed was created
        anew (by an explorer, which may notice first) on a Redis that lost its data; say so as a reset."""
        self._reconnected = False
        last = self._group_info()["last-delivered-id"]
        if _entry_id(last) < _entry_id(self._last_seen):
            self._reset("XINFO GROUPS", f"its delivery position {last.decode()} is behind the last entry read, "
                        f"{_text(self._last_seen)}", create=False)

    def _group_call(self, fn: Callable[[], T], what: str) -> T:
        """`_call` for a command that needs the stream and our group: recreates them if they vanished."""
        for _ in range(_RESET_TRIES):
            try:
                return self._call(fn, what)
            except redis.ResponseError as e:
                if not _group_gone(e):
                    raise
                self._reset(what, str(e))
        raise QueueError(f"{self.key} on {self.url}: consumer group {self.group!r} vanished {_RESET_TRIES} "
                         f"times in a row ({what})")

    def _group_info(self) -> dict:
        """Our group's XINFO GROUPS entry."""
        self._ensure_group()
        for _ in range(_RESET_TRIES):
            groups = self._group_call(lambda: self._redis.xinfo_groups(self.key), "XINFO GROUPS")
            for g in groups:
                if g["name"].decode() == self.group:
                    return g
            self._reset("XINFO GROUPS", "the stream exists without the group")  # re-created by an XADD
        raise QueueError(f"{self.key} on {self.url}: consumer group {self.group!r} vanished {_RESET_TRIES} "
                         "times in a row (XINFO GROUPS)")

    # ------------------------------------------------------------ explorer side
    def lag(self) -> int:
        """Entries the learner's group has not been delivered yet."""
        g = self._group_info()
        if g.get("lag") is not None:
            return int(g["lag"])
        # Redis cannot tell the lag once trimming left gaps: count the undelivered entries (bounded).
        after = b"(" + g["last-delivered-id"]
        return len(self._call(lambda: self._redis.xrange(self.key, min=after, max="+", count=self.max_lag + 1),
                              "XRANGE"))

    def put(self, chunk: Chunk, poll_s: float = 0.05) -> bytes:
        """XADDs a chunk once the group's lag is under `max_lag`; returns the entry id Redis acknowledged."""
        self._wait_for_room(poll_s)
        blob = encode_blob(chunk)
        fields = {CHUNK_FIELD: blob}
        if self._signing_key is not None:
            fields[MAC_FIELD] = self._mac(blob)
        return self._call(lambda: self._redis.xadd(self.key, fields), "XADD")

    def _wait_for_room(self, poll_s: float) -> None:
        started = logged = time.monotonic()
        while (lag := self.lag()) >= self.max_lag:
            if time.monotonic() - logged >= _WAIT_LOG_S:  # a learner this far behind is stalled or gone
                logged = time.monotonic()
                log.warning("replay stream %s: %d chunks not yet read by the learner (max_lag %d); waiting "
                            "for %.0f s", self.key, lag, self.max_lag, logged - started)
            time.sleep(poll_s)
        self.waited_s += time.monotonic() - started

    def _mac(self, blob: bytes) -> bytes:
        return hmac.new(self._signing_key, blob, hashlib.sha256).digest()

    # ------------------------------------------------------------ learner side
    def get(self, max_chunks: int, timeout: float) -> list[tuple[Any, Chunk]]:
        """Up to `max_chunks` chunks with their entry ids: pending ones first, then new ones. Never blocks
        in Redis; polls until `timeout` when nothing is there. Entries that are no valid chunk are
        acknowledged and skipped."""
        self._ensure_group()
        deadline = time.monotonic() + timeout
        while True:
            entries = self._read(max_chunks)
            if self._reconnected:
                self._check_group_kept()
                if self._cursor == "0":  # reset: what we just read came from a walk that no longer holds
                    continue
            if self._cursor is not None:
                if not entries:
                    self._cursor = None  # every pending entry was handed out again: now the new ones
                    continue
                self._cursor = entries[-1][0]
            if entries:
                self._last_seen = entries[-1][0]
            if entries or time.monotonic() >= deadline:
                return self._decode(entries)
            time.sleep(0.002)

    def _read(self, count: int) -> list:
        def xreadgroup():
            # The cursor is read inside the call: a reset during it moves the cursor back to "0".
            try:
                return self._redis.xreadgroup(self.group, self.consumer,
                                              {self.key: ">" if self._cursor is None else self._cursor}, count=count)
            except (redis.ConnectionError, redis.TimeoutError):
                # Redis may have delivered new entries (into our pending list, durably) and lost only its
                # reply: read on from our pending entries after the newest one handed out, not past them.
                if self._cursor is None:
                    self._cursor = self._last_seen
                raise

        reply = self._group_call(xreadgroup, "XREADGROUP")
        return reply[0][1] if reply else []

    def _decode(self, entries) -> list[tuple[Any, Chunk]]:
        out, bad = [], []
        for entry_id, fields in entries:
            chunk = self._chunk(entry_id, fields)
            if chunk is None:
                bad.append(entry_id)
            else:
                out.append((entry_id, chunk))
        if bad:
            self.ack(bad)
        return out

    def _chunk(self, entry_id, fields) -> Chunk | None:
        """The entry's chunk, or None once the entry is counted and logged as one to drop."""
        blob = fields.get(CHUNK_FIELD) if isinstance(fields, dict) else None
        if not isinstance(blob, bytes):  # also a pending entry deleted by hand: Redis returns no fields
            return self._drop_corrupted(entry_id, f"no bytes field {CHUNK_FIELD!r}")
        if self._signing_key is not None:
            mac = fields.get(MAC_FIELD)
            if not isinstance(mac, bytes) or not hmac.compare_digest(mac, self._mac(blob)):
                self.rejected += 1
                log.error("dropping entry %s of %s: its MAC is missing or wrong (not written by this run's "
                          "explorers)", entry_id, self.key)
                return None
        try:
            msg = decode_blob(blob)
            problem = None if isinstance(msg, Chunk) else f"a {type(msg).__name__}, not a Chunk"
            problem = problem or _shape_problem(msg)
        except Exception as e:  # the codec lets IndexError and numpy errors out on hostile headers
            problem = f"{type(e).__name__}: {e}"
        return self._drop_corrupted(entry_id, problem) if problem else msg

    def _drop_corrupted(self, entry_id, why: str) -> None:
        self.corrupted += 1
        log.error("dropping corrupted entry %s of %s: %s", entry_id, self.key, why)

    def ack(self, tokens: list[Any]) -> None:
        """XACKs entries and trims what every reader has acknowledged (never an unread entry). Ids from
        before a reset are acknowledged as no-ops."""
        if not tokens:
            return
        self._call(lambda: self._redis.xack(self.key, self.group, *tokens), "XACK")
        self._trim()

    def _trim(self) -> None:
        pending = self._group_call(lambda: self._redis.xpending(self.key, self.group), "XPENDING")
        if pending["pending"]:
            floor = pending["min"]  # the oldest entry still unacknowledged
        else:
            last = self._group_info()["last-delivered-id"]
            ms, seq = (int(x) for x in last.decode().split("-"))
            floor = f"{ms}-{seq + 1}"  # everything delivered was acknowledged
        self._call(lambda: self._redis.xtrim(self.key, minid=floor, approximate=False), "XTRIM")

    def commit(self, tokens: list[Any], positions: dict[str, int]) -> None:
        """A written checkpoint covers these entries (and the intake `positions`, which live in the checkpoint):
        acknowledge them."""
        self.ack(tokens)

    def depth(self) -> int:
        """Chunks waiting to be read by the learner (the group's lag)."""
        return self.lag()

    def length(self) -> int:
        return int(self._call(lambda: self._redis.xlen(self.key), "XLEN"))

    def pending(self) -> int:
        self._ensure_group()
        return int(self._group_call(lambda: self._redis.xpending(self.key, self.group), "XPENDING")["pending"])


def _shape_problem(chunk: Chunk) -> str | None:
    """Why a chunk's arrays do not fit together, or None; the learner checks them against its agents."""
    t = chunk.transitions
    if not t.obs or any(a.ndim != 2 for a in [*t.obs, *t.action]):
        return "a chunk needs at least one agent and 2-D observation and action arrays"
    return chunk_problem(chunk, [o.shape[1] for o in t.obs], [a.shape[1] for a in t.action])
