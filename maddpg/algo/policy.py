"""The actors as numpy functions: acting without TensorFlow (explorers, evaluation, the inference server).

A forward pass of a 2x64 MLP in numpy costs microseconds where a TensorFlow call costs 150-250 us of
dispatch (DESIGN.md section 7), so acting uses a numpy copy of the actors' weights refreshed after updates.
"""

from __future__ import annotations

import numpy as np

from maddpg.acting import heads as H
from maddpg.algo.exploration import make_noise

# One actor: [(W1, b1), (W2, b2), (W3, b3)], ReLU between layers.
Weights = list[tuple[np.ndarray, np.ndarray]]


def mlp_forward(weights: Weights, x: np.ndarray) -> np.ndarray:
    """The actor MLP in numpy: ReLU hidden layers, linear output."""
    for W, b in weights[:-1]:
        x = np.maximum(x @ W + b, 0.0)
    W, b = weights[-1]
    return x @ W + b


class NumpyPolicy:
    """Acts for every agent on a batch of observations.

    Args:
      heads: one `maddpg.acting.heads.Head` per agent.
      weights: one actor's weights per agent (see `Weights`).
      rng: numpy generator for sampling and noise.
      exploration: "sample", "ou" or "gaussian" (the run spec's field).
      sigma, theta: noise parameters. num_envs: E, for per-env noise state.
    """

    def __init__(self, heads: list[H.Head], weights: list[Weights], rng: np.random.Generator,
                 exploration: str = "sample", sigma: float = 0.2, theta: float = 0.15, num_envs: int = 1):
        self.heads = heads
        self.weights = weights
        self.rng = rng
        self._noise = [make_noise(exploration, (num_envs, h.action_dim), sigma, theta, rng) for h in heads]

    def set_weights(self, weights: list[Weights]) -> None:
        self.weights = weights

    def params(self, obs: list[np.ndarray]) -> list[np.ndarray]:
        """The actors' flat distribution parameters, [B, param_dim_i] per agent."""
        return [mlp_forward(w, o) for w, o in zip(self.weights, obs, strict=True)]

    def act(self, obs: list[np.ndarray], explore: bool = True,
            noise: list[np.ndarray | None] | None = None) -> list[np.ndarray]:
        """Action vectors [B, action_dim_i] per agent: sampled (plus noise) if `explore`, else the mode.

        Args:
          noise: additive noise [B, action_dim_i] per agent for deterministic heads, drawn by the caller
            (the inference server keeps one process per explorer env); default: this policy's own processes.
        """
        if noise is None:  # draw from our own processes only when the noise is used
            noise = [None if n is None or not explore else n() for n in self._noise]
        actions = []
        for head, p, eps in zip(self.heads, self.params(obs), noise, strict=True):
            if not explore:
                actions.append(H.mode(head, p))
            elif eps is not None:
                a = H.mode(head, p) + eps[: p.shape[0]]
                actions.append(np.clip(a, head.low, head.high).astype(np.float32))
            else:
                actions.append(H.sample(head, p, self.rng))
        return actions

    def reset_noise(self, mask: np.ndarray) -> None:
        """Restarts the noise processes of the envs whose episode just began."""
        for noise in self._noise:
            if noise is not None:
                noise.reset(mask)

    def to_env(self, actions: list[np.ndarray]) -> list[np.ndarray]:
        return [H.to_env(h, a) for h, a in zip(self.heads, actions, strict=True)]

    def uniform(self, batch: int) -> list[np.ndarray]:
        return [H.uniform(h, batch, self.rng) for h in self.heads]
