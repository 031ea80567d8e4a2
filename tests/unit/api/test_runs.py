"""Runs routes: validation, limits, 404/409, pagination, stop semantics, auth and the registry on restart."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from services.api.launchers import PodOptions
from services.api.main import create_app
from services.api.registry import RunRecord
from services.api.schemas import Resources
from services.api.settings import ApiSettings
from tests.unit.api.conftest import FakeLauncher

SMALL = {"scenario": "simple", "explorers": 1, "envs_per_explorer": 2}


def _fields(response) -> set[str]:
    assert response.status_code == 422, response.text
    return {item["loc"][-1] for item in response.json()["detail"]}


@pytest.mark.parametrize("body, field", [
    ({"scenario": "nope"}, "scenario"),
    ({"batch_size": -4}, "batch_size"),
    ({"lr": 0}, "lr"),
    ({"colour": "red"}, "colour"),
    ({"explorers": 0}, "explorers"),
    ({"explorers": 5}, "explorers"),  # above max_explorers = 4
    ({"envs_per_explorer": 33}, "envs_per_explorer"),  # above max_envs_per_explorer = 32
    ({"run_id": "Bad_Id"}, "run_id"),
    ({"display": True}, "display"),
    ({"image": "Not An Image"}, "image"),
    ({"learner_resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}, "limits"),
    ({"learner_resources": {"requests": {"cpu": "2 cores", "memory": "1Gi"},
                            "limits": {"cpu": "2", "memory": "1Gi"}}}, "cpu"),
    ({"explorer_resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": 2}}},
     "memory"),
    ({"explorer_resources": {"requests": {"cpu": "0", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}}},
     "cpu"),  # the pattern excludes zero
    ({"learner_resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"},
                            "gpu": 1}}, "gpu"),
])
def test_a_bad_spec_is_422_naming_the_field(client, launcher, body, field):
    assert field in _fields(client.post("/runs", json={**SMALL, **body}))
    assert launcher.started == []


@pytest.mark.parametrize("members, where", [
    ('"lr": Infinity', ["body", "lr"]),
    ('"gamma": NaN', ["body", "gamma"]),
    ('"exploration_sigma": -Infinity', ["body", "exploration_sigma"]),
    ('"scenario": "simple_spread", "env_kwargs": {"local_ratio": NaN}', ["body", "env_kwargs", "local_ratio", "float"]),
])
def test_non_finite_numbers_are_422_naming_the_field(client, launcher, members, where):
    """Python's JSON reader takes Infinity and NaN: they must be refused, and echoed without breaking JSON."""
    response = client.post("/runs", content='{"explorers": 1, ' + members + "}",
                           headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert where in [item["loc"] for item in response.json()["detail"]]
    assert launcher.started == [] and client.get("/runs").json()["total"] == 0


@pytest.mark.parametrize("body, words", [
    ({"scenario": "simple_spread", "env_kwargs": {"N": 100_000}}, "N must lie in [1, 100]"),
    ({"scenario": "simple_spread", "env_kwargs": {"N": -1}}, "N must lie in [1, 100]"),
    ({"scenario": "simple_spread", "env_kwargs": {"N": 1.5}}, "N is a count"),
    ({"scenario": "simple_spread", "env_kwargs": {"terminate_on_success": 0}}, "is a boolean"),
    ({"exp_name": "x" * 129}, "exp_name"),
    ({"replay_size": 10**15}, "replay_size"),
])
def test_out_of_range_sizes_and_strings_are_422(client, launcher, body, words):
    response = client.post("/runs", json={**SMALL, **body})
    assert response.status_code == 422 and words in response.text
    assert launcher.started == []


def test_limits_below_requests_are_422_with_the_fix(client):
    response = client.post("/runs", json={**SMALL, "learner_resources": {
        "requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "500m", "memory": "2Gi"}}})
    assert response.status_code == 422 and "limits.cpu '500m' is below requests.cpu '1'" in response.text


def test_pod_fields_are_422_on_the_local_launcher(client, launcher):
    for field, value in [("image", "maddpg:dev"),
                         ("explorer_resources", {"requests": {"cpu": "1", "memory": "1Gi"},
                                                 "limits": {"cpu": "1", "memory": "1Gi"}})]:
        response = client.post("/runs", json={**SMALL, field: value})
        assert field in _fields(response) and "kubernetes launcher only" in response.text
    assert launcher.started == []


def test_a_cross_field_rule_is_422_with_its_message(client):
    response = client.post("/runs", json={**SMALL, "num_agents": 3})
    assert response.status_code == 422 and "num_agents" in response.text


def test_create_get_and_list(client, launcher):
    created = client.post("/runs", json={**SMALL, "run_id": "one", "seed": 7})
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["id"] == "one" and body["status"] == "running" and body["spec"]["seed"] == 7
    assert body["progress"] == {"source": "run_folder", "env_steps": 0, "episodes": 0, "updates": 0,
                                "mean_reward_last_100": None, "newest_checkpoint": None, "note": None}
    assert body["endpoints"] == {"learner": "tcp://127.0.0.1:1"} and launcher.started == ["one"]
    assert client.get("/runs/one").json()["spec"]["seed"] == 7
    generated = client.post("/runs", json=SMALL).json()["id"]
    assert generated.startswith("run-")
    assert [r["id"] for r in client.get("/runs").json()["items"]] == [generated, "one"]


def test_unknown_run_is_404(client):
    assert client.get("/runs/nope").status_code == 404
    assert client.post("/runs/nope/stop").status_code == 404
    assert client.get("/runs/nope/rewards").status_code == 404


def test_a_duplicate_run_id_is_409(client, launcher):
    assert client.post("/runs", json={**SMALL, "run_id": "dup"}).status_code == 201
    assert client.post("/runs", json={**SMALL, "run_id": "dup"}).status_code == 409
    assert launcher.started == ["dup"]


def test_stop_is_idempotent_and_409_once_finished(client, launcher, registry):
    client.post("/runs", json={**SMALL, "run_id": "a"})
    first = client.post("/runs/a/stop")
    assert first.status_code == 202 and first.json()["status"] == "stopping"
    assert client.post("/runs/a/stop").status_code == 202
    assert launcher.stopped == ["a"]  # asked once
    registry.update("a", status="stopped")
    assert client.post("/runs/a/stop").json()["status"] == "stopped"
    client.post("/runs", json={**SMALL, "run_id": "b"})
    registry.update("b", status="finished")
    assert client.post("/runs/b/stop").status_code == 409
    registry.update("b", status="failed", reason="boom")
    assert client.post("/runs/b/stop").status_code == 409


def test_active_runs_are_capped_with_429_and_retry_after(tmp_path):
    launcher = FakeLauncher()
    with TestClient(create_app(ApiSettings(runs_dir=tmp_path), launcher=launcher)) as c:
        for k in range(4):  # the local launcher's default cap
            assert c.post("/runs", json={**SMALL, "run_id": f"r{k}"}).status_code == 201
        refused = c.post("/runs", json={**SMALL, "run_id": "r4"})
        assert refused.status_code == 429 and refused.headers["Retry-After"] == "30"
        assert "MADDPG_API_MAX_ACTIVE_RUNS" in refused.json()["detail"]
        assert c.post("/runs/r0/stop").json()["status"] == "stopping"  # a stopping run still holds its processes
        assert c.post("/runs", json={**SMALL, "run_id": "r4"}).status_code == 429
        c.app.state.registry.update("r0", status="stopped")
        assert c.post("/runs", json={**SMALL, "run_id": "r4"}).status_code == 201
        assert launcher.started == ["r0", "r1", "r2", "r3", "r4"] and c.get("/runs/r4").status_code == 200
        assert c.get("/runs").json()["total"] == 5  # a refused run leaves nothing behind


def test_the_cap_holds_under_fifty_parallel_posts(tmp_path):
    launcher = FakeLauncher()
    with TestClient(create_app(ApiSettings(runs_dir=tmp_path), launcher=launcher)) as c:
        with ThreadPoolExecutor(max_workers=50) as pool:
            codes = list(pool.map(lambda k: c.post("/runs", json={**SMALL, "run_id": f"p{k}"}).status_code,
                                  range(50)))
        assert sorted(codes) == [201] * 4 + [429] * 46
        assert len(launcher.started) == 4 and c.get("/runs").json()["total"] == 4


def test_pagination_and_status_filter(client, registry):
    for k in range(7):
        client.post("/runs", json={**SMALL, "run_id": f"r{k}"})
    for k in (1, 3, 5):
        registry.update(f"r{k}", status="finished")
    page = client.get("/runs", params={"limit": 3, "offset": 2}).json()
    assert page["total"] == 7 and page["limit"] == 3 and [r["id"] for r in page["items"]] == ["r4", "r3", "r2"]
    finished = client.get("/runs", params={"status": "finished"}).json()
    assert finished["total"] == 3 and {r["id"] for r in finished["items"]} == {"r1", "r3", "r5"}
    assert client.get("/runs", params={"status": "nonsense"}).status_code == 422
    assert client.get("/runs", params={"limit": 0}).status_code == 422


def test_a_vanished_run_is_reconciled_to_failed(client, launcher):
    client.post("/runs", json={**SMALL, "run_id": "gone"})
    launcher.dead.add("gone")
    body = client.get("/runs/gone").json()
    assert body["status"] == "failed" and "gone" in body["reason"]


def test_token_guards_mutating_routes(tmp_path):
    settings = ApiSettings(runs_dir=tmp_path, token="s3cret")
    with TestClient(create_app(settings, launcher=FakeLauncher())) as c:
        assert c.post("/runs", json=SMALL).status_code == 401
        assert c.post("/runs", json=SMALL, headers={"Authorization": "Bearer wrong"}).status_code == 401
        ok = c.post("/runs", json={**SMALL, "run_id": "x"}, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 201
        assert c.post("/runs/x/stop").status_code == 401
        assert c.post("/runs/x/stop", headers={"Authorization": "Bearer s3cret"}).status_code == 202
        assert c.get("/runs").status_code == 200 and c.get("/runs/x").status_code == 200  # reads stay open


def test_the_registry_survives_a_new_app(tmp_path):
    settings = ApiSettings(runs_dir=tmp_path)
    with TestClient(create_app(settings, launcher=FakeLauncher())) as c:
        c.post("/runs", json={**SMALL, "run_id": "kept"})
        c.post("/runs", json={**SMALL, "run_id": "lost"})
        c.post("/runs/kept/stop")
    restarted = FakeLauncher()
    restarted.dead.update({"kept", "lost"})  # their processes went with the old API
    with TestClient(create_app(settings, launcher=restarted)) as c:
        runs = {r["id"]: r for r in c.get("/runs").json()["items"]}
        assert runs["kept"]["status"] == "stopped"
        assert runs["lost"]["status"] == "failed" and "POST /runs/{id}/resume" in runs["lost"]["reason"]
        assert runs["kept"]["spec"]["envs_per_explorer"] == 2


def _checkpoint(run_dir: Path) -> None:
    """A complete checkpoint as the run folder's store lists it (a manifest in a ckpt-* folder)."""
    (run_dir / "checkpoints" / "ckpt-000000001").mkdir(parents=True)
    (run_dir / "checkpoints" / "ckpt-000000001" / "manifest.json").write_text("{}")


def test_resume_continues_a_stopped_or_failed_run(client, launcher, registry, settings):
    for run_id in ("a", "early"):
        client.post("/runs", json={**SMALL, "run_id": run_id})
        client.post(f"/runs/{run_id}/stop")
        registry.update(run_id, status="stopped")
    early = client.post("/runs/early/resume")
    assert early.status_code == 409 and "no checkpoint" in early.json()["detail"]
    _checkpoint(settings.runs_dir / "a")
    resumed = client.post("/runs/a/resume")
    assert resumed.status_code == 202, resumed.text
    body = resumed.json()
    assert body["status"] == "running" and body["pids"] == [20_001] and body["reason"] is None
    assert body["endpoints"] == {"learner": "tcp://127.0.0.1:2"} and launcher.resumed == [("a", PodOptions())]
    assert client.post("/runs/a/resume").status_code == 409  # running
    registry.update("a", status="failed", reason="boom")
    assert client.post("/runs/a/resume").json()["status"] == "running"
    registry.update("a", status="finished")
    finished = client.post("/runs/a/resume")
    assert finished.status_code == 409 and "finished" in finished.json()["detail"]
    assert client.post("/runs/nope/resume").status_code == 404


def test_the_progress_of_a_resumed_run_is_read_again_when_it_ends_again(client, registry, settings):
    header = "episode,env_steps,updates,wall_time_s,length,reward\n"
    folder = settings.runs_dir / "again"
    client.post("/runs", json={**SMALL, "run_id": "again"})
    _checkpoint(folder)
    (folder / "rewards.csv").write_text(header + "1,25,0,0.1,25,-1\n")
    registry.update("again", status="stopped")
    assert client.get("/runs/again").json()["progress"]["episodes"] == 1  # an ended run's progress is kept
    client.post("/runs/again/resume")
    (folder / "rewards.csv").write_text(header + "1,25,0,0.1,25,-1\n2,50,0,0.2,25,-1\n")
    registry.update("again", status="stopped")
    assert client.get("/runs/again").json()["progress"]["episodes"] == 2


def test_resume_respects_the_active_run_cap(client, registry, settings):
    client.post("/runs", json={**SMALL, "run_id": "old"})
    registry.update("old", status="stopped")
    _checkpoint(settings.runs_dir / "old")
    for k in range(8):
        assert client.post("/runs", json={**SMALL, "run_id": f"r{k}"}).status_code == 201
    refused = client.post("/runs/old/resume")
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "30"
    assert client.get("/runs/old").json()["status"] == "stopped"


def test_a_resume_the_launcher_refuses_fails_the_run_with_503(client, launcher, registry, settings):
    client.post("/runs", json={**SMALL, "run_id": "x"})
    registry.update("x", status="failed")
    _checkpoint(settings.runs_dir / "x")
    launcher.refuse = "no cluster"
    assert client.post("/runs/x/resume").status_code == 503
    run = client.get("/runs/x").json()
    assert run["status"] == "failed" and run["reason"] == "no cluster"


def test_a_kubernetes_run_resumes_with_the_pods_it_was_started_with(tmp_path):
    launcher = FakeLauncher()
    settings = ApiSettings(runs_dir=tmp_path, launcher="kubernetes", image="maddpg:dev")
    pod = {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "2", "memory": "3Gi"}}
    with TestClient(create_app(settings, launcher=launcher)) as c:
        c.post("/runs", json={**SMALL, "run_id": "k", "image": "maddpg:1.2", "learner_resources": pod})
        c.app.state.registry.update("k", status="stopped")
        _checkpoint(tmp_path / "k")
        assert c.post("/runs/k/resume").status_code == 202
    (_, pods), = launcher.resumed
    assert pods.image == "maddpg:1.2" and pods.learner == Resources.model_validate(pod)
    assert pods.explorer == PodOptions().explorer


def test_resume_needs_the_token(tmp_path):
    with TestClient(create_app(ApiSettings(runs_dir=tmp_path, token="s3cret"), launcher=FakeLauncher())) as c:
        assert c.post("/runs/x/resume").status_code == 401


def test_rewards_series_from_the_csv(client, settings):
    client.post("/runs", json={**SMALL, "run_id": "rw"})
    folder = settings.runs_dir / "rw"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "rewards.csv").write_text(
        "episode,env_steps,updates,wall_time_s,length,reward,reward_agent_0\n"
        "1,25,0,0.5,25,-3.5,-3.5\n2,50,1,1.0,25,-2.5,-2.5\n3,75,2,1.")  # the last line is being written
    rewards = client.get("/runs/rw/rewards").json()
    assert rewards == {"episode": [1, 2], "env_steps": [25, 50], "reward": [-3.5, -2.5],
                       "per_agent": {"agent_0": [-3.5, -2.5]}}
    progress = client.get("/runs/rw").json()["progress"]
    assert progress["episodes"] == 2 and progress["updates"] == 1 and progress["mean_reward_last_100"] == -3.0


def test_a_diverged_runs_rewards_are_null_not_a_broken_document(client, settings):
    client.post("/runs", json={**SMALL, "run_id": "nan"})
    folder = settings.runs_dir / "nan"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "rewards.csv").write_text("episode,env_steps,updates,wall_time_s,length,reward,reward_agent_0\n"
                                        "1,25,0,0.5,25,-3.5,-3.5\n2,50,1,1.0,25,nan,inf\n")
    rewards = client.get("/runs/nan/rewards").json()
    assert rewards["reward"] == [-3.5, None] and rewards["per_agent"] == {"agent_0": [-3.5, None]}
    assert client.get("/runs/nan").json()["progress"]["mean_reward_last_100"] is None


def test_a_run_registered_under_looser_bounds_is_still_listed(client, registry):
    registry.add(RunRecord(id="old", status="finished", run_dir="", spec={
        "scenario": "simple_spread", "env_kwargs": {"N": -1, "local_ratio": float("nan")}, "replay_size": 10**15}))
    listed = client.get("/runs")
    assert listed.status_code == 200 and listed.json()["items"][0]["spec"]["replay_size"] == 10**15
    assert client.get("/runs/old").json()["spec"]["env_kwargs"] == {"N": -1, "local_ratio": None}


def test_progress_of_a_long_csv_reads_its_tail(client, settings):
    client.post("/runs", json={**SMALL, "run_id": "long"})
    folder = settings.runs_dir / "long"
    folder.mkdir(parents=True, exist_ok=True)
    rows = [f"{k},{25 * k},{k // 4},{k / 2:.1f},25,{float(k)},{float(k)}" for k in range(1, 20_001)]
    (folder / "rewards.csv").write_text("episode,env_steps,updates,wall_time_s,length,reward,reward_agent_0\n"
                                        + "\n".join(rows) + "\n20001,500025,5000,1.0,25,-1")  # being written
    progress = client.get("/runs/long").json()["progress"]
    assert progress["episodes"] == 20_000 and progress["env_steps"] == 500_000 and progress["updates"] == 5000
    assert progress["mean_reward_last_100"] == sum(range(19_901, 20_001)) / 100
    assert len(client.get("/runs/long/rewards").json()["reward"]) == 20_000
