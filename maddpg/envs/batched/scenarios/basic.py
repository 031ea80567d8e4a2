"""simple, simple_spread, simple_adversary and simple_push for E worlds."""

from __future__ import annotations

import numpy as np

from maddpg.envs.batched.core import WorldLayout, WorldState, agent, landmark, norm, others
from maddpg.envs.batched.scenarios.base import (BatchedScenario, ObsGroup, check_neighbors, concat, dist,
                                                flat, gather, nearest, rel)


def _all(n: int) -> np.ndarray:
    return np.arange(n)


class Simple(BatchedScenario):
    """simple_v3: one agent, one landmark, reward -|p - l|^2."""

    def __init__(self):
        self.layout = WorldLayout([agent("agent_0", collide=False)], [landmark("landmark 0", collide=False)],
                                  dim_c=0)

    def draw(self, rng):
        return {"pos": rng.uniform(-1, +1, (2, 2))}

    def observe(self, s):
        vel, p, lm = s.vel[:, :1], s.pos[:, :1], s.pos[:, 1:]
        return [ObsGroup(_all(1), concat([vel, flat(rel(lm, p))]))]

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

    def draw(self, rng):
        return {"pos": rng.uniform(-1, +1, (2 * self.n, 2))}

    def observe(self, s):
        n = self.n
        p, vel, lm = s.pos[:, :n], s.vel[:, :n], s.pos[:, n:]
        lm_rel = rel(lm, p)  # [E, N, L, 2]
        if self.k_landmarks is not None:
            lm_rel = gather(lm_rel, nearest(norm(lm_rel), self.k_landmarks), self.k_landmarks)
        oth_rel = rel(p, p)[:, _all(n)[:, None], self._others]  # [E, N, N-1, 2]
        comm = s.comm[:, self._others]  # [E, N, N-1, dim_c]
        if self.k_agents is not None:
            order = nearest(norm(oth_rel), self.k_agents)
            oth_rel = gather(oth_rel, order, self.k_agents)
            comm = gather(comm, order, self.k_agents)
        return [ObsGroup(_all(n), concat([vel, p, flat(lm_rel), flat(oth_rel), flat(comm)]))]

    def _landmark_cover(self, s: WorldState) -> np.ndarray:
        n = self.n
        return dist(s.pos[:, n:], s.pos[:, :n]).min(-1)  # [E, L] nearest agent's distance

    def agent_reward(self, s):
        n = self.n
        if not self.penalty:
            return np.zeros((s.num_envs, n))
        p = s.pos[:, :n]
        hit = dist(p, p) < self.layout.size[:n, None] + self.layout.size[None, :n]
        hit[:, _all(n), _all(n)] = False
        return -hit.sum(-1).astype(np.float64)

    def global_reward(self, s):
        return -self._landmark_cover(s).sum(-1)

    def terminal(self, s):
        if not self.terminate:
            return super().terminal(s)
        return (self._landmark_cover(s) < self.CAPTURE_RADIUS).all(-1)


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

    def _goal_pos(self, s: WorldState) -> np.ndarray:
        return s.pos[np.arange(s.num_envs), self.n + 1 + s.extra["goal"]]  # [E, 2]

    def observe(self, s):
        a = self.n + 1
        p, lm = s.pos[:, :a], s.pos[:, a:]
        lm_rel = rel(lm, p)
        if self.k_landmarks is not None:
            lm_rel = gather(lm_rel, nearest(norm(lm_rel), self.k_landmarks), self.k_landmarks)
        oth_rel = rel(p, p)[:, _all(a)[:, None], self._others]
        if self.k_agents is not None:
            oth_rel = gather(oth_rel, nearest(norm(oth_rel), self.k_agents), self.k_agents)
        goal_rel = self._goal_pos(s)[:, None] - p[:, 1:]
        good = concat([goal_rel, flat(lm_rel[:, 1:]), flat(oth_rel[:, 1:])])
        adv = concat([flat(lm_rel[:, :1]), flat(oth_rel[:, :1])])
        return [ObsGroup(_all(1), adv), ObsGroup(_all(a)[1:], good)]

    def agent_reward(self, s):
        a = self.n + 1
        d_goal = norm(self._goal_pos(s)[:, None] - s.pos[:, :a])  # [E, A]
        good = -d_goal[:, 1:].min(-1) + d_goal[:, 0]  # nearest good agent vs the adversary
        return np.concatenate([-d_goal[:, :1], np.repeat(good[:, None], self.n, axis=1)], axis=1)

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
        self._lm_colors = push_landmark_colors()

    def draw(self, rng):
        goal = int(rng.integers(2))
        return {"goal": goal, "pos": rng.uniform(-1, +1, (4, 2))}

    def _agent_color(self, goal: np.ndarray) -> np.ndarray:
        color = np.full((goal.shape[0], 3), 0.25)
        color[np.arange(goal.shape[0]), goal + 1] += 0.5
        return color

    def observe(self, s):
        e = s.num_envs
        p, vel, lm = s.pos[:, :2], s.vel[:, :2], s.pos[:, 2:]
        lm_rel = flat(rel(lm, p))  # [E, 2, 4]
        other = p[:, ::-1] - p  # the other agent, relative
        goal_rel = s.pos[np.arange(e), 2 + s.extra["goal"]] - p[:, 1]
        colors = np.broadcast_to(self._lm_colors.reshape(1, 6), (e, 6))
        good = np.concatenate([vel[:, 1], goal_rel, self._agent_color(s.extra["goal"]), lm_rel[:, 1], colors,
                               other[:, 1]], axis=-1)
        adv = np.concatenate([vel[:, 0], lm_rel[:, 0], other[:, 0]], axis=-1)
        return [ObsGroup(_all(1), adv[:, None]), ObsGroup(_all(2)[1:], good[:, None])]

    def agent_reward(self, s):
        goal = s.pos[np.arange(s.num_envs), 2 + s.extra["goal"]]
        d = norm(goal[:, None] - s.pos[:, :2])  # [E, 2]
        return np.stack([d[:, 1] - d[:, 0], -d[:, 1]], axis=1)

    def read_mpe2(self, raw):
        world = raw.world
        return {"goal": world.landmarks.index(world.agents[0].goal_a)}

    def write_mpe2(self, raw, extra):
        world = raw.world
        goal = int(extra["goal"])
        for ag in world.agents:
            ag.goal_a = world.landmarks[goal]
        world.agents[1].color = self._agent_color(np.array([goal]))[0]
