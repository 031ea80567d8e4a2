"""Admission by memory: the estimate follows the replay buffer's layout, and POST /runs refuses a run that would
not fit with 422 naming the field to lower."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from maddpg.envs.mpe import make_env
from maddpg.runspec import RunSpec
from services.api.admission import FLOAT_BYTES, RUNTIME_BYTES, estimate_memory, memory_problem
from services.api.main import create_app
from services.api.settings import ApiSettings
from tests.unit.api.conftest import FakeLauncher

SMALL = {"scenario": "simple", "explorers": 1, "envs_per_explorer": 2}
GIB = 2**30


def test_the_replay_buffer_estimate_is_its_arrays():
    spec = RunSpec(scenario="simple_spread", num_agents=4, replay_size=50_000)
    agents = make_env(spec, num_envs=1).spec.agents
    floats = sum(2 * a.obs_dim + a.action_size + 2 for a in agents)  # obs, next obs, action, reward, done
    estimate = estimate_memory(spec)
    assert estimate.floats_per_transition == floats and estimate.replay == 50_000 * floats * FLOAT_BYTES
    assert estimate.total == estimate.replay + estimate.update + estimate.networks + RUNTIME_BYTES


def test_a_short_run_fills_only_part_of_its_buffer():
    spec = RunSpec(num_episodes=100, max_episode_len=25, replay_size=1_000_000)
    assert estimate_memory(spec).transitions == 2_500


@pytest.mark.parametrize("fields, field", [
    ({"scenario": "simple_spread", "num_agents": 20}, "replay_size"),  # 1M transitions of 4,940 floats: 18 GiB
    ({"scenario": "simple_spread", "num_agents": 30, "num_units": 4096, "replay_size": 1000}, "num_units"),
    ({"scenario": "simple_spread", "num_agents": 60, "batch_size": 65_536, "replay_size": 1000}, "batch_size"),
])
def test_the_field_named_is_what_holds_the_most(fields, field):
    problem = memory_problem(RunSpec(**fields), 4 * GIB, "MADDPG_API_MAX_RUN_MEMORY")
    assert problem is not None and problem[0] == field and "MADDPG_API_MAX_RUN_MEMORY" in problem[1]


def test_the_most_that_fits_is_given_and_does_fit():
    spec = RunSpec(scenario="simple_spread", num_agents=20)
    field, message = memory_problem(spec, 4 * GIB, "limit")
    most = int(message.rsplit("at most ", 1)[1].replace(",", ""))
    assert memory_problem(spec.model_copy(update={"replay_size": most}), 4 * GIB, "limit") is None
    assert memory_problem(spec.model_copy(update={"replay_size": most + 1}), 4 * GIB, "limit")


@pytest.mark.parametrize("body, field", [
    ({"scenario": "simple_spread", "num_agents": 100, "num_units": 4096, "batch_size": 65_536}, None),
    ({"scenario": "simple_spread", "env_kwargs": {"N": 100}}, "replay_size"),
    ({"replay_size": 100_000_000, "num_episodes": 10_000_000}, "replay_size"),
])
def test_post_runs_refuses_a_run_that_would_not_fit(client, launcher, body, field):
    response = client.post("/runs", json={**SMALL, **body})
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert error["loc"][-1] in ({field} if field else {"replay_size", "batch_size", "num_units"})
    assert "per-run limit of 4.00 GiB (MADDPG_API_MAX_RUN_MEMORY)" in error["msg"]
    assert launcher.started == []


def test_the_limit_is_a_setting_and_the_learner_pods_limit_on_kubernetes(tmp_path):
    spec = {**SMALL, "scenario": "simple_spread"}  # about 1.2 GiB
    settings = ApiSettings(runs_dir=tmp_path / "a", max_run_memory="1Gi")
    with TestClient(create_app(settings, launcher=FakeLauncher())) as c:
        assert "MADDPG_API_MAX_RUN_MEMORY" in c.post("/runs", json=spec).json()["detail"][0]["msg"]
    settings = ApiSettings(runs_dir=tmp_path / "b", launcher="kubernetes", image="maddpg:dev")
    pod = {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}}
    with TestClient(create_app(settings, launcher=FakeLauncher())) as c:
        refused = c.post("/runs", json={**spec, "learner_resources": pod})
        assert refused.status_code == 422 and "learner_resources.limits.memory" in refused.text
        assert c.post("/runs", json=spec).status_code == 201  # the default learner pod has 4Gi


def test_keywords_the_scenario_itself_refuses_are_422_on_env_kwargs(client, monkeypatch):
    import services.api.admission as admission

    def refuse(*args):
        raise ValueError("simple_tag needs at least 2 agents")

    monkeypatch.setattr(admission, "_agents", refuse)
    response = client.post("/runs", json=SMALL)
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", "env_kwargs"]
    assert "needs at least 2 agents" in response.text
