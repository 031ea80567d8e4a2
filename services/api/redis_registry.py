"""The run registry in Redis: a hash per run, a sorted set of every run by creation time, one per status.

Keys (PREFIX = "maddpg-api"): `PREFIX:run:ID` (hash: the RunRecord's fields, JSON for spec, pids, procs, pods and
endpoints), `PREFIX:runs` (sorted set, score = created), `PREFIX:status:STATUS` (sorted set of the runs in that
status). Adding a run and changing its status are Lua scripts, so the hash and the sets always agree, a status
moves only from the statuses the caller allows, and the number of active runs is counted and changed in one step.
Listing reads one page of a sorted set and pipelines the hashes: the cost grows with the page, not with the number
of runs.
"""

from __future__ import annotations

import json
import time

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from services.api.registry import (ACTIVE, DuplicateRunError, RegistryError, RunRecord, TooManyRunsError,
                                   check_update)

# KEYS: run hash, all-runs set, status set, then the sets of the ACTIVE statuses. ARGV: id, status, created, the
# most active runs (-1: no limit), then field, value pairs. Returns 1 (added), 0 (the id is taken), -1 (no room).
_ADD = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local most = tonumber(ARGV[4])
if most >= 0 then
  local active = 0
  for i = 4, #KEYS do active = active + redis.call('ZCARD', KEYS[i]) end
  if active >= most then return -1 end
end
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
return 1
"""

# KEYS: run hash, then the sets of the ACTIVE statuses. ARGV: status-set prefix, new status or '', the most active
# runs (-1: no limit), number of allowed statuses n, the n statuses, then field, value pairs. Returns 1 (changed),
# 0 (no such run, or its status is not allowed), -1 (no room).
_UPDATE = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 0 end
local n = tonumber(ARGV[4])
if n > 0 then
  local allowed = false
  for i = 5, 4 + n do if ARGV[i] == status then allowed = true end end
  if not allowed then return 0 end
end
local most = tonumber(ARGV[3])
if most >= 0 then
  local active = 1
  for i = 2, #KEYS do
    active = active + redis.call('ZCARD', KEYS[i])
    if KEYS[i] == ARGV[1] .. status then active = active - 1 end
  end
  if active > most then return -1 end
end
redis.call('HSET', KEYS[1], unpack(ARGV, 5 + n))
local new = ARGV[2]
if new ~= '' and new ~= status then
  local id = redis.call('HGET', KEYS[1], 'id')
  local created = redis.call('HGET', KEYS[1], 'created')
  redis.call('ZREM', ARGV[1] .. status, id)
  redis.call('ZADD', ARGV[1] .. new, created, id)
end
return 1
"""

_JSON_FIELDS = ("spec", "pids", "procs", "pods", "endpoints")


def _encode(fields: dict) -> list:
    """Field, value pairs for HSET: JSON for the structured fields, '' for no reason."""
    pairs = []
    for key, value in fields.items():
        if key in _JSON_FIELDS:
            value = json.dumps(value)
        elif value is None:
            value = ""
        pairs += [key, value]
    return pairs


def _record(raw: dict[str, str]) -> RunRecord:
    """A run from its hash; `procs` and `pods` are absent from hashes written before they were added."""
    return RunRecord(id=raw["id"], status=raw["status"], spec=json.loads(raw["spec"]), run_dir=raw["run_dir"],
                     pids=json.loads(raw["pids"]), procs=json.loads(raw.get("procs", "[]")),
                     pods=json.loads(raw.get("pods", "{}")), endpoints=json.loads(raw["endpoints"]),
                     reason=raw["reason"] or None, created=float(raw["created"]), updated=float(raw["updated"]))


class RedisRegistry:
    """Runs in Redis, shared by every replica of the API (see services.api.registry.Registry for the methods).

    Every call has a socket timeout and is retried a few times with backoff on connection errors; an error
    that persists becomes a RegistryError naming the server.

    Args:
      url: redis://HOST:PORT/DB (REDIS_URL).
      prefix: the keys' prefix (tests give each a fresh one).
      timeout: seconds per call.
    """

    def __init__(self, url: str, prefix: str = "maddpg-api", timeout: float = 5.0):
        self.url, self._prefix = url, prefix
        self._redis = redis.Redis.from_url(
            url, decode_responses=True, socket_timeout=timeout, socket_connect_timeout=timeout,
            retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=3),
            retry_on_error=[redis.ConnectionError, redis.TimeoutError])
        self._add = self._redis.register_script(_ADD)
        self._update = self._redis.register_script(_UPDATE)

    def _run_key(self, run_id: str) -> str:
        return f"{self._prefix}:run:{run_id}"

    def _set_key(self, status: str | None) -> str:
        return f"{self._prefix}:status:{status}" if status else f"{self._prefix}:runs"

    def _error(self, e: redis.RedisError) -> RegistryError:
        host = self._redis.connection_pool.connection_kwargs.get("host", "?")
        port = self._redis.connection_pool.connection_kwargs.get("port", "?")
        return RegistryError(f"Redis registry at {host}:{port}: {type(e).__name__}: {e} (check REDIS_URL and that "
                             f"the server is up)")

    def _active_keys(self) -> list[str]:
        return [self._set_key(status) for status in ACTIVE]

    def add(self, record: RunRecord, max_active: int | None = None) -> RunRecord:
        record.created = record.updated = time.time()
        fields = {"id": record.id, "status": record.status, "spec": record.spec, "run_dir": record.run_dir,
                  "pids": record.pids, "procs": record.procs, "pods": record.pods, "endpoints": record.endpoints,
                  "reason": record.reason,
                  "created": record.created, "updated": record.updated}
        try:
            most = max_active if max_active is not None and record.status in ACTIVE else -1
            added = self._add(keys=[self._run_key(record.id), self._set_key(None), self._set_key(record.status),
                                    *self._active_keys()],
                              args=[record.id, record.status, record.created, most, *_encode(fields)])
        except redis.RedisError as e:
            raise self._error(e) from None
        if added == 0:
            raise DuplicateRunError(record.id)
        if added == -1:
            raise TooManyRunsError(max_active)
        return record

    def get(self, run_id: str) -> RunRecord | None:
        try:
            raw = self._redis.hgetall(self._run_key(run_id))
        except redis.RedisError as e:
            raise self._error(e) from None
        return _record(raw) if raw else None

    def _records(self, ids: list[str]) -> list[RunRecord]:
        pipe = self._redis.pipeline(transaction=False)
        for run_id in ids:
            pipe.hgetall(self._run_key(run_id))
        return [_record(raw) for raw in pipe.execute() if raw]

    def list(self, status: str | None = None, limit: int = 50, offset: int = 0) -> tuple[list[RunRecord], int]:
        key = self._set_key(status)
        try:
            pipe = self._redis.pipeline(transaction=True)  # the page and the count from one moment
            pipe.zcard(key)
            pipe.zrevrange(key, offset, offset + limit - 1)
            total, ids = pipe.execute()
            return self._records(ids), total
        except redis.RedisError as e:
            raise self._error(e) from None

    def active(self) -> list[RunRecord]:
        try:
            ids = [run_id for status in ACTIVE for run_id in self._redis.zrange(self._set_key(status), 0, -1)]
            return [r for r in self._records(ids) if r.status in ACTIVE]
        except redis.RedisError as e:
            raise self._error(e) from None

    def update(self, run_id: str, *, only_from: tuple[str, ...] | None = None, max_active: int | None = None,
               **fields) -> bool:
        check_update(fields)
        allowed = list(only_from or ())
        most = max_active if max_active is not None and fields.get("status") in ACTIVE else -1
        args = [f"{self._prefix}:status:", fields.get("status", ""), most, len(allowed), *allowed,
                *_encode({**fields, "updated": time.time()})]
        try:
            changed = self._update(keys=[self._run_key(run_id), *self._active_keys()], args=args)
        except redis.RedisError as e:
            raise self._error(e) from None
        if changed == -1:
            raise TooManyRunsError(max_active)
        return changed == 1

    def ping(self) -> None:
        try:
            self._redis.ping()
        except redis.RedisError as e:
            raise self._error(e) from None

    def close(self) -> None:
        self._redis.close()
