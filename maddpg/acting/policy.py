"""The actors as numpy functions: a forward pass on a copy of their weights, and their heads.

A forward pass of a 2x64 MLP in numpy costs microseconds where a TensorFlow call costs 150-250 us of
dispatch (DESIGN.md section 7), so acting uses a numpy copy of the actors' weights refreshed after updates.
"""

from __future__ import annotations

import numpy as np

from maddpg.acting import heads as H

# One actor: [(W1, b1), (W2, b2), (W3, b3)], ReLU between layers.
Weights = list[tuple[np.ndarray, np.ndarray]]


def mlp_forward(weights: Weights, x: np.ndarray) -> np.ndarray:
    """The actor MLP in numpy: ReLU hidden layers, linear output."""
    for W, b in weights[:-1]:
        x = np.maximum(x @ W + b, 0.0)
    W, b = weights[-1]
    return x @ W + b


class NumpyPolicy:
    """Every agent's actor and head, on a batch of observations [B, obs_dim_i] per agent.

    Args:
      heads: one `maddpg.acting.heads.Head` per agent.
      weights: one actor's weights per agent (see `Weights`); swapped whole by `set_weights` (thread-safe).
    """

    def __init__(self, heads: list[H.Head], weights: list[Weights]):
        self.heads = heads
        self.weights = weights

    def set_weights(self, weights: list[Weights]) -> None:
        self.weights = weights

    def params(self, obs: list[np.ndarray]) -> list[np.ndarray]:
        """The actors' flat distribution parameters, [B, param_dim_i] per agent."""
        weights = self.weights  # one snapshot for all agents, even if an update swaps them meanwhile
        return [mlp_forward(w, o) for w, o in zip(weights, obs, strict=True)]

    def mode(self, obs: list[np.ndarray]) -> list[np.ndarray]:
        """The distributions' most likely actions [B, action_dim_i] per agent."""
        return [H.mode(h, p) for h, p in zip(self.heads, self.params(obs), strict=True)]

    def sample(self, obs: list[np.ndarray], rng: np.random.Generator,
               noise: list[np.ndarray | None]) -> list[np.ndarray]:
        """Exploratory actions [B, action_dim_i] per agent: the mode plus `noise[i]` (clipped to the action
        space) where an agent has noise, else a sample of its distribution."""
        actions = []
        for head, p, eps in zip(self.heads, self.params(obs), noise, strict=True):
            if eps is None:
                actions.append(H.sample(head, p, rng))
            else:
                actions.append(np.clip(H.mode(head, p) + eps, head.low, head.high).astype(np.float32))
        return actions

    def uniform(self, batch: int, rng: np.random.Generator) -> list[np.ndarray]:
        """Uniformly random actions [B, action_dim_i] per agent (warm-up)."""
        return [H.uniform(h, batch, rng) for h in self.heads]

    def to_env(self, actions: list[np.ndarray]) -> list[np.ndarray]:
        """What the env takes for action vectors: integers for Discrete spaces, clipped floats for Box."""
        return [H.to_env(h, a) for h, a in zip(self.heads, actions, strict=True)]
