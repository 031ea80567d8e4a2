"""Episode bookkeeping over E env copies: returns per agent, summed as openai/maddpg logs them."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Episode(NamedTuple):
    """One finished episode: its total reward (sum over steps and agents), per-agent totals and length."""

    total: float
    per_agent: np.ndarray  # [N]
    length: int


class EpisodeTracker:
    """Accumulates rewards of E concurrent episodes and emits each one when it ends."""

    def __init__(self, num_envs: int, num_agents: int):
        self._returns = np.zeros((num_envs, num_agents), np.float64)
        self._lengths = np.zeros(num_envs, np.int64)

    def add(self, reward: np.ndarray, done: np.ndarray) -> list[Episode]:
        """Adds one step's rewards [E, N]; returns the episodes that `done` [E] ends (they restart at zero)."""
        self._returns += reward
        self._lengths += 1
        finished = []
        for k in np.flatnonzero(done):
            per_agent = self._returns[k].copy()
            finished.append(Episode(float(per_agent.sum()), per_agent, int(self._lengths[k])))
            self._returns[k] = 0.0
            self._lengths[k] = 0
        return finished
