"""Exploration noise for deterministic continuous policies (numpy, no TensorFlow)."""

from __future__ import annotations

import numpy as np


class GaussianNoise:
    """Independent N(0, sigma^2) noise per env and action dimension."""

    def __init__(self, shape: tuple[int, int], sigma: float, rng: np.random.Generator):
        self.shape, self._sigma, self._rng = shape, sigma, rng

    def __call__(self) -> np.ndarray:
        return self._sigma * self._rng.standard_normal(self.shape)

    def reset(self, mask: np.ndarray | None = None) -> None:
        """Gaussian noise has no state."""


class OrnsteinUhlenbeckNoise:
    """Ornstein-Uhlenbeck process x += theta * (mu - x) * dt + sigma * sqrt(dt) * N(0, 1), per env.

    Args:
      shape: [E, action_dim], one process per env copy and dimension.
      sigma: noise scale. theta: mean reversion rate. mu: long-run mean. dt: time step.
    """

    def __init__(self, shape: tuple[int, int], sigma: float, rng: np.random.Generator, theta: float = 0.15,
                 mu: float = 0.0, dt: float = 1.0):
        self._sigma, self._theta, self._mu, self._dt, self._rng = sigma, theta, mu, dt, rng
        self.state = np.full(shape, mu, np.float64)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.state.shape

    def __call__(self) -> np.ndarray:
        drift = self._theta * (self._mu - self.state) * self._dt
        self.state = self.state + drift + self._sigma * np.sqrt(self._dt) * self._rng.standard_normal(self.state.shape)
        return self.state

    def reset(self, mask: np.ndarray | None = None) -> None:
        """Restarts the processes of the envs in `mask` (all if None) at mu, as at an episode start."""
        if mask is None:
            self.state[:] = self._mu
        else:
            self.state[np.asarray(mask, bool)] = self._mu


def make_noise(kind: str, shape: tuple[int, int], sigma: float, theta: float, rng: np.random.Generator):
    """The noise process named by the run spec's `exploration` ("ou" or "gaussian"), or None for "sample"."""
    if kind == "ou":
        return OrnsteinUhlenbeckNoise(shape, sigma, rng, theta=theta)
    if kind == "gaussian":
        return GaussianNoise(shape, sigma, rng)
    return None
