"""simple, simple_spread, simple_adversary and simple_push for E worlds (envs-last arrays)."""

from __future__ import annotations

import numpy as np

from maddpg.envs.batched.core import WorldLayout, WorldState, agent, coords, landmark, norm2, others
from maddpg.envs.batched.scenarios.base import (BatchedScenario, ObsGroup, check_neighbors, concat, gather,
                                                nearest, pair_dist, point, rel, vectors)


def _all(n: int) -> np.ndarray:
    return np.arange(n)


def _others_rel(p: np.ndarray, table: np.ndarray) -> np.ndarray:
    """[2, A, A-1, E]: every other agent relative to each agent; p [2, A, E]."""
    return rel(p, p)[:, _all(p.shape[1])[:, None], table]


def _goal(pos: np.ndarray, first: int, goal: np.ndarray) -> np.ndarray:
    """[2, E]: the position of landmark `goal[e]` (landmarks start at entity `first`); pos [2, M, E]."""
    return pos[:, first + goal, np.arange(pos.shape[2])]


class Simple(BatchedScenario):
    """simple_v3: one agent, one landmark, reward -|p - l|^2."""

    def __init__(self):
        self.layout = WorldLayout([agent("agent_0", collide=False)], [landmark("landmark 0", collide=False)],
                                  dim_c=0)

    def draw(self, rng):
        return {"pos": rng.uniform(-1, +1, (2, 2))}

    def observe(self, s):
        pos = coords(s.pos)
        return [ObsGroup(_all(1), concat([point(s.vel[:, :1]), vectors(rel(pos[:, 1:], pos[:, :1]))]))]

    def agent_reward(self, s):
        return -np.square(s.pos[:, :1] - s.pos[:, 1:2]).sum(-1)


class Spread(BatchedScenario):
    """simple_spread_v3: N agents cover N landmarks; local collision penalty, global coverage reward."""

    CAPTURE_RADIUS = 0.1

    def __init__(self, N: int = 3, local_ratio: float = 0.5, curriculum: bool = False,
                 terminate_on_success: bool = False, num_agent_neighbors: int | None = None,
                 num_landmark_neighbors: int | None = None):
        if not 0.0 <= local_ratio <= 1.0:
            raise ValueError(f"local_ratio must lie in [0, 1], got {local_ratio}")
        if N < 1:
            raise ValueError(f"N must be >= 1, got {N}")
        self.n = N
        self.local_ratio = local_ratio
        # Stage 0 of mpe2's curriculum (the only one reachable through the adapter): no collision penalty.
        self.penalty = not curriculum
        self.terminate = terminate_on_success
        self.k_agents = check_neighbors("num_agent_neighbors", num_agent_neighbors)
        self.k_landmarks = check_neighbors("num_landmark_neighbors", num_landmark_neighbors)
        self.layout = WorldLayout([agent(f"agent_{i}", size=0.15) for i in range(N)],
                                  [landmark(f"landmark {i}", collide=False) for i in range(N)], dim_c=2)
        self._others = others(N)
        size = self.layout.size[:N]
        self._touch = (size[:, None] + size[None, :])[..., None]  # [N, N, 1]

    def draw(self, rng):
        return {"pos": rng.uniform(-1, +1, (2 * self.n, 2))}

    def observe(self, s):
        n, e = self.n, s.num_envs
        pos = coords(s.pos)
        p = pos[:, :n]
        lm_rel = rel(pos[:, n:], p)  # [2, N, L, E]
        if self.k_landmarks is not None:
            lm_rel = gather(lm_rel, nearest(norm2(lm_rel), self.k_landmarks), self.k_landmarks)
        oth_rel = _others_rel(p, self._others)  # [2, N, N-1, E]
        order = None if self.k_agents is None else nearest(norm2(oth_rel), self.k_agents)
        if order is not None:
            oth_rel = gather(oth_rel, order, self.k_agents)
        slots = oth_rel.shape[2]
        if self.layout.silent.all():  # mpe2's agents here never talk: their messages are zeros
            comm = np.zeros((n, slots * self.layout.dim_c, e))
        else:
            comm_rel = coords(s.comm)[:, self._others]  # [dim_c, N, N-1, E]
            comm = vectors(comm_rel if order is None else gather(comm_rel, order, slots))
        parts = [point(s.vel[:, :n]), point(s.pos[:, :n]), vectors(lm_rel), vectors(oth_rel), comm]
        return [ObsGroup(_all(n), concat(parts))]

    def _landmark_cover(self, s: WorldState) -> np.ndarray:
        pos = coords(s.pos)
        return pair_dist(pos[:, :self.n], pos[:, self.n:]).min(0)  # [L, E] the nearest agent's distance

    def agent_reward(self, s):
        n = self.n
        if not self.penalty:
            return np.zeros((s.num_envs, n))
        p = coords(s.pos)[:, :n]
        hit = pair_dist(p, p) < self._touch  # [N, N, E]
        hit[_all(n), _all(n)] = False
        return -hit.sum(1).T.astype(np.float64)

    def global_reward(self, s):
        return -self._landmark_cover(s).sum(0)

    def terminal(self, s):
        if not self.terminate:
            return super().terminal(s)
        return (self._landmark_cover(s) < self.CAPTURE_RADIUS).all(0)


class Adversary(BatchedScenario):
    """simple_adversary_v3: one adversary and N good agents around N landmarks, one of them the goal."""

    def __init__(self, N: int = 2, num_agent_neighbors: int | None = None,
                 num_landmark_neighbors: int | None = None):
        if N < 1:
            raise ValueError(f"N must be >= 1, got {N}")
        self.n = N
        self.k_agents = check_neighbors("num_agent_neighbors", num_agent_neighbors)
        self.k_landmarks = check_neighbors("num_landmark_neighbors", num_landmark_neighbors)
        agents = [agent("adversary_0", size=0.15, collide=False)]
        agents += [agent(f"agent_{i}", size=0.15, collide=False) for i in range(N)]
        self.layout = WorldLayout(agents, [landmark(f"landmark {i}", size=0.08, collide=False) for i in range(N)],
                                  dim_c=2)
        self._others = others(N + 1)

    def draw(self, rng):
        goal = int(rng.integers(self.n))
        return {"goal": goal, "pos": rng.uniform(-1, +1, (2 * self.n + 1, 2))}

    def observe(self, s):
        a = self.n + 1
        pos = coords(s.pos)
        p = pos[:, :a]
        lm_rel = rel(pos[:, a:], p)
        if self.k_landmarks is not None:
            lm_rel = gather(lm_rel, nearest(norm2(lm_rel), self.k_landmarks), self.k_landmarks)
        oth_rel = _others_rel(p, self._others)
        if self.k_agents is not None:
            oth_rel = gather(oth_rel, nearest(norm2(oth_rel), self.k_agents), self.k_agents)
        goal_rel = _goal(pos, a, s.extra["goal"])[:, None] - p[:, 1:]  # [2, N, E]
        good = concat([goal_rel.transpose(1, 0, 2), vectors(lm_rel[:, 1:]), vectors(oth_rel[:, 1:])])
        adv = concat([vectors(lm_rel[:, :1]), vectors(oth_rel[:, :1])])
        return [ObsGroup(_all(1), adv), ObsGroup(_all(a)[1:], good)]

    def agent_reward(self, s):
        a = self.n + 1
        pos = coords(s.pos)
        d_goal = norm2(_goal(pos, a, s.extra["goal"])[:, None] - pos[:, :a])  # [A, E]
        good = -d_goal[1:].min(0) + d_goal[0]  # nearest good agent vs the adversary
        return np.concatenate([-d_goal[:1], np.repeat(good[None], self.n, axis=0)]).T

    def read_mpe2(self, raw):
        world = raw.world
        return {"goal": world.landmarks.index(world.agents[0].goal_a)}

    def write_mpe2(self, raw, extra):
        world = raw.world
        goal = world.landmarks[int(extra["goal"])]
        for lm in world.landmarks:
            lm.color = np.array([0.15, 0.15, 0.15])
        goal.color = np.array([0.15, 0.65, 0.15])
        for ag in world.agents:
            ag.goal_a = goal


def push_landmark_colors() -> np.ndarray:
    colors = np.full((2, 3), 0.1)
    for i in range(2):
        colors[i, i + 1] += 0.8
    return colors


class Push(BatchedScenario):
    """simple_push_v3: an adversary keeps the agent away from the agent's goal landmark."""

    def __init__(self):
        self.layout = WorldLayout([agent("adversary_0"), agent("agent_0")],
                                  [landmark(f"landmark {i}", collide=False) for i in range(2)], dim_c=2)
        self._lm_colors = push_landmark_colors().reshape(6, 1)

    def draw(self, rng):
        goal = int(rng.integers(2))
        return {"goal": goal, "pos": rng.uniform(-1, +1, (4, 2))}

    @staticmethod
    def _agent_color(goal: np.ndarray) -> np.ndarray:
        color = np.full((goal.shape[0], 3), 0.25)
        color[np.arange(goal.shape[0]), goal + 1] += 0.5
        return color

    def observe(self, s):
        e = s.num_envs
        pos = coords(s.pos)
        p, vel = pos[:, :2], point(s.vel[:, :2])  # vel [2 agents, 2, E]
        lm_rel = vectors(rel(pos[:, 2:], p))  # [2 agents, 4, E]
        other = (p[:, ::-1] - p).transpose(1, 0, 2)  # [2 agents, 2, E] the other agent, relative
        goal_rel = _goal(pos, 2, s.extra["goal"]) - p[:, 1]
        good = np.concatenate([vel[1], goal_rel, self._agent_color(s.extra["goal"]).T, lm_rel[1],
                               np.broadcast_to(self._lm_colors, (6, e)), other[1]])
        adv = np.concatenate([vel[0], lm_rel[0], other[0]])
        return [ObsGroup(_all(1), adv[None]), ObsGroup(_all(2)[1:], good[None])]

    def agent_reward(self, s):
        pos = coords(s.pos)
        d = norm2(_goal(pos, 2, s.extra["goal"])[:, None] - pos[:, :2])  # [2, E]
        return np.stack([d[1] - d[0], -d[1]], axis=1)

    def read_mpe2(self, raw):
        world = raw.world
        return {"goal": world.landmarks.index(world.agents[0].goal_a)}

    def write_mpe2(self, raw, extra):
        world = raw.world
        goal = int(extra["goal"])
        for ag in world.agents:
            ag.goal_a = world.landmarks[goal]
        world.agents[1].color = self._agent_color(np.array([goal]))[0]
