"""The run registry's contract, for SQLite and for Redis (a real redis-server): add, get, list with status filter
and pages, guarded status changes (atomic under racing threads), active runs, ping; and the API with Redis."""

from __future__ import annotations

import sqlite3
import threading
import uuid

import pytest
from fastapi.testclient import TestClient

from services.api.main import create_app
from services.api.redis_registry import RedisRegistry
from services.api.registry import (DuplicateRunError, RegistryError, RunRecord, SqliteRegistry, TooManyRunsError,
                                   make_registry)
from services.api.settings import ApiSettings
from tests.integration.redis_server import RedisServer
from tests.unit.api.conftest import FakeLauncher


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "redis"])
def registry(request, tmp_path):
    if request.param == "sqlite":
        made = SqliteRegistry(tmp_path / "registry.sqlite3")
    else:
        server = request.getfixturevalue("redis_server")
        made = RedisRegistry(server.url, prefix=f"test-{uuid.uuid4().hex[:8]}")
    yield made
    made.close()


def _run(run_id: str, status: str = "running") -> RunRecord:
    return RunRecord(id=run_id, status=status, spec={"scenario": "simple", "seed": 3}, run_dir=f"/runs/{run_id}",
                     pids=[11, 12], procs=["boot:100", "boot:101"], pods={"image": "maddpg:dev"},
                     endpoints={"learner": "tcp://127.0.0.1:5"})


def test_add_get_and_duplicates(registry):
    added = registry.add(_run("a"))
    assert added.created > 0 and added.created == added.updated
    got = registry.get("a")
    assert got == added and got.spec == {"scenario": "simple", "seed": 3} and got.reason is None
    with pytest.raises(DuplicateRunError):
        registry.add(_run("a"))
    assert registry.get("nope") is None


def test_list_pages_newest_first_with_a_status_filter(registry):
    for k in range(12):
        registry.add(_run(f"r{k:02d}", "finished" if k % 3 == 0 else "running"))
    page, total = registry.list(limit=5, offset=2)
    assert total == 12 and [r.id for r in page] == ["r09", "r08", "r07", "r06", "r05"]
    finished, total = registry.list("finished", limit=10)
    assert total == 4 and [r.id for r in finished] == ["r09", "r06", "r03", "r00"]
    assert registry.list("failed") == ([], 0)
    assert registry.list(limit=5, offset=50) == ([], 12)


def test_update_only_from_and_the_status_sets(registry):
    registry.add(_run("a"))
    before = registry.get("a").updated
    assert registry.update("a", only_from=("running",), status="stopping")
    assert not registry.update("a", only_from=("running",), status="failed", reason="too late")
    assert registry.update("a", pids=[], procs=[], endpoints={"learner": "tcp://x:1"}, run_dir="")
    record = registry.get("a")
    assert (record.status, record.reason, record.pids, record.procs, record.endpoints, record.run_dir) == (
        "stopping", None, [], [], {"learner": "tcp://x:1"}, "")
    assert record.pods == {"image": "maddpg:dev"}
    assert record.updated >= before
    assert [r.id for r in registry.active()] == ["a"]
    assert registry.update("a", only_from=("running", "stopping"), status="failed", reason="boom")
    assert registry.get("a").reason == "boom" and registry.active() == []
    assert registry.list("failed")[1] == 1 and registry.list("stopping")[1] == 0 and registry.list("running")[1] == 0
    assert not registry.update("nope", status="failed")


def test_racing_status_changes_have_one_winner(registry):
    registry.add(_run("race"))
    wins, start = [], threading.Barrier(8)

    def attempt(k: int) -> None:
        start.wait()
        if registry.update("race", only_from=("running",), status="failed" if k % 2 else "stopping",
                           reason=f"thread {k}"):
            wins.append(k)

    threads = [threading.Thread(target=attempt, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1
    record = registry.get("race")
    assert record.reason == f"thread {wins[0]}" and record.status == ("failed" if wins[0] % 2 else "stopping")
    assert sum(registry.list(s)[1] for s in ("running", "stopping", "failed")) == 1  # in exactly one status set


def test_racing_adds_never_pass_the_cap(registry):
    registry.add(_run("done", "finished"))
    registry.add(_run("old", "stopping"))
    added, refused, start = [], [], threading.Barrier(12)

    def attempt(k: int) -> None:
        start.wait()
        try:
            added.append(registry.add(_run(f"race-{k}"), max_active=4).id)
        except TooManyRunsError as e:
            refused.append(e.limit)

    threads = [threading.Thread(target=attempt, args=(k,)) for k in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(added) == 3 and refused == [4] * 9  # "old" is stopping: it still counts
    assert len(registry.active()) == 4 and registry.list()[1] == 5
    with pytest.raises(TooManyRunsError):
        registry.add(_run("more"), max_active=4)
    assert registry.add(_run("ended", "failed"), max_active=4).id == "ended"  # not active: never capped


def test_making_a_run_active_again_is_capped_atomically(registry):
    registry.add(_run("a", "stopped"))
    registry.add(_run("b", "failed"))
    registry.add(_run("c"))
    wins, refusals, start = [], [], threading.Barrier(2)

    def resume(run_id: str) -> None:
        start.wait()
        try:
            if registry.update(run_id, only_from=("stopped", "failed"), max_active=2, status="running"):
                wins.append(run_id)
        except TooManyRunsError:
            refusals.append(run_id)

    threads = [threading.Thread(target=resume, args=(r,)) for r in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1 and len(refusals) == 1 and len(registry.active()) == 2
    loser = refusals[0]
    assert registry.get(loser).status in ("stopped", "failed")  # unchanged
    assert registry.list(registry.get(loser).status)[1] == 1  # and still in its status set
    assert not registry.update(wins[0], only_from=("stopped", "failed"), max_active=2, status="running")
    assert registry.update("c", max_active=2, status="stopping")  # within ACTIVE: the count stays
    assert registry.update(loser, only_from=("stopped", "failed"), max_active=3, status="running")


def test_a_thousand_runs(registry):
    for k in range(1000):
        registry.add(_run(f"run-{k:04d}", "finished" if k % 10 else "running"))
    page, total = registry.list(limit=100, offset=900)
    assert total == 1000 and page[0].id == "run-0099" and page[-1].id == "run-0000"
    assert len(registry.active()) == 100


def test_an_older_sqlite_file_gains_the_new_columns(tmp_path):
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as db:  # the first version's table
        db.execute("CREATE TABLE runs (id TEXT PRIMARY KEY, status TEXT NOT NULL, spec TEXT NOT NULL, "
                   "run_dir TEXT NOT NULL, pids TEXT NOT NULL DEFAULT '[]', endpoints TEXT NOT NULL DEFAULT '{}', "
                   "reason TEXT, created REAL NOT NULL, updated REAL NOT NULL)")
        db.execute("INSERT INTO runs VALUES ('old', 'failed', '{}', '/runs/old', '[7]', '{}', 'gone', 1.0, 2.0)")
    db.close()
    registry = SqliteRegistry(path)
    try:
        old = registry.get("old")
        assert (old.pids, old.procs, old.pods, old.reason) == ([7], [], {}, "gone")
        assert registry.update("old", procs=["boot:1"]) and registry.get("old").procs == ["boot:1"]
        registry.add(_run("new"))
        assert registry.get("new").procs == ["boot:100", "boot:101"]
    finally:
        registry.close()
    SqliteRegistry(path).close()  # opening it again changes nothing


def test_a_run_hash_written_before_procs_and_pods_reads(redis_server):
    registry = RedisRegistry(redis_server.url, prefix=f"test-{uuid.uuid4().hex[:8]}")
    try:
        registry.add(_run("old"))
        registry._redis.hdel(registry._run_key("old"), "procs", "pods")
        old = registry.get("old")
        assert (old.pids, old.procs, old.pods) == ([11, 12], [], {})
    finally:
        registry.close()


def test_an_unreachable_redis_is_a_registry_error_naming_it(tmp_path):
    (tmp_path / "redis").mkdir()
    server = RedisServer(tmp_path / "redis").start()
    registry = RedisRegistry(server.url, timeout=0.5)
    registry.ping()
    server.stop()
    with pytest.raises(RegistryError, match=f"Redis registry at 127.0.0.1:{server.port}"):
        registry.ping()
    with pytest.raises(RegistryError):
        registry.list()


def test_the_api_on_redis(tmp_path):
    (tmp_path / "redis").mkdir()
    server = RedisServer(tmp_path / "redis").start()
    settings = ApiSettings(runs_dir=tmp_path / "runs", redis_url=server.url)
    registry = make_registry(settings)
    assert isinstance(registry, RedisRegistry)
    try:
        with TestClient(create_app(settings, registry=registry, launcher=FakeLauncher())) as client:
            assert client.post("/runs", json={"scenario": "simple", "run_id": "on-redis"}).status_code == 201
            assert client.post("/runs", json={"scenario": "simple", "run_id": "on-redis"}).status_code == 409
            assert client.get("/runs").json()["items"][0]["id"] == "on-redis"
            assert client.get("/readyz").status_code == 200
            server.stop()
            ready = client.get("/readyz")
            assert ready.status_code == 503 and "Redis registry" in ready.json()["problems"][0]
            down = client.get("/runs")
            assert down.status_code == 503 and "registry is unavailable" in down.json()["detail"]
            server.start()  # its append-only file kept the run
            assert client.get("/runs/on-redis").json()["status"] == "running"
    finally:
        server.stop()
        registry.close()
