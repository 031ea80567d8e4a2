"""The Actor: warm-up counted over every stream, exploration noise kept per stream and env, restarted where an
episode began, and nothing else shared between streams."""

import numpy as np
import pytest

from maddpg.acting.actor import Actor
from maddpg.acting.heads import Head
from maddpg.acting.noise import OrnsteinUhlenbeckNoise
from maddpg.acting.policy import NumpyPolicy

BOX = Head("deterministic", 2, 2, (2,), "box", -1.0, 1.0)
DISCRETE = Head("soft_categorical", 5, 5, (5,), "discrete")


def _weights(rng, obs_dim, out):
    return [(rng.standard_normal((obs_dim, 8)), rng.standard_normal(8)), (rng.standard_normal((8, out)), np.zeros(out))]


def _actor(heads, exploration="ou", warmup_steps=0, seed=0, **kwargs):
    rng = np.random.default_rng(seed)
    policy = NumpyPolicy(heads, [_weights(rng, 3, h.param_dim) for h in heads])
    return Actor(policy, np.random.default_rng(seed + 1), exploration=exploration, sigma=0.3, theta=0.15,
                 warmup_steps=warmup_steps, **kwargs)


def _obs(b, heads):
    return [np.linspace(-1, 1, 3 * b, dtype=np.float32).reshape(b, 3) for _ in heads]


def _fresh(n):
    return np.zeros(n, bool)


def test_warm_up_is_counted_over_every_stream_then_the_policy_acts():
    actor = _actor([DISCRETE], exploration="sample", warmup_steps=6)
    first = actor.act(_obs(4, [DISCRETE]), [("a", _fresh(4))])[0]
    assert set(np.unique(first)) == {0.0, 1.0}  # uniform one-hot
    actor.act(_obs(2, [DISCRETE]), [("b", _fresh(2))])  # 4 + 2 = 6: warm-up is over for everyone
    after = actor.act(_obs(4, [DISCRETE]), [("a", _fresh(4))])[0]
    assert not set(np.unique(after)) <= {0.0, 1.0} and np.allclose(after.sum(1), 1.0)  # Gumbel-softmax samples
    assert actor.steps == 10


def test_greedy_acting_is_the_mode_and_counts_nothing():
    actor = _actor([BOX], warmup_steps=100)
    obs = _obs(3, [BOX])
    np.testing.assert_array_equal(actor.act(obs, [("e", _fresh(3))], explore=False)[0], actor.policy.mode(obs)[0])
    assert actor.steps == 0


def _reference_noise(seed_rng, envs, steps, new_episode_at):
    """OU noise of one stream drawn alone, restarting env k where new_episode_at[t][k]."""
    process = OrnsteinUhlenbeckNoise((envs, 2), 0.3, seed_rng, theta=0.15)
    out = []
    for t in range(steps):
        process.reset(new_episode_at[t])
        out.append(process().copy())
    return out


def test_each_stream_keeps_its_own_noise_and_restarts_only_the_envs_whose_episode_began():
    actor = _actor([BOX])
    obs2 = _obs(2, [BOX])
    mode = actor.policy.mode(obs2)[0]
    flags = [np.array([False, False]), np.array([False, True]), np.array([True, False])]
    got_a = []
    for t in range(3):  # a batch holding stream a's 2 envs, then stream b's 2 envs
        actions = actor.act([np.concatenate([obs2[0], obs2[0]])], [("a", flags[t]), ("b", _fresh(2))])[0]
        got_a.append(actions[:2])
    # Stream a's noise, drawn by the same generator interleaved with b's: rebuild the same draw order.
    rng = np.random.default_rng(1)
    a = OrnsteinUhlenbeckNoise((2, 2), 0.3, rng, theta=0.15)
    b = OrnsteinUhlenbeckNoise((2, 2), 0.3, rng, theta=0.15)
    for t in range(3):
        a.reset(flags[t])
        expected = np.clip(mode + a(), -1, 1)
        b()
        np.testing.assert_allclose(got_a[t], expected, rtol=1e-6)
    assert set(actor._noise) == {"a", "b"}


def test_forget_and_a_new_env_count_start_a_stream_afresh_and_streams_are_bounded():
    actor = _actor([BOX], max_streams=2)
    for name in ("a", "b"):
        actor.act(_obs(2, [BOX]), [(name, _fresh(2))])
    assert np.abs(actor._noise["a"][0].state).sum() > 0
    actor.forget("a")
    assert "a" not in actor._noise
    actor.act(_obs(3, [BOX]), [("b", _fresh(3))])  # b came back with 3 envs: new processes of that size
    assert actor._noise["b"][0].shape == (3, 2)
    actor.act(_obs(1, [BOX]), [("c", _fresh(1))])
    actor.act(_obs(1, [BOX]), [("d", _fresh(1))])
    assert list(actor._noise) == ["c", "d"]  # the least recently served went


@pytest.mark.parametrize("head, exploration", [(BOX, "gaussian"), (BOX, "ou"), (DISCRETE, "sample")])
def test_actions_stay_in_the_action_space(head, exploration):
    actor = _actor([head], exploration=exploration)
    for _ in range(20):
        a = actor.act(_obs(5, [head]), [("e", _fresh(5))])[0]
        assert a.shape == (5, head.action_dim) and a.dtype == np.float32
        assert (a >= head.low).all() and (a <= head.high).all()
