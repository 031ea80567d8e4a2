"""Policy heads: how an actor's output becomes an action vector and an env action (numpy, no TensorFlow).

A head pairs an action distribution with an agent's action space. The learner's TensorFlow versions of the
same distributions live in `maddpg/algo/distributions.py`; a test checks that both agree. The explorer and `evaluate`
use this module only, so they never import TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from maddpg.envs.spaces import AgentSpec, EnvSpec

KINDS = ("soft_categorical", "soft_multi_categorical", "gaussian", "deterministic", "bernoulli")
_TINY = 1e-10


@dataclass(frozen=True)
class Head:
    """An agent's action distribution.

    Attributes:
      kind: one of KINDS.
      param_dim: size of the actor's output (the distribution's flat parameters).
      action_dim: size of the action vector the critic sees and the replay buffer stores.
      groups: category counts of the (multi-)categorical heads; (action_dim,) otherwise.
      env_kind: "discrete" (the env takes an integer) or "box".
      low, high: Box bounds.
    """

    kind: str
    param_dim: int
    action_dim: int
    groups: tuple[int, ...]
    env_kind: str
    low: float = 0.0
    high: float = 1.0


def make_head(agent: AgentSpec, kind: str) -> Head:
    """Builds the head of `kind` for an agent, or raises ValueError if the action space does not fit."""
    size = agent.action_size
    if agent.action_kind == "discrete":
        if kind == "soft_categorical":
            return Head(kind, size, size, (size,), "discrete")
        if kind == "soft_multi_categorical":
            groups = agent.action_groups
            return Head(kind, sum(groups), sum(groups), groups, "discrete")
        raise ValueError(f"action_dist {kind!r} does not fit {agent.name}'s Discrete({size}) actions")
    box = dict(env_kind="box", low=agent.low, high=agent.high)
    if kind == "gaussian":
        return Head(kind, 2 * size, size, (size,), **box)
    if kind in ("deterministic", "bernoulli", "soft_categorical"):
        # A softmax vector on Box(0, 1)^k is what the original MPE fed its envs.
        return Head(kind, size, size, (size,), **box)
    raise ValueError(f"action_dist {kind!r} does not fit {agent.name}'s Box({size}) actions")


def make_heads(env_spec: EnvSpec, kind: str) -> list[Head]:
    """One head of `kind` per agent (the run spec's resolved action_dist)."""
    return [make_head(agent, kind) for agent in env_spec.agents]


def _softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def _split(head: Head, x: np.ndarray) -> list[np.ndarray]:
    if len(head.groups) == 1:  # the common case; np.split costs ~15 us per call
        return [x]
    return np.split(x, np.cumsum(head.groups)[:-1], axis=-1)


def sample(head: Head, params: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Samples action vectors [B, action_dim] from flat parameters [B, param_dim]."""
    kind = head.kind
    if kind in ("soft_categorical", "soft_multi_categorical"):
        # Gumbel-softmax with temperature 1, as openai/maddpg's SoftCategoricalPd.sample.
        u = rng.uniform(_TINY, 1.0, params.shape)
        noisy = params - np.log(-np.log(u))
        return np.concatenate([_softmax(g) for g in _split(head, noisy)], axis=-1).astype(np.float32)
    if kind == "gaussian":
        mean, logstd = np.split(params, 2, axis=-1)
        a = mean + np.exp(logstd) * rng.standard_normal(mean.shape)
        return np.clip(a, head.low, head.high).astype(np.float32)
    if kind == "bernoulli":
        # Relaxed Bernoulli (binary concrete, temperature 1): logistic noise through a sigmoid.
        u = rng.uniform(_TINY, 1.0 - 1e-7, params.shape)
        return (1.0 / (1.0 + np.exp(-(params + np.log(u) - np.log1p(-u))))).astype(np.float32)
    return mode(head, params)


def mode(head: Head, params: np.ndarray) -> np.ndarray:
    """The distribution's most likely (or deterministic) action vectors [B, action_dim]."""
    kind = head.kind
    if kind in ("soft_categorical", "soft_multi_categorical"):
        return np.concatenate([_softmax(g) for g in _split(head, params)], axis=-1).astype(np.float32)
    if kind == "gaussian":
        return np.clip(np.split(params, 2, axis=-1)[0], head.low, head.high).astype(np.float32)
    if kind == "bernoulli":
        return (params > 0).astype(np.float32)
    # deterministic: squash into the Box so that the actor's gradient never dies at a clip.
    return (head.low + (head.high - head.low) / (1.0 + np.exp(-params))).astype(np.float32)


def uniform(head: Head, batch: int, rng: np.random.Generator) -> np.ndarray:
    """Uniformly random action vectors [B, action_dim] (warm-up exploration)."""
    if head.env_kind == "discrete" or head.kind == "soft_categorical":
        parts = [np.eye(n, dtype=np.float32)[rng.integers(0, n, batch)] for n in head.groups]
        return np.concatenate(parts, axis=-1)
    if head.kind == "bernoulli":
        return rng.integers(0, 2, (batch, head.action_dim)).astype(np.float32)
    return rng.uniform(head.low, head.high, (batch, head.action_dim)).astype(np.float32)


def to_env(head: Head, action: np.ndarray) -> np.ndarray:
    """Turns action vectors into what the env takes: integers for Discrete, clipped floats for Box.

    Discrete: the argmax of each group, combined as mpe2 decodes it (movement + 5 * symbol). With a
    Gumbel-softmax sample this argmax is an exact sample of the categorical distribution.
    """
    if head.env_kind == "box":
        return np.clip(action, head.low, head.high).astype(np.float32)
    parts = _split(head, action)
    env_action = np.zeros(action.shape[0], np.int64)
    scale = 1
    for part, n in zip(parts, head.groups, strict=True):
        env_action += scale * part.argmax(axis=-1)
        scale *= n
    return env_action
