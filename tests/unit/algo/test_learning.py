"""The compiled MADDPG update against a hand-written numpy reference of openai/maddpg's math."""

import numpy as np
import pytest

from maddpg.acting import heads as H
from maddpg.algo.learning import MADDPGLearner
from maddpg.acting.policy import mlp_forward
from maddpg.envs.spaces import AgentSpec, EnvSpec

GAMMA, TAU, LR, REG = 0.9, 0.05, 1e-3, 1e-3


def _np(net):
    return net.numpy_weights()


def _nets(learner, name):
    """The learner's networks of one role in agent order (critics and their targets are keyed by agent)."""
    nets = getattr(learner, name)
    return list(nets.values()) if isinstance(nets, dict) else nets


def _mode(head, params):
    return H.mode(head, params)


@pytest.fixture(scope="module")
def setup():
    agents = (AgentSpec("a0", 3, "box", 2, (2,)), AgentSpec("a1", 4, "box", 2, (2,)))
    env_spec = EnvSpec("test", agents)
    heads = [H.make_head(a, "deterministic") for a in agents]  # no sampling noise: exact reference
    learner = MADDPGLearner(env_spec, heads, ["maddpg", "maddpg"], num_units=8, lr=LR, gamma=GAMMA, tau=TAU,
                            grad_norm_clip=0.5, actor_reg=REG, seed=3)
    rng = np.random.default_rng(0)
    n, b = 2, 16
    obs = [rng.normal(size=(n, b, d)).astype(np.float32) for d in (3, 4)]
    nxt = [rng.normal(size=(n, b, d)).astype(np.float32) for d in (3, 4)]
    act = [rng.uniform(size=(n, b, 2)).astype(np.float32) for _ in range(2)]
    rew = rng.normal(size=(n, b)).astype(np.float32)
    done = (rng.uniform(size=(n, b)) < 0.3).astype(np.float32)
    before = {name: [_np(x) for x in _nets(learner, name)]
              for name in ("actors", "critics", "target_actors", "target_critics")}
    metrics = learner.step(obs, act, rew, nxt, done)
    after = {name: [_np(x) for x in _nets(learner, name)]
             for name in ("actors", "critics", "target_actors", "target_critics")}
    return heads, obs, act, rew, nxt, done, before, after, metrics


def _critic_target(heads, i, target_actors, target_critic, rew, nxt, done):
    o_t = [x[i] for x in nxt]
    a_t = [_mode(h, mlp_forward(w, o)) for h, w, o in zip(heads, target_actors, o_t)]
    q_t = mlp_forward(target_critic, np.concatenate(o_t + a_t, -1))[:, 0]
    return rew[i] + GAMMA * (1 - done[i]) * q_t


def test_critic_loss_matches_the_numpy_reference(setup):
    heads, obs, act, rew, nxt, done, before, after, metrics = setup
    # Agent 0 sees every target actor as it was before the update.
    y0 = _critic_target(heads, 0, before["target_actors"], before["target_critics"][0], rew, nxt, done)
    q0 = mlp_forward(before["critics"][0], np.concatenate([x[0] for x in obs] + [x[0] for x in act], -1))[:, 0]
    np.testing.assert_allclose(metrics["q_loss"][0], np.mean((q0 - y0) ** 2), rtol=1e-4)
    # Agent 1 is updated after agent 0, so it sees agent 0's target actor already moved (the original's order).
    targets = [after["target_actors"][0], before["target_actors"][1]]
    y1 = _critic_target(heads, 1, targets, before["target_critics"][1], rew, nxt, done)
    q1 = mlp_forward(before["critics"][1], np.concatenate([x[1] for x in obs] + [x[1] for x in act], -1))[:, 0]
    np.testing.assert_allclose(metrics["q_loss"][1], np.mean((q1 - y1) ** 2), rtol=1e-4)


def test_actor_loss_uses_the_updated_critic_and_the_regulariser(setup):
    heads, obs, act, rew, nxt, done, before, after, metrics = setup
    o = [x[0] for x in obs]
    logits = mlp_forward(before["actors"][0], o[0])
    a = [_mode(heads[0], logits), act[1][0]]
    q = mlp_forward(after["critics"][0], np.concatenate(o + a, -1))[:, 0]
    np.testing.assert_allclose(metrics["p_loss"][0], -q.mean() + REG * np.mean(logits**2), rtol=1e-4)


def test_soft_target_update(setup):
    *_, before, after, _ = setup
    for online, target in (("actors", "target_actors"), ("critics", "target_critics")):
        for i in range(2):
            for (w_new, b_new), (tw_old, tb_old), (tw, tb) in zip(
                    after[online][i], before[target][i], after[target][i]):
                np.testing.assert_allclose(tw, (1 - TAU) * tw_old + TAU * w_new, atol=1e-6)
                np.testing.assert_allclose(tb, (1 - TAU) * tb_old + TAU * b_new, atol=1e-6)


def test_first_adam_step_moves_each_weight_by_at_most_lr(setup):
    *_, before, after, _ = setup
    for name in ("actors", "critics"):
        for i in range(2):
            for (w0, b0), (w1, b1) in zip(before[name][i], after[name][i]):
                assert np.abs(w1 - w0).max() <= LR * 1.001
                assert np.abs(w1 - w0).max() > 0


def test_targets_start_as_copies_of_the_online_networks():
    agents = (AgentSpec("a0", 3, "discrete", 5, (5,)),)
    learner = MADDPGLearner(EnvSpec("t", agents), [H.make_head(agents[0], "soft_categorical")], ["ddpg"],
                            num_units=4, seed=0)
    for net, target in zip(learner.actors + _nets(learner, "critics"),
                           learner.target_actors + _nets(learner, "target_critics")):
        for (w, b), (tw, tb) in zip(_np(net), _np(target)):
            np.testing.assert_array_equal(w, tw)
    assert len(set(learner.variables())) == len(learner.variables())


def test_warm_up_compiles_without_changing_any_state():
    agents = (AgentSpec("a0", 3, "discrete", 5, (5,)), AgentSpec("a1", 2, "discrete", 5, (5,)))
    heads = [H.make_head(a, "soft_categorical") for a in agents]
    learner = MADDPGLearner(EnvSpec("t", agents), heads, ["maddpg", "maddpg"], num_units=4, seed=0)
    before = {k: v.numpy().copy() for k, v in learner.variables().items()}
    obs = [np.ones((2, 8, d), np.float32) for d in (3, 2)]
    act = [np.ones((2, 8, 5), np.float32)] * 2
    learner.warm_up(obs, act, np.ones((2, 8), np.float32), obs, np.zeros((2, 8), np.float32))
    for name, value in learner.variables().items():
        np.testing.assert_array_equal(value.numpy(), before[name], err_msg=name)
    assert learner._update.experimental_get_tracing_count() == 1


def test_shared_batch_uses_one_batch_and_the_targets_from_before_the_update():
    """`shared_batch`: every agent learns from the same batch, and every agent's target actions come from the
    target actors as they were before the update (N target-actor passes instead of N^2)."""
    agents = (AgentSpec("a0", 3, "box", 2, (2,)), AgentSpec("a1", 4, "box", 2, (2,)))
    heads = [H.make_head(a, "deterministic") for a in agents]
    learner = MADDPGLearner(EnvSpec("test", agents), heads, ["maddpg", "maddpg"], num_units=8, lr=LR, gamma=GAMMA,
                            tau=TAU, grad_norm_clip=0.5, actor_reg=REG, seed=3, shared_batch=True)
    rng = np.random.default_rng(1)
    b = 16
    obs = [rng.normal(size=(b, d)).astype(np.float32) for d in (3, 4)]
    nxt = [rng.normal(size=(b, d)).astype(np.float32) for d in (3, 4)]
    act = [rng.uniform(size=(b, 2)).astype(np.float32) for _ in range(2)]
    rew = rng.normal(size=(2, b)).astype(np.float32)
    done = (rng.uniform(size=(2, b)) < 0.3).astype(np.float32)
    target_actors = [_np(x) for x in learner.target_actors]
    critics, target_critics = ([_np(x) for x in _nets(learner, name)] for name in ("critics", "target_critics"))
    metrics = learner.step(obs, act, rew, nxt, done)
    a_t = [_mode(h, mlp_forward(w, o)) for h, w, o in zip(heads, target_actors, nxt)]
    for i in range(2):
        y = rew[i] + GAMMA * (1 - done[i]) * mlp_forward(target_critics[i], np.concatenate(nxt + a_t, -1))[:, 0]
        q = mlp_forward(critics[i], np.concatenate(obs + act, -1))[:, 0]
        np.testing.assert_allclose(metrics["q_loss"][i], np.mean((q - y) ** 2), rtol=1e-4)
