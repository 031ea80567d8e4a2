"""Action distributions: numpy (acting) and TensorFlow (learning) twins, spaces, gradients, exploration."""

import numpy as np
import pytest
import tensorflow as tf

from maddpg.algo import distributions as D
from maddpg.acting import heads as H
from maddpg.algo.exploration import GaussianNoise, OrnsteinUhlenbeckNoise
from maddpg.envs.spaces import AgentSpec

DISCRETE = AgentSpec("a", 4, "discrete", 20, (5, 4))
BOX = AgentSpec("b", 4, "box", 5, (5,), 0.0, 1.0)
CASES = [
    (DISCRETE, "soft_categorical"),
    (DISCRETE, "soft_multi_categorical"),
    (BOX, "gaussian"),
    (BOX, "deterministic"),
    (BOX, "bernoulli"),
    (BOX, "soft_categorical"),
]
IDS = [f"{a.action_kind}-{k}" for a, k in CASES]


@pytest.mark.parametrize("agent, kind", CASES, ids=IDS)
def test_samples_have_the_right_shape_and_stay_in_the_space(agent, kind):
    head = H.make_head(agent, kind)
    rng = np.random.default_rng(0)
    params = rng.normal(0, 2, (256, head.param_dim)).astype(np.float32)
    a_np = H.sample(head, params, rng)
    a_tf = D.sample(head, tf.constant(params), tf.random.Generator.from_seed(1)).numpy()
    for a in (a_np, a_tf, H.mode(head, params), D.mode(head, tf.constant(params)).numpy(), H.uniform(head, 256, rng)):
        assert a.shape == (256, head.action_dim)
        assert np.all(a >= 0.0) and np.all(a <= 1.0)
    if head.kind in ("soft_categorical", "soft_multi_categorical"):
        for group in np.split(a_np, np.cumsum(head.groups)[:-1], axis=1):
            np.testing.assert_allclose(group.sum(1), 1.0, rtol=1e-5)
    env = H.to_env(head, a_np)
    if agent.action_kind == "discrete":
        assert env.dtype == np.int64 and env.min() >= 0 and env.max() < agent.action_size
    else:
        assert env.shape == (256, agent.action_size)


@pytest.mark.parametrize("agent, kind", CASES, ids=IDS)
def test_numpy_and_tensorflow_modes_agree(agent, kind):
    head = H.make_head(agent, kind)
    params = np.random.default_rng(1).normal(0, 2, (64, head.param_dim)).astype(np.float32)
    np.testing.assert_allclose(H.mode(head, params), D.mode(head, tf.constant(params)).numpy(), atol=1e-5)


@pytest.mark.parametrize("kind", ["soft_categorical", "soft_multi_categorical"])
def test_gumbel_argmax_samples_the_categorical_distribution(kind):
    # argmax(logits + Gumbel) is an exact categorical sample: frequencies match softmax(logits).
    agent = AgentSpec("a", 1, "discrete", 5, (5,))
    head = H.make_head(agent, kind)
    logits = np.log(np.array([[0.1, 0.2, 0.3, 0.15, 0.25]], np.float32))
    rng = np.random.default_rng(0)
    draws = H.to_env(head, H.sample(head, np.repeat(logits, 40_000, 0), rng))
    freq = np.bincount(draws, minlength=5) / draws.size
    np.testing.assert_allclose(freq, [0.1, 0.2, 0.3, 0.15, 0.25], atol=0.01)
    tf_draws = D.sample(head, tf.constant(np.repeat(logits, 40_000, 0)), tf.random.Generator.from_seed(2))
    tf_freq = np.bincount(tf_draws.numpy().argmax(1), minlength=5) / 40_000
    np.testing.assert_allclose(tf_freq, freq, atol=0.015)


def test_multi_categorical_env_action_matches_mpe2_decoding():
    head = H.make_head(DISCRETE, "soft_multi_categorical")  # groups (5 moves, 4 symbols)
    a = np.zeros((1, 9), np.float32)
    a[0, 3] = 1.0  # move 3
    a[0, 5 + 2] = 1.0  # symbol 2
    assert H.to_env(head, a)[0] == 3 + 5 * 2  # mpe2: a % 5 is the move, a // 5 the symbol


@pytest.mark.parametrize("agent, kind", [c for c in CASES if c[1] != "deterministic"], ids=IDS[:3] + IDS[4:])
def test_gradients_flow_through_samples(agent, kind):
    head = H.make_head(agent, kind)
    params = tf.Variable(np.random.default_rng(2).normal(0, 1, (32, head.param_dim)).astype(np.float32))
    weights = tf.constant(np.random.default_rng(3).normal(0, 1, (head.action_dim,)).astype(np.float32))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(D.sample(head, params, tf.random.Generator.from_seed(4)) * weights)
    grad = tape.gradient(loss, params)
    assert grad is not None and np.abs(grad.numpy()).sum() > 0


def test_deterministic_head_has_gradients_through_its_mode():
    head = H.make_head(BOX, "deterministic")
    params = tf.Variable(np.zeros((4, 5), np.float32))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(D.sample(head, params, tf.random.Generator.from_seed(0)))
    np.testing.assert_allclose(tape.gradient(loss, params).numpy(), 0.25)  # sigmoid'(0)


def test_gaussian_sample_statistics():
    head = H.make_head(AgentSpec("g", 1, "box", 1, (1,), -100.0, 100.0), "gaussian")
    params = np.tile(np.array([[2.0, np.log(0.5)]], np.float32), (50_000, 1))
    a = H.sample(head, params, np.random.default_rng(0))
    assert abs(a.mean() - 2.0) < 0.01 and abs(a.std() - 0.5) < 0.01


def test_ou_process_reverts_to_its_mean():
    rng = np.random.default_rng(0)
    ou = OrnsteinUhlenbeckNoise((2000, 1), sigma=0.2, rng=rng, theta=0.15)
    ou.state[:] = 3.0
    for _ in range(10):
        ou()
    # E[x_t] = 3 (1 - theta)^t; the mean over 2000 processes is close to it.
    assert abs(ou.state.mean() - 3.0 * 0.85**10) < 0.03
    for _ in range(300):
        x = ou()
    # Stationary std: sigma / sqrt(theta (2 - theta)).
    assert abs(x.mean()) < 0.05
    assert abs(x.std() - 0.2 / np.sqrt(0.15 * 1.85)) < 0.03
    ou.reset(np.array([True] + [False] * 1999))
    assert ou.state[0, 0] == 0.0 and ou.state[1, 0] != 0.0


def test_gaussian_noise_statistics():
    noise = GaussianNoise((10_000, 2), 0.3, np.random.default_rng(1))
    x = noise()
    assert abs(x.std() - 0.3) < 0.01 and abs(x.mean()) < 0.01


def test_heads_reject_spaces_they_do_not_fit():
    with pytest.raises(ValueError, match="does not fit"):
        H.make_head(DISCRETE, "gaussian")
    with pytest.raises(ValueError, match="does not fit"):
        H.make_head(BOX, "soft_multi_categorical")
