import json

import pytest
from pydantic import ValidationError

from maddpg.runspec import RunSpec, format_validation_error


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
])
def test_inconsistent_specs_are_rejected(data, words):
    with pytest.raises(ValidationError) as info:
        RunSpec.model_validate(data)
    assert words in format_validation_error(info.value)


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


def test_learner_pods_take_the_spec_from_the_environment(monkeypatch):
    """Kubernetes pods get their run spec as JSON text in MADDPG_RUN_SPEC; flags still override its fields."""
    from services.cli import UserError, build_parser, spec_from_args

    monkeypatch.setenv("MADDPG_RUN_SPEC", RunSpec(scenario="simple_tag", seed=7).to_json())
    spec = spec_from_args(build_parser().parse_args(["learner", "--seed", "3"]))
    assert (spec.scenario, spec.seed) == ("simple_tag", 3)
    monkeypatch.setenv("MADDPG_RUN_SPEC", "{not json")
    with pytest.raises(UserError, match="MADDPG_RUN_SPEC"):
        spec_from_args(build_parser().parse_args(["learner"]))


def test_a_resumed_run_may_change_how_long_it_runs_but_not_what_it_learns():
    saved = RunSpec(scenario="simple_spread", num_agents=3)
    assert saved.resume_conflicts(saved) == []
    assert RunSpec(scenario="simple_spread", num_agents=3, num_episodes=10, explorers=4).resume_conflicts(saved) == []
    assert RunSpec(scenario="simple_spread", num_agents=3, lr=0.5).resume_conflicts(saved) == ["lr: 0.01 -> 0.5"]
