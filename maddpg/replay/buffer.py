"""A preallocated numpy ring buffer of joint transitions for all agents."""

from __future__ import annotations

import numpy as np

from maddpg.types import Transition


class ReplayBuffer:
    """Holds joint transitions (every agent's obs, action, reward, next obs, done at one env step).

    Rows of all agents share one index, so sampling row i gives an aligned joint transition. Storage is
    allocated once (np.zeros pages are only committed when written); the oldest rows are overwritten.

    Args:
      capacity: number of transitions kept.
      obs_dims: observation size of each agent. act_dims: action vector size of each agent.
    """

    def __init__(self, capacity: int, obs_dims: list[int], act_dims: list[int]):
        self.capacity = capacity
        n = len(obs_dims)
        self._obs = [np.zeros((capacity, d), np.float32) for d in obs_dims]
        self._next_obs = [np.zeros((capacity, d), np.float32) for d in obs_dims]
        self._act = [np.zeros((capacity, d), np.float32) for d in act_dims]
        self._rew = np.zeros((capacity, n), np.float32)
        self._done = np.zeros((capacity, n), np.float32)
        self._next = 0
        self.size = 0
        self.added = 0  # transitions ever added

    def __len__(self) -> int:
        return self.size

    def add(self, t: Transition) -> None:
        """Appends a batch of B transitions (B may exceed what is left before the end: it wraps)."""
        count = t.reward.shape[0]
        if count > self.capacity:  # only the newest `capacity` rows can survive
            t = Transition(*[[x[-self.capacity:] for x in f] if isinstance(f, list) else f[-self.capacity:]
                             for f in t])
            self.added += count - self.capacity
            count = self.capacity
        idx = (self._next + np.arange(count)) % self.capacity
        for dst, src in zip(self._obs, t.obs, strict=True):
            dst[idx] = src
        for dst, src in zip(self._act, t.action, strict=True):
            dst[idx] = src
        for dst, src in zip(self._next_obs, t.next_obs, strict=True):
            dst[idx] = src
        self._rew[idx] = t.reward
        self._done[idx] = t.done
        self._next = (self._next + count) % self.capacity
        self.size = min(self.size + count, self.capacity)
        self.added += count

    def sample_indices(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        """Uniform indices with replacement, as openai/maddpg's make_index."""
        if self.size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        return rng.integers(0, self.size, shape)

    def gather(self, idx: np.ndarray) -> Transition:
        """The transitions at `idx` (any shape S): fields of shape [*S, dim]."""
        return Transition(
            obs=[o[idx] for o in self._obs],
            action=[a[idx] for a in self._act],
            reward=self._rew[idx],
            next_obs=[o[idx] for o in self._next_obs],
            done=self._done[idx],
        )
