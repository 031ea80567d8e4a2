"""Shape-forming scenarios, simple_formation and simple_line, with a batched optimal assignment."""

from __future__ import annotations

import itertools

import numpy as np
from scipy.optimize import linear_sum_assignment

from maddpg.envs.batched.core import WorldLayout, WorldState, agent, landmark, norm
from maddpg.envs.batched.scenarios.base import BatchedScenario
from maddpg.envs.batched.scenarios.envfirst import concat, flat, group, rel

_MAX_BRUTE_FORCE = 5  # up to 5! = 120 permutations per env; larger N falls back to scipy per env


def assigned_distances(d: np.ndarray) -> np.ndarray:
    """[E, N] the distances of mpe2's optimal agent-to-slot assignment (scipy's linear_sum_assignment).

    Args:
      d: [E, N, N] distance of agent i to slot j.
    Returns:
      the assigned distance of each agent, in agent order (scipy's `dists[ri, ci]`).
    """
    e, n, _ = d.shape
    if n <= _MAX_BRUTE_FORCE:
        perms = np.array(list(itertools.permutations(range(n))), dtype=np.intp)  # [P, N]
        chosen = d[:, np.arange(n), perms]  # [E, P, N]
        best = chosen.sum(-1).argmin(-1)
        return chosen[np.arange(e), best]
    # Larger N: one scipy call per env (the Hungarian method has no batched numpy form).
    out = np.empty((e, n))
    for k in range(e):
        rows, cols = linear_sum_assignment(d[k])
        out[k] = d[k, rows, cols]
    return out


class _Shape(BatchedScenario):
    """Agents are rewarded (jointly, local_ratio 0) by how well they fill a set of target slots."""

    DIST_THRESHOLD = 0.05
    local_ratio = 0.0

    def __init__(self, n: int, terminate: bool):
        if n < 1:
            raise ValueError(f"N must be >= 1, got {n}")
        self.n, self.terminate = n, terminate
        self._success: np.ndarray | None = None

    def _slots(self, s: WorldState) -> np.ndarray:
        """[E, N, 2] the target positions."""
        raise NotImplementedError

    def observe(self, s):
        n = self.n
        p = s.pos[:, :n]
        return [group(np.arange(n), concat([s.vel[:, :n], p, flat(rel(s.pos[:, n:], p))]))]

    def agent_reward(self, s):
        return np.zeros((s.num_envs, self.n))

    def global_reward(self, s):
        d = norm(s.pos[:, :self.n, None] - self._slots(s)[:, None])  # [E, agent, slot]
        delta = assigned_distances(d)
        self._success = (delta < self.DIST_THRESHOLD).all(-1)
        return -np.mean(np.clip(delta, 0, 2), axis=-1)

    def terminal(self, s):
        if not self.terminate:
            return super().terminal(s)
        assert self._success is not None and len(self._success) == s.num_envs, "rewards come first"
        return self._success


class Formation(_Shape):
    """simple_formation_v1: N agents spread evenly on a circle of radius 0.5 around a landmark."""

    TARGET_RADIUS = 0.5

    def __init__(self, N: int = 4, terminate_on_success: bool = False):
        super().__init__(N, terminate_on_success)
        self.layout = WorldLayout([agent(f"agent_{i}", size=0.05) for i in range(N)],
                                  [landmark("landmark_0", size=0.03, collide=False)], dim_c=0)

    def draw(self, rng):
        agents = rng.uniform(-1, 1, (self.n, 2))
        return {"pos": np.concatenate([agents, rng.uniform(-0.5, 0.5, (1, 2))])}

    def _slots(self, s):
        n = self.n
        lm = s.pos[:, n]  # [E, 2]
        rp = s.pos[:, :n] - lm[:, None]
        angle = np.arctan2(rp[..., 1], rp[..., 0])
        angle = np.where(angle < 0, angle + 2 * np.pi, angle)
        theta = angle.min(-1)[:, None] + np.arange(n) * ((2 * np.pi) / n)  # [E, N]
        return lm[:, None] + self.TARGET_RADIUS * np.stack([np.cos(theta), np.sin(theta)], axis=-1)


class Line(_Shape):
    """simple_line_v1: N agents spread evenly on the segment between two landmarks 1.25 apart."""

    TOTAL_SEP = 1.25
    _STEP = np.radians(5)

    def __init__(self, N: int = 4, terminate_on_success: bool = False):
        super().__init__(N, terminate_on_success)
        self.layout = WorldLayout([agent(f"agent_{i}", size=0.03) for i in range(N)],
                                  [landmark(f"landmark_{i}", size=0.02, collide=False) for i in range(2)], dim_c=0)

    def draw(self, rng):
        agents = rng.uniform(-1, 1, (self.n, 2))
        l0 = rng.uniform(-0.25, 0.25, 2)
        theta = rng.uniform(0, 2 * np.pi)
        direction = np.array([np.cos(theta), np.sin(theta)])
        loc = l0 + self.TOTAL_SEP * direction
        while not (abs(loc[0]) < 1.0 and abs(loc[1]) < 1.0):  # mpe2 turns by 5 degrees until inside
            theta += self._STEP
            direction = np.array([np.cos(theta), np.sin(theta)])
            loc = l0 + self.TOTAL_SEP * direction
        sep = self.TOTAL_SEP / (self.n - 1) if self.n > 1 else 0.0
        slots = np.stack([l0 + i * sep * direction for i in range(self.n)])
        return {"pos": np.concatenate([agents, l0[None], loc[None]]), "slots": slots}

    def _slots(self, s):
        return s.extra["slots"]

    def read_mpe2(self, raw):
        return {"slots": np.stack(raw.scenario._expected_positions)}

    def write_mpe2(self, raw, extra):
        raw.scenario._expected_positions = [np.array(p) for p in extra["slots"]]
