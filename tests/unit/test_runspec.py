import json
import math

import pytest
from pydantic import ValidationError

from maddpg.envs.scenarios import SCENARIOS
from maddpg.runspec import ENV_KWARG_RANGES, RunSpec, format_validation_error


def test_defaults_are_the_original_train_py_flags():
    spec = RunSpec()
    assert (spec.scenario, spec.max_episode_len, spec.num_episodes, spec.good_policy, spec.adv_policy) == (
        "simple", 25, 60_000, "maddpg", "maddpg")
    assert (spec.lr, spec.gamma, spec.batch_size, spec.num_units, spec.save_rate) == (1e-2, 0.95, 1024, 64, 1000)
    assert (spec.tau, spec.grad_norm_clip, spec.actor_reg, spec.replay_size, spec.update_every) == (
        0.01, 0.5, 1e-3, 1_000_000, 100)
    assert spec.min_replay == 1024 * 25
    assert spec.resolved_action_dist == "soft_categorical"


@pytest.mark.parametrize("data, field", [
    ({"scenario": "nope"}, "scenario"),
    ({"batch_size": -1}, "batch_size"),
    ({"lr": 0}, "lr"),
    ({"gamma": 1.5}, "gamma"),
    ({"good_policy": "ppo"}, "good_policy"),
    ({"bogus": 1}, "bogus"),
])
def test_bad_fields_are_named(data, field):
    with pytest.raises(ValidationError) as info:
        RunSpec.model_validate(data)
    assert format_validation_error(info.value).startswith(f"{field}:")


@pytest.mark.parametrize("data, words", [
    ({"scenario": "simple_tag", "num_agents": 4}, "fixed number of agents"),
    ({"scenario": "simple_spread", "env_kwargs": {"num_good": 2}}, "no keyword 'num_good'"),
    ({"exploration": "ou"}, "needs continuous actions"),
    ({"exploration": "ou", "continuous_actions": True, "action_dist": "gaussian"}, "deterministic"),
    ({"action_dist": "gaussian"}, "needs continuous actions"),
    ({"learning_starts": 10, "replay_size": 5}, "learning_starts"),
    ({"scenario": "simple_spread", "env_kwargs": {"N": 1.5}}, "N is a count, an integer"),
    ({"scenario": "simple_spread", "env_kwargs": {"N": -1}}, "N must lie in [1, 100]"),
    ({"scenario": "simple_spread", "env_kwargs": {"N": 100_000}}, "N must lie in [1, 100]"),
    ({"scenario": "simple_spread", "env_kwargs": {"N": True}}, "N is no boolean"),
    ({"scenario": "simple_spread", "env_kwargs": {"curriculum": 1}}, "curriculum is a boolean"),
    ({"scenario": "simple_spread", "env_kwargs": {"local_ratio": 1.5}}, "local_ratio must lie in [0.0, 1.0]"),
    ({"scenario": "simple_spread", "env_kwargs": {"num_agent_neighbors": 0}}, "num_agent_neighbors must lie in"),
    ({"scenario": "simple_tag", "env_kwargs": {"num_good": 60, "num_adversaries": 50}}, "110 agents in all"),
    ({"scenario": "collect_treasure", "env_kwargs": {"num_collectors": 99}}, "101 agents in all"),
    ({"scenario": "collect_treasure", "env_kwargs": {"num_deposits": 7}}, "num_deposits must lie in [1, 6]"),
])
def test_inconsistent_specs_are_rejected(data, words):
    with pytest.raises(ValidationError) as info:
        RunSpec.model_validate(data)
    assert words in format_validation_error(info.value)


@pytest.mark.parametrize("field, value", [
    ("lr", math.inf), ("gamma", math.nan), ("exploration_sigma", -math.inf), ("grad_norm_clip", math.inf),
    ("actor_reg", math.nan), ("ou_theta", math.inf),
])
def test_non_finite_numbers_are_rejected_naming_the_field(field, value):
    with pytest.raises(ValidationError) as info:
        RunSpec.model_validate({field: value})
    assert format_validation_error(info.value) == f"{field}: Input should be a finite number"


def test_a_non_finite_env_kwarg_is_rejected_naming_it():
    with pytest.raises(ValidationError) as info:
        RunSpec.model_validate({"scenario": "simple_spread", "env_kwargs": {"local_ratio": math.nan}})
    assert "env_kwargs.local_ratio" in format_validation_error(info.value)


@pytest.mark.parametrize("field, value", [
    ("replay_size", 10**15), ("batch_size", 1_000_000), ("num_units", 4097), ("num_episodes", 10**10),
    ("seed", 2**31), ("save_rate", 10**10), ("update_every", 10**7), ("learning_starts", 10**9),
    ("num_adversaries", 101), ("keep_checkpoints", 1001), ("warmup_steps", 10**10),
    ("exp_name", "x" * 129), ("exp_name", "../etc"), ("exp_name", "a\nb"),
    ("scenario", "s" * 65),
])
def test_sizes_and_strings_have_documented_bounds(field, value):
    with pytest.raises(ValidationError) as info:
        RunSpec.model_validate({field: value})
    assert format_validation_error(info.value).startswith(f"{field}:")
    schema = RunSpec.model_json_schema()["properties"][field]
    bounds = schema if "type" in schema else schema["anyOf"][0]
    assert {"maximum", "maxLength", "pattern"} & set(bounds), (field, schema)  # documented in the OpenAPI


def test_every_numeric_scenario_keyword_has_a_range_and_its_default_passes():
    for scenario in SCENARIOS.values():
        numeric = {k: v for k, v in scenario.kwargs.items() if not isinstance(v, bool)}
        assert set(numeric) <= set(ENV_KWARG_RANGES), scenario.name
        defaults = {k: v for k, v in scenario.kwargs.items() if v is not None}
        assert RunSpec(scenario=scenario.name, env_kwargs=defaults).env_kwargs == defaults
    assert RunSpec(exp_name="spread N3 v1.2_b-c").exp_name == "spread N3 v1.2_b-c"


def test_num_agents_maps_to_the_scenario_keyword_and_round_trips(tmp_path):
    spec = RunSpec(scenario="simple_spread", num_agents=5, env_kwargs={"local_ratio": 0.2})
    assert spec.scenario_kwargs() == {"N": 5, "local_ratio": 0.2}
    spec.save(tmp_path / "spec.json")
    assert RunSpec.load(tmp_path / "spec.json") == spec
    assert json.loads((tmp_path / "spec.json").read_text())["num_agents"] == 5


def test_exploration_noise_resolves_to_a_deterministic_actor():
    spec = RunSpec(continuous_actions=True, exploration="ou")
    assert spec.resolved_action_dist == "deterministic"
    assert RunSpec(continuous_actions=True).resolved_action_dist == "gaussian"


def test_a_resumed_run_may_change_how_long_it_runs_but_not_what_it_learns():
    saved = RunSpec(scenario="simple_spread", num_agents=3)
    assert saved.resume_conflicts(saved) == []
    assert RunSpec(scenario="simple_spread", num_agents=3, num_episodes=10, explorers=4).resume_conflicts(saved) == []
    assert RunSpec(scenario="simple_spread", num_agents=3, lr=0.5).resume_conflicts(saved) == ["lr: 0.01 -> 0.5"]


def test_a_stored_spec_with_retired_mode_fields_still_loads_but_a_new_one_is_refused(tmp_path):
    """restore, benchmark, benchmark_iters and display left the run spec for flags: run folders and registries
    that stored them still load (the fields dropped); a spec given with them now is refused, naming the field."""
    old = {**RunSpec(scenario="simple_spread").model_dump(mode="json"), "restore": "/runs/a", "benchmark": False,
           "benchmark_iters": 100_000, "display": False}
    (tmp_path / "spec.json").write_text(json.dumps(old))
    assert RunSpec.load(tmp_path / "spec.json") == RunSpec(scenario="simple_spread")
    assert RunSpec.from_stored(json.dumps(old)) == RunSpec(scenario="simple_spread")
    with pytest.raises(ValidationError) as info:
        RunSpec.model_validate(old)
    assert format_validation_error(info.value).startswith("restore: Extra inputs are not permitted")
