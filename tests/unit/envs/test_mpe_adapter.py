import importlib
import inspect

import numpy as np
import pytest

from maddpg.envs.mpe import MPEEnv
from maddpg.envs.scenarios import SCENARIOS

SCENARIO_NAMES = list(SCENARIOS)


def test_scenario_table_matches_mpe2_signatures():
    for scenario in SCENARIOS.values():
        params = inspect.signature(importlib.import_module(scenario.module).raw_env.__init__).parameters
        own = {k: p.default for k, p in params.items()
               if k not in ("self", "max_cycles", "continuous_actions", "render_mode")}
        assert own == scenario.kwargs, scenario.name
        if scenario.size_kwarg:
            assert scenario.size_kwarg in own


def _random_actions(env, rng):
    out = []
    for agent in env.spec.agents:
        if agent.action_kind == "discrete":
            out.append(rng.integers(0, agent.action_size, env.num_envs))
        else:
            out.append(rng.uniform(agent.low, agent.high, (env.num_envs, agent.action_size)))
    return out


@pytest.mark.parametrize("continuous", [False, True], ids=["discrete", "continuous"])
@pytest.mark.parametrize("name", SCENARIO_NAMES)
def test_every_scenario_resets_and_steps_with_matching_shapes(name, continuous):
    env = MPEEnv(name, num_envs=2, max_cycles=20, continuous_actions=continuous)
    raw = env._envs[0]
    obs = env.reset(seed=3)
    rng = np.random.default_rng(0)
    assert len(obs) == env.spec.num_agents
    for agent, o in zip(env.spec.agents, obs):
        assert o.shape == (2, agent.obs_dim) and o.dtype == np.float32
        assert raw.observation_space(agent.name).shape == (agent.obs_dim,)
        space = raw.action_space(agent.name)
        assert agent.action_size == (space.n if continuous is False else space.shape[0])
    truncations = 0
    for _ in range(50):
        step = env.step(_random_actions(env, rng))
        assert step.reward.shape == (2, env.spec.num_agents) and step.reward.dtype == np.float32
        for agent, o, nxt in zip(env.spec.agents, step.obs, step.next_obs):
            assert o.shape == nxt.shape == (2, agent.obs_dim)
        truncations += int(step.truncated.sum())
    assert truncations == 2 * 2  # 50 steps = two 20-step episodes in each of the 2 copies
    env.close()


def test_auto_reset_keeps_the_terminal_observation_and_starts_a_new_episode():
    env = MPEEnv("simple", num_envs=1, max_cycles=3)
    env.reset(seed=0)
    step = None
    for _ in range(3):
        step = env.step([np.array([0])])
    assert step.truncated[0]
    assert not np.array_equal(step.next_obs[0], step.obs[0])  # obs is the new episode's first observation
    reference = MPEEnv("simple", num_envs=1, max_cycles=3)
    first = reference.reset(seed=0)
    for _ in range(3):
        last = reference.step([np.array([0])])
    np.testing.assert_array_equal(last.next_obs[0], step.next_obs[0])
    assert not np.array_equal(first[0], step.obs[0])


def test_same_seed_same_states():
    a, b = MPEEnv("simple_spread", num_envs=2), MPEEnv("simple_spread", num_envs=2)
    for x, y in zip(a.reset(seed=7), b.reset(seed=7)):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.reset(seed=8)[0][0], a.reset(seed=8)[0][1])  # copies get different seeds
