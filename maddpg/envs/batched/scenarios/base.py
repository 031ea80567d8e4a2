"""What every batched scenario provides, and array helpers shared by the scenarios."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, NamedTuple

import numpy as np

from maddpg.envs.batched.core import WorldLayout, WorldState, norm2


class ObsGroup(NamedTuple):
    """Observations of agents that share one observation layout."""

    agents: np.ndarray  # [G] agent indices
    values: np.ndarray  # [G, D, E] float64, envs last (a transposed [E, G, D] view is fine too)


class BatchedScenario(ABC):
    """One mpe2 scenario for E worlds at once.

    Call order (driven by `BatchedMPEEnv`): `draw(rng)` once per env at reset, then each step:
    physics, `post_step`, `rewards`, `terminal`, `observe`.

    Attributes:
      layout: the entities and their static properties.
      local_ratio: mpe2's blend of per-agent and global reward, or None when the scenario has none.
    """

    layout: WorldLayout
    local_ratio: float | None = None

    @abstractmethod
    def draw(self, rng: np.random.Generator) -> dict[str, Any]:
        """Initial state of one env, consuming `rng` exactly as mpe2's `reset_world` does.

        Returns:
          "pos": [M, 2] entity positions, plus this scenario's extra state (one env's rows).
        """

    @abstractmethod
    def observe(self, s: WorldState) -> list[ObsGroup]:
        """Observations of every agent, float64, grouped by layout."""

    @abstractmethod
    def agent_reward(self, s: WorldState) -> np.ndarray:
        """[E, A] float64: mpe2's `scenario.reward` of every agent."""

    def global_reward(self, s: WorldState) -> np.ndarray:
        """[E] float64: mpe2's `scenario.global_reward` (used only when local_ratio is not None)."""
        return np.zeros(s.num_envs)

    def rewards(self, s: WorldState) -> np.ndarray:
        """[E, A] float64 rewards as SimpleEnv blends them."""
        local = self.agent_reward(s)
        if self.local_ratio is None:
            return local
        glob = self.global_reward(s)[:, None]
        return glob * (1 - self.local_ratio) + local * self.local_ratio

    def post_step(self, s: WorldState) -> None:
        """Scenario logic between physics and rewards (collect_treasure's pickups)."""

    def terminal(self, s: WorldState) -> np.ndarray:
        """[E] bool: mpe2's `scenario.is_terminal`, evaluated after `rewards` in the same step."""
        return np.zeros(s.num_envs, bool)

    def read_mpe2(self, raw) -> dict[str, Any]:
        """This scenario's extra state of one mpe2 env (`raw` is the unwrapped SimpleEnv)."""
        return {}

    def write_mpe2(self, raw, extra: dict[str, Any]) -> None:
        """Sets one mpe2 env's scenario state (goals, colours) from one env's extra rows."""


# Helpers for arrays stored coordinates-first and envs last: positions [2, M, E] (see `core.coords`),
# observations [G, D, E]. Inner loops then run over E instead of over 2 coordinates.


def rel(targets: np.ndarray, origins: np.ndarray) -> np.ndarray:
    """[2, O, T, E]: target t relative to origin o (mpe2's `e.state.p_pos - agent.state.p_pos`).

    Args:
      targets: [2, T, E]; origins: [2, O, E].
    """
    return targets[:, None, :, :] - origins[:, :, None, :]


def pair_dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[A, B, E] distances between every a [2, A, E] and every b [2, B, E]."""
    return norm2(rel(b, a))


def point(x: np.ndarray) -> np.ndarray:
    """[E, G, d] (a state array) -> [G, d, E], one observation block per agent."""
    return x.transpose(1, 2, 0)


def vectors(x: np.ndarray) -> np.ndarray:
    """[d, G, K, E] -> [G, K*d, E]: K vectors of size d laid out as mpe2 concatenates them."""
    d, g, k, e = x.shape
    return x.transpose(1, 2, 0, 3).reshape(g, k * d, e)


def concat(parts: list[np.ndarray]) -> np.ndarray:
    """Concatenates [G, k, E] blocks into [G, D, E] (mpe2's `np.concatenate` of an observation)."""
    return np.concatenate(parts, axis=1)


def nearest(d: np.ndarray, n: int | None) -> np.ndarray | None:
    """[G, n, E] indices of the n nearest of d [G, K, E] (mpe2's `nearest_entities`), or None for all."""
    if n is None:
        return None
    return np.argsort(d, axis=1)[:, :n]


def gather(x: np.ndarray, order: np.ndarray, slots: int) -> np.ndarray:
    """Picks x[:, g, order[g, k, e], e] for k < slots, zero-padding the missing slots (partial observability).

    Args:
      x: [d, G, K, E] candidates per observer.
      order: [G, k, E] indices into K, k <= slots.
    Returns:
      [d, G, slots, E].
    """
    d, g, _, e = x.shape
    out = np.zeros((d, g, slots, e))
    out[:, :, :order.shape[1]] = np.take_along_axis(x, order[None], axis=2)
    return out


def bound_penalty(x: np.ndarray) -> np.ndarray:
    """simple_tag's `bound(x)` for |position| x: 0 below 0.9, linear to 1, then exp(2x - 2) capped at 10."""
    with np.errstate(over="ignore"):
        far = np.minimum(np.exp(2 * x - 2), 10)
    return np.where(x < 0.9, 0.0, np.where(x < 1.0, (x - 0.9) * 10, far))


def check_neighbors(name: str, value: int | None) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
        raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
    return value
