"""The Redis Streams backend of the replay queue: one stream per run, a consumer group for the learner.

Explorers XADD one entry per chunk (the transport's binary encoding). The learner reads with XREADGROUP
without blocking (a blocking read waits ~100 ms at Redis' default `hz 10`): first its own pending entries,
which a crashed learner left unacknowledged, then new ones. When it XACKs is the learner's choice (see
services/learner): after a checkpoint covers the entries, so that after a crash every chunk is either
accounted for by the restored checkpoint or read again. Only acknowledged entries are ever trimmed; explorers
wait while the group's lag is over `max_lag` (back-pressure without losing data). Lost connections are
retried with backoff; a corrupted entry is logged, counted, acknowledged and skipped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import redis

from maddpg.transport.codec import ProtocolError, decode_blob, encode_blob
from maddpg.types import Chunk

log = logging.getLogger(__name__)
T = TypeVar("T")


class QueueError(Exception):
    """Redis stayed unreachable longer than allowed."""


def stream_key(run_id: str) -> str:
    return f"maddpg:{run_id}:chunks"


class RedisQueue:
    """One run's chunk stream.

    Args:
      url: redis://host:port/db. run_id: names the stream. group, consumer: the learner's consumer group and
      name (a restarted learner must reuse the name to find its pending entries). max_lag: entries not yet
      delivered to the learner beyond which `put` waits. give_up_after: seconds of failed retries before
      QueueError. client: an existing redis.Redis (tests).
    """

    def __init__(self, url: str, run_id: str, *, group: str = "learner", consumer: str = "learner",
                 max_lag: int = 2000, give_up_after: float = 300.0, client: redis.Redis | None = None):
        self.key = stream_key(run_id)
        self.group, self.consumer, self.max_lag = group, consumer, max_lag
        self._give_up = give_up_after
        self._redis = client or redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self._cursor: str | bytes | None = "0"  # walks our own pending entries first; None: read new ones
        self._group_ready = False
        self.corrupted = 0
        self.waited_s = 0.0  # time explorers spent held by back-pressure

    # ------------------------------------------------------------ retries
    def _call(self, fn: Callable[[], T], what: str) -> T:
        delay, started = 0.05, time.monotonic()
        while True:
            try:
                return fn()
            except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError) as e:
                if time.monotonic() - started > self._give_up:
                    raise QueueError(f"Redis unreachable for {self._give_up:.0f} s ({what}): {e}") from None
                log.warning("Redis %s failed (%s); retrying in %.2f s", what, e, delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            self._call(lambda: self._redis.xgroup_create(self.key, self.group, id="0", mkstream=True),
                       "XGROUP CREATE")
        except redis.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise
        self._group_ready = True

    # ------------------------------------------------------------ explorer side
    def lag(self) -> int:
        """Entries the learner's group has not been delivered yet (0 before the group exists)."""
        self._ensure_group()
        groups = self._call(lambda: self._redis.xinfo_groups(self.key), "XINFO GROUPS")
        for g in groups:
            if g["name"].decode() == self.group:
                if g.get("lag") is not None:
                    return int(g["lag"])
                # Redis cannot tell the lag once trimming left gaps: count the undelivered entries (bounded).
                after = b"(" + g["last-delivered-id"]
                return len(self._call(lambda: self._redis.xrange(self.key, min=after, max="+", count=self.max_lag + 1),
                                      "XRANGE"))
        return 0

    def put(self, chunk: Chunk, poll_s: float = 0.05) -> bytes:
        """XADDs a chunk once the group's lag is under `max_lag`; returns the entry id Redis acknowledged."""
        waited = time.monotonic()
        while self.lag() >= self.max_lag:
            time.sleep(poll_s)
        self.waited_s += time.monotonic() - waited
        blob = encode_blob(chunk)
        return self._call(lambda: self._redis.xadd(self.key, {b"chunk": blob}), "XADD")

    # ------------------------------------------------------------ learner side
    def get(self, max_chunks: int, timeout: float) -> list[tuple[Any, Chunk]]:
        """Up to `max_chunks` chunks with their entry ids: pending ones first, then new ones. Never blocks
        in Redis; polls until `timeout` when nothing is there."""
        self._ensure_group()
        deadline = time.monotonic() + timeout
        while True:
            start_id = ">" if self._cursor is None else self._cursor
            reply = self._call(lambda: self._redis.xreadgroup(self.group, self.consumer, {self.key: start_id},
                                                               count=max_chunks), "XREADGROUP")
            entries = reply[0][1] if reply else []
            if self._cursor is not None:
                if not entries:
                    self._cursor = None  # every pending entry was handed out again: now the new ones
                    continue
                self._cursor = entries[-1][0]
            if entries or time.monotonic() >= deadline:
                return self._decode(entries)
            time.sleep(0.002)

    def _decode(self, entries) -> list[tuple[Any, Chunk]]:
        out, bad = [], []
        for entry_id, fields in entries:
            try:
                out.append((entry_id, decode_blob(fields[b"chunk"])))
            except (ProtocolError, KeyError, TypeError) as e:
                self.corrupted += 1
                log.error("skipping corrupted entry %s of %s: %s", entry_id, self.key, e)
                bad.append(entry_id)
        if bad:
            self.ack(bad)
        return out

    def ack(self, tokens: list[Any]) -> None:
        """XACKs entries and trims what every reader has acknowledged (never an unread entry)."""
        if not tokens:
            return
        self._call(lambda: self._redis.xack(self.key, self.group, *tokens), "XACK")
        self._trim()

    def _trim(self) -> None:
        pending = self._call(lambda: self._redis.xpending(self.key, self.group), "XPENDING")
        if pending["pending"]:
            floor = pending["min"]  # the oldest entry still unacknowledged
        else:
            info = self._call(lambda: self._redis.xinfo_groups(self.key), "XINFO GROUPS")
            last = next(g["last-delivered-id"] for g in info if g["name"].decode() == self.group)
            ms, seq = (int(x) for x in last.decode().split("-"))
            floor = f"{ms}-{seq + 1}"  # everything delivered was acknowledged
        self._call(lambda: self._redis.xtrim(self.key, minid=floor, approximate=False), "XTRIM")

    def depth(self) -> int:
        """Chunks waiting to be read by the learner (the group's lag)."""
        return self.lag()

    def length(self) -> int:
        return int(self._call(lambda: self._redis.xlen(self.key), "XLEN"))

    def pending(self) -> int:
        self._ensure_group()
        return int(self._call(lambda: self._redis.xpending(self.key, self.group), "XPENDING")["pending"])
