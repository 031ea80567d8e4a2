"""The run registry, so runs survive an API restart: one SQLite row per run (stdlib sqlite3), or one Redis hash
per run when the API has a Redis URL (services/api/redis_registry.py)."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

STATUSES = ("running", "stopping", "stopped", "finished", "failed")
ACTIVE = ("running", "stopping")
UPDATABLE = {"status", "reason", "pids", "procs", "endpoints", "run_dir"}
_JSON_COLUMNS = ("pids", "procs", "endpoints", "pods")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    spec TEXT NOT NULL,
    run_dir TEXT NOT NULL,
    pids TEXT NOT NULL DEFAULT '[]',
    endpoints TEXT NOT NULL DEFAULT '{}',
    reason TEXT,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_status ON runs (status, created);
"""
# Columns added since the first registries: added to an older file when it is opened.
_ADDED_COLUMNS = {"procs": "TEXT NOT NULL DEFAULT '[]'", "pods": "TEXT NOT NULL DEFAULT '{}'"}


class DuplicateRunError(Exception):
    """A run with this id is already registered."""


class TooManyRunsError(Exception):
    """Adding the run, or making it active again, would put more than `limit` runs in ACTIVE."""

    def __init__(self, limit: int):
        super().__init__(f"{limit} runs are active already")
        self.limit = limit


class RegistryError(Exception):
    """The registry cannot be reached or refused a request; the message names the backend."""


@dataclass
class RunRecord:
    """One run as registered. `spec` is the run spec as a JSON-ready dict; `pids[0]` is the learner's, and
    `procs` the identity of each of those processes (the local launcher's, to tell them from later processes
    that reuse a pid); `pods` the pod options of the run (launchers.PodOptions.to_dict)."""

    id: str
    status: str
    spec: dict
    run_dir: str
    pids: list[int] = field(default_factory=list)
    procs: list[str] = field(default_factory=list)
    pods: dict = field(default_factory=dict)
    endpoints: dict[str, str] = field(default_factory=dict)
    reason: str | None = None
    created: float = 0.0
    updated: float = 0.0


def _record(row: sqlite3.Row) -> RunRecord:
    return RunRecord(id=row["id"], status=row["status"], spec=json.loads(row["spec"]), run_dir=row["run_dir"],
                     pids=json.loads(row["pids"]), procs=json.loads(row["procs"]), pods=json.loads(row["pods"]),
                     endpoints=json.loads(row["endpoints"]), reason=row["reason"], created=row["created"],
                     updated=row["updated"])


class Registry(Protocol):
    """Where runs are recorded. Call order: `add` a run, `update` it as it changes, `get`/`list` it, `active` to
    reconcile, `ping` for readiness, `close` at shutdown. Every method may raise RegistryError."""

    def add(self, record: RunRecord, max_active: int | None = None) -> RunRecord:
        """Registers a new run (sets its created and updated times). Raises DuplicateRunError if its id is taken,
        TooManyRunsError if it is active and `max_active` runs are active already (counted and added atomically)."""

    def get(self, run_id: str) -> RunRecord | None: ...

    def list(self, status: str | None = None, limit: int = 50, offset: int = 0) -> tuple[list[RunRecord], int]:
        """A page of runs, newest first, and how many runs match in all."""

    def active(self) -> list[RunRecord]:
        """Runs that should have live processes (running or stopping)."""

    def update(self, run_id: str, *, only_from: tuple[str, ...] | None = None, max_active: int | None = None,
               **fields) -> bool:
        """Sets fields of a run (any of UPDATABLE); with `only_from`, only if its status is one of those, checked
        and set atomically. Returns whether the run changed. With `max_active`, a change to an ACTIVE status
        raises TooManyRunsError (and changes nothing) when it would leave more than `max_active` runs active."""

    def ping(self) -> None:
        """Raises RegistryError unless the registry answers."""

    def close(self) -> None: ...


def check_update(fields: dict) -> None:
    """Asserts that `update` got known fields and a known status."""
    assert fields and set(fields) <= UPDATABLE, fields
    assert fields.get("status", "running") in STATUSES, fields


def make_registry(settings) -> Registry:
    """The registry the API settings name: Redis when a Redis URL is set, SQLite otherwise."""
    if settings.redis_url:
        from services.api.redis_registry import RedisRegistry

        return RedisRegistry(settings.redis_url)
    return SqliteRegistry(settings.registry_path)


class SqliteRegistry:
    """Runs in a SQLite file, safe to share between the API's threads (see Registry for the methods)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=10, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
            columns = {row["name"] for row in self._db.execute("PRAGMA table_info(runs)")}
            for name, declaration in _ADDED_COLUMNS.items():
                if name not in columns:
                    self._db.execute(f"ALTER TABLE runs ADD COLUMN {name} {declaration}")

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """An IMMEDIATE transaction (the write lock, also against other processes on the file) under the lock:
        a count and the write it guards see one state."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _check_room(self, max_active: int) -> None:
        """Inside a transaction that just made a run active: raises TooManyRunsError (rolling it back) when that
        made more than `max_active`."""
        active = self._db.execute(f"SELECT COUNT(*) FROM runs WHERE status IN ({', '.join('?' * len(ACTIVE))})",
                                  ACTIVE).fetchone()[0]
        if active > max_active:
            raise TooManyRunsError(max_active)

    def add(self, record: RunRecord, max_active: int | None = None) -> RunRecord:
        now = time.time()
        record.created = record.updated = now
        try:
            with self._transaction():
                self._db.execute(
                    "INSERT INTO runs (id, status, spec, run_dir, pids, procs, pods, endpoints, reason, created, "
                    "updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (record.id, record.status, json.dumps(record.spec), record.run_dir, json.dumps(record.pids),
                     json.dumps(record.procs), json.dumps(record.pods), json.dumps(record.endpoints), record.reason,
                     now, now))
                if max_active is not None and record.status in ACTIVE:
                    self._check_room(max_active)
        except sqlite3.IntegrityError:
            raise DuplicateRunError(record.id) from None
        return record

    def get(self, run_id: str) -> RunRecord | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        return _record(row) if row else None

    def list(self, status: str | None = None, limit: int = 50, offset: int = 0) -> tuple[list[RunRecord], int]:
        where, args = ("WHERE status = ?", (status,)) if status else ("", ())
        with self._lock:
            total = self._db.execute(f"SELECT COUNT(*) FROM runs {where}", args).fetchone()[0]
            rows = self._db.execute(f"SELECT * FROM runs {where} ORDER BY created DESC, id LIMIT ? OFFSET ?",
                                    (*args, limit, offset)).fetchall()
        return [_record(r) for r in rows], total

    def active(self) -> list[RunRecord]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM runs WHERE status IN (?, ?)", ACTIVE).fetchall()
        return [_record(r) for r in rows]

    def update(self, run_id: str, *, only_from: tuple[str, ...] | None = None, max_active: int | None = None,
               **fields) -> bool:
        check_update(fields)
        values = {k: json.dumps(v) if k in _JSON_COLUMNS else v for k, v in fields.items()}
        sets = ", ".join(f"{k} = ?" for k in values) + ", updated = ?"
        args: list = [*values.values(), time.time(), run_id]
        where = "id = ?"
        if only_from:
            where += f" AND status IN ({', '.join('?' * len(only_from))})"
            args.extend(only_from)
        if max_active is not None and fields.get("status") in ACTIVE:
            with self._transaction():
                changed = self._db.execute(f"UPDATE runs SET {sets} WHERE {where}", args).rowcount > 0
                if changed:
                    self._check_room(max_active)
            return changed
        with self._lock:
            return self._db.execute(f"UPDATE runs SET {sets} WHERE {where}", args).rowcount > 0

    def ping(self) -> None:
        try:
            with self._lock:
                self._db.execute("SELECT 1 FROM runs LIMIT 1").fetchall()
        except sqlite3.Error as e:
            raise RegistryError(f"SQLite registry {self.path}: {e}") from None

    def close(self) -> None:
        with self._lock:
            self._db.close()
