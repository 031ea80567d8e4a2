"""The pooled critic's update (`critic="pooled"`) against a numpy reference written out agent by agent."""

import numpy as np
import pytest

from maddpg.acting import heads as H
from maddpg.acting.policy import mlp_forward
from maddpg.algo.learning import MADDPGLearner
from maddpg.envs.spaces import AgentSpec, EnvSpec

GAMMA, TAU, LR, REG = 0.9, 0.05, 1e-3, 1e-3
# Two agents of one kind and an adversary of another (its own encoder and pool); the adversary is a ddpg agent,
# whose local critic stays its own while its observation and action still enter the others' pools.
AGENTS = (AgentSpec("a0", 3, "box", 2, (2,)), AgentSpec("a1", 3, "box", 2, (2,)),
          AgentSpec("adversary_0", 4, "box", 2, (2,), adversary=True))
POLICIES = ["maddpg", "maddpg", "ddpg"]
B = 16


def _weights(learner):
    """Numpy copies of every network the update reads, before or after it."""
    pooled, target = learner.pooled, learner.target_pooled
    return {"actors": [a.numpy_weights() for a in learner.actors],
            "target_actors": [a.numpy_weights() for a in learner.target_actors],
            "enc": [e.numpy_weights() for e in pooled.encoders],
            "target_enc": [e.numpy_weights() for e in target.encoders],
            "head": {i: h.numpy_weights() for i, h in pooled.heads.items()},
            "target_head": {i: h.numpy_weights() for i, h in target.heads.items()},
            "local": learner.critics[2].numpy_weights(), "target_local": learner.target_critics[2].numpy_weights()}


def _embed(enc, o, a):
    return np.maximum(mlp_forward(enc, np.concatenate([o, a], -1)), 0.0)


def _pool(e):
    """Kind 0 = agents 0 and 1, kind 1 = the adversary; means concatenated in that order."""
    return np.concatenate([(e[0] + e[1]) / 2, e[2]], -1)


def _q(head, e_i, pool):
    return mlp_forward(head, np.concatenate([e_i, pool], -1))[..., 0]


def _critic_losses(w, heads, batch, mine):
    """Every agent's critic loss, from the networks `w` as they were before the update."""
    obs, act, rew, nxt, done = batch
    a_t = [H.mode(h, mlp_forward(tw, o)) for h, tw, o in zip(heads, w["target_actors"], nxt)]  # before the update
    kind = [0, 0, 1]
    e_t = [_embed(w["target_enc"][kind[j]], nxt[j], a_t[j]) for j in range(3)]
    e = [_embed(w["enc"][kind[j]], obs[j], act[j]) for j in range(3)]
    losses = []
    for i in (0, 1):
        y = rew[i] + GAMMA * (1 - done[i]) * _q(w["target_head"][i], mine(e_t[i], i), mine(_pool(e_t), i))
        losses.append(np.mean((_q(w["head"][i], mine(e[i], i), mine(_pool(e), i)) - y) ** 2))
    x_t = np.concatenate([mine(nxt[2], 2), mine(a_t[2], 2)], -1)
    y = rew[2] + GAMMA * (1 - done[2]) * mlp_forward(w["target_local"], x_t)[:, 0]
    q = mlp_forward(w["local"], np.concatenate([mine(obs[2], 2), mine(act[2], 2)], -1))[:, 0]
    return losses + [np.mean((q - y) ** 2)]


@pytest.fixture(scope="module", params=[False, True], ids=["batch_per_agent", "shared_batch"])
def case(request):
    shared = request.param
    heads = [H.make_head(a, "deterministic") for a in AGENTS]  # no sampling noise: an exact reference
    learner = MADDPGLearner(EnvSpec("test", AGENTS), heads, POLICIES, num_units=8, lr=LR, gamma=GAMMA, tau=TAU,
                            grad_norm_clip=0.5, actor_reg=REG, seed=3, shared_batch=shared, critic="pooled")
    rng = np.random.default_rng(0)
    lead = (B,) if shared else (3, B)
    obs = [rng.normal(size=(*lead, a.obs_dim)).astype(np.float32) for a in AGENTS]
    nxt = [rng.normal(size=(*lead, a.obs_dim)).astype(np.float32) for a in AGENTS]
    act = [rng.uniform(size=(*lead, 2)).astype(np.float32) for _ in AGENTS]
    rew = rng.normal(size=(3, B)).astype(np.float32)
    done = (rng.uniform(size=(3, B)) < 0.3).astype(np.float32)
    before = _weights(learner)
    metrics = learner.step(obs, act, rew, nxt, done)
    mine = (lambda x, i: x) if shared else (lambda x, i: x[i])
    return heads, (obs, act, rew, nxt, done), mine, before, _weights(learner), metrics


def test_critic_losses_match_the_reference(case):
    heads, batch, mine, before, _, metrics = case
    np.testing.assert_allclose(metrics["q_loss"], _critic_losses(before, heads, batch, mine), rtol=1e-4)


def test_actors_ascend_the_stepped_pooled_critic_with_their_own_embedding_replaced(case):
    heads, (obs, act, *_), mine, before, after, metrics = case
    e = [_embed(after["enc"][k], mine(obs[j], i), mine(act[j], i)) for i in (0, 1) for j, k in enumerate([0, 0, 1])]
    for i in (0, 1):
        logits = mlp_forward(before["actors"][i], mine(obs[i], i))
        e_pi = e[3 * i:3 * i + 3]
        e_pi[i] = _embed(after["enc"][0], mine(obs[i], i), H.mode(heads[i], logits))
        expected = -_q(after["head"][i], e_pi[i], _pool(e_pi)).mean() + REG * np.mean(logits**2)
        np.testing.assert_allclose(metrics["p_loss"][i], expected, rtol=1e-4)


def test_the_shared_encoder_steps_once_on_the_sum_of_the_agents_losses(case):
    """Adam's first step moves a weight by lr against the sign of its gradient: the encoder of agents 0 and 1
    moves as the gradient of the summed loss says, checked by finite differences of the reference."""
    heads, batch, mine, before, after, _ = case
    W = before["enc"][0][0][0].astype(np.float64)
    moved = after["enc"][0][0][0] - before["enc"][0][0][0]
    assert np.abs(moved).max() <= LR * 1.001  # one Adam step, not one per agent
    eps = 1e-4
    for r, c in list(zip(*np.nonzero(np.abs(moved) > 0.9 * LR)))[:4]:
        def loss(delta):
            w = {**before, "enc": [[(W + delta * (np.arange(W.size).reshape(W.shape) == r * W.shape[1] + c),
                                      before["enc"][0][0][1])], before["enc"][1]]}
            return sum(_critic_losses(w, heads, batch, mine)[:2])
        grad = (loss(eps) - loss(-eps)) / (2 * eps)
        assert np.sign(moved[r, c]) == -np.sign(grad), (r, c, grad)


def test_targets_move_by_polyak_averaging_once_per_update(case):
    *_, before, after, _ = case
    for online, target in (("enc", "target_enc"), ("head", "target_head")):
        for key in (0, 1):  # the two encoders; the heads of agents 0 and 1
            for (w, b), (tw0, tb0), (tw, tb) in zip(after[online][key], before[target][key], after[target][key]):
                np.testing.assert_allclose(tw, (1 - TAU) * tw0 + TAU * w, atol=1e-6)
                np.testing.assert_allclose(tb, (1 - TAU) * tb0 + TAU * b, atol=1e-6)


def test_a_pooled_learner_names_every_variable_once_and_none_of_the_joint_critics():
    heads = [H.make_head(a, "deterministic") for a in AGENTS]
    names = list(MADDPGLearner(EnvSpec("test", AGENTS), heads, POLICIES, num_units=4, critic="pooled").variables())
    assert len(names) == len(set(names))
    assert "critic/encoder1/w0" in names and "a0/critic_head/w1" in names and "adversary_0/critic/w0" in names
    assert not any(name.startswith(("a0/critic/", "a1/critic/")) for name in names)
