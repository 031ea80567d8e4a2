"""The training loop stores the right transitions, acts on the right observations and counts rewards right."""

import numpy as np
import pytest

from maddpg import checkpoint
from maddpg.agent import build_agent
from maddpg.envs.mpe import MPEEnv
from maddpg.local import Loop
from maddpg.resume import restore
from maddpg.runspec import RunSpec
from maddpg.trainer import UpdateSchedule, agent_policies


def _run(steps, num_envs=2, **spec_fields):
    """The real agent in the real loop; `agent.seen` holds the observations its actor was asked to act on."""
    spec = RunSpec(scenario="simple_spread", max_episode_len=10, batch_size=8, learning_starts=16,
                   update_every=5, replay_size=1000, num_units=8, **spec_fields)
    env = MPEEnv("simple_spread", num_envs=num_envs, max_cycles=10)
    agent = build_agent(spec, env.spec)
    agent.seen = []
    act = agent.actor.act

    def recording_act(obs, parts, explore=True):
        agent.seen.append([o.copy() for o in obs])
        return act(obs, parts, explore)

    agent.actor.act = recording_act
    loop = Loop(env, agent, seed=spec.seed)
    first_obs = [o.copy() for o in loop.obs]
    results = [loop.step() for _ in range(steps)]
    return agent, first_obs, results


def test_stored_transitions_are_what_the_env_returned():
    agent, first_obs, results = _run(25, num_envs=2)
    rows = agent.trainer.buffer.gather(np.arange(50))  # row = 2 * t + env
    for t, (step, _) in enumerate(results):
        for i in range(3):
            np.testing.assert_array_equal(rows.next_obs[i][2 * t:2 * t + 2], step.next_obs[i])
            np.testing.assert_array_equal(rows.obs[i][2 * t:2 * t + 2], agent.seen[t][i])
        np.testing.assert_array_equal(rows.reward[2 * t:2 * t + 2], step.reward)
    # obs and next_obs are different arrays with different contents (the seed project stored one list twice).
    assert not np.shares_memory(agent.trainer.buffer._obs[0], agent.trainer.buffer._next_obs[0])
    assert not np.allclose(rows.obs[0], rows.next_obs[0])
    # next_obs of step t is obs of step t + 1 inside an episode.
    np.testing.assert_array_equal(rows.next_obs[0][0:2], rows.obs[0][2:4])


def test_first_action_of_an_episode_comes_from_the_reset_observation():
    agent, first_obs, results = _run(12, num_envs=1)
    for i in range(3):
        np.testing.assert_array_equal(agent.seen[0][i], first_obs[i])
    boundary, _ = results[9]  # the 10th step ends the first episode (max_episode_len 10)
    assert boundary.truncated[0]
    for i in range(3):
        np.testing.assert_array_equal(agent.seen[10][i], boundary.obs[i])  # the reset observation
        assert not np.array_equal(agent.seen[10][i], boundary.next_obs[i])  # not the terminal one
    # The stored transition of the last step keeps the terminal observation as next_obs.
    np.testing.assert_array_equal(agent.trainer.buffer.gather(np.array([9])).next_obs[0][0], boundary.next_obs[0][0])


def test_episode_reward_is_the_sum_over_all_steps_and_agents():
    _, _, results = _run(20, num_envs=2)
    episodes = [ep for _, eps in results[:10] for ep in eps]
    assert len(episodes) == 2 and all(ep.length == 10 for ep in episodes)
    rewards = np.stack([step.reward for step, _ in results[:10]])  # [T, E, N]
    for k, ep in enumerate(episodes):
        np.testing.assert_allclose(ep.per_agent, rewards[:, k].sum(0), rtol=1e-6)
        np.testing.assert_allclose(ep.total, rewards[:, k].sum(), rtol=1e-6)


def test_updates_follow_the_original_schedule():
    schedule = UpdateSchedule(every=100, min_size=25_600)
    assert schedule.due(25_599, 25_600, 25_600) == 1  # the counter hits a multiple of 100 once the buffer is full
    assert schedule.due(25_600, 25_601, 25_601) == 0
    assert schedule.due(99, 100, 100) == 0  # buffer not full yet
    assert schedule.due(30_050, 30_306, 1_000_000) == 3  # E envs stepping together cross several multiples
    agent, _, _ = _run(20, num_envs=2)  # 2 env steps per loop step up to 40; buffer full at 16; every 5 steps
    assert agent.updates == 6  # the counter crosses 15, 20, 25, 30, 35 and 40 with a full buffer


def test_adversaries_use_the_adversary_policy():
    env = MPEEnv("simple_tag")
    spec = RunSpec(scenario="simple_tag", adv_policy="ddpg")
    assert agent_policies(spec, env.spec) == ["ddpg", "ddpg", "ddpg", "maddpg"]
    spec = RunSpec(scenario="simple_tag", adv_policy="ddpg", num_adversaries=1)
    assert agent_policies(spec, env.spec) == ["ddpg", "maddpg", "maddpg", "maddpg"]


def test_warmup_acts_uniformly_then_the_policy_takes_over():
    agent, _, _ = _run(3, num_envs=4, warmup_steps=8)
    assert agent.env_steps == 12
    one_hot = agent.trainer.buffer.gather(np.arange(8)).action[0]
    assert set(np.unique(one_hot)) == {0.0, 1.0}  # uniform one-hot actions during warm-up
    soft = agent.trainer.buffer.gather(np.arange(8, 12)).action[0]
    assert not set(np.unique(soft)) <= {0.0, 1.0}  # Gumbel-softmax samples afterwards


def test_a_restored_agent_continues_with_the_same_random_streams():
    agent, _, _ = _run(30, num_envs=2)  # updates ran: weights, targets, optimizer and RNGs all moved
    arrays, counters = agent.state()
    twin, _, _ = _run(1, num_envs=2)
    twin.restore(arrays, counters)
    assert (twin.env_steps, twin.updates) == (agent.env_steps, agent.updates)
    obs = [np.ones((2, 18), np.float32)] * 3
    parts = [("local", np.zeros(2, bool))]
    for a, b in zip(agent.actor.act(obs, parts), twin.actor.act(obs, parts)):
        np.testing.assert_array_equal(a, b)  # same weights and same acting stream
    sampled = [x.trainer.rng.integers(0, 10**6, 8) for x in (agent, twin)]
    np.testing.assert_array_equal(*sampled)  # the same replay sampling stream


def test_a_shared_batch_agent_trains_on_the_same_schedule():
    agent, _, _ = _run(20, num_envs=2, shared_batch=True)
    assert agent.updates == 6
    metrics = agent.trainer.learn_once()
    assert all(np.isfinite(metrics[k]).all() and metrics[k].shape == (3,) for k in ("q_loss", "p_loss", "q"))
    agent.trainer.warm_up()  # compiles the shared-batch shapes


def test_a_pooled_critic_agent_trains_and_its_checkpoint_round_trips(tmp_path):
    agent, _, _ = _run(20, num_envs=2, critic="pooled")
    assert agent.updates == 6
    metrics = agent.trainer.learn_once()
    assert all(np.isfinite(metrics[k]).all() and metrics[k].shape == (3,) for k in ("q_loss", "p_loss", "q"))
    spec = agent.trainer.spec
    where = checkpoint.save(tmp_path / "ckpt", spec, agent.env_spec, *agent.state())
    twin, _, _ = _run(1, num_envs=2, critic="pooled")
    restore(twin, spec, tmp_path / "twin", warm_start=where)
    arrays, _ = agent.state()
    for name, value in twin.state()[0].items():
        np.testing.assert_array_equal(value, arrays[name], err_msg=name)
    joint, _, _ = _run(1, num_envs=2)  # the other critic's learner: refused by name, not by a missing variable
    with pytest.raises(checkpoint.CheckpointError, match="trained with --critic pooled, this run has --critic joint"):
        restore(joint, joint.trainer.spec, tmp_path / "joint", warm_start=where)
