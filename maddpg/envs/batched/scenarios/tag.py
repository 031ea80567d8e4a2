"""Predator-prey scenarios: simple_tag and simple_world_comm for E worlds."""

from __future__ import annotations

import numpy as np

from maddpg.envs.batched.core import WorldLayout, agent, coords, landmark, norm2, others
from maddpg.envs.batched.scenarios.base import (BatchedScenario, ObsGroup, bound_penalty, check_neighbors,
                                                concat, gather, nearest, pair_dist, point, rel, vectors)


def _touching(pos: np.ndarray, layout: WorldLayout, a: slice, b: slice) -> np.ndarray:
    """[|a|, |b|, E] whether entities a and b overlap (mpe2's `is_collision`: dist < size sum); pos [2, M, E]."""
    size = layout.size
    return pair_dist(pos[:, a], pos[:, b]) < (size[a][:, None] + size[b][None, :])[..., None]


def _others_rel(p: np.ndarray, table: np.ndarray) -> np.ndarray:
    return rel(p, p)[:, np.arange(p.shape[1])[:, None], table]  # [2, A, A-1, E]


class Tag(BatchedScenario):
    """simple_tag_v3: slower, bigger adversaries chase faster good agents around obstacles."""

    _PREY_MAX_SPEED, _PREY_ACCEL = 1.3, 4.0

    def __init__(self, num_good: int = 1, num_adversaries: int = 3, num_obstacles: int = 2,
                 curriculum: bool = False, terminate_on_success: bool = False,
                 num_agent_neighbors: int | None = None, num_landmark_neighbors: int | None = None):
        if num_good < 0 or num_adversaries < 0 or num_good + num_adversaries < 2 or num_obstacles < 0:
            raise ValueError("simple_tag needs num_good, num_adversaries >= 0 with at least 2 agents in all, "
                             "and num_obstacles >= 0")
        self.n_adv, self.n_good = num_adversaries, num_good
        self.terminate = terminate_on_success
        self.k_agents = check_neighbors("num_agent_neighbors", num_agent_neighbors)
        self.k_landmarks = check_neighbors("num_landmark_neighbors", num_landmark_neighbors)
        # Curriculum stage 0 (the only one reachable through the adapter): prey at half speed and accel.
        factor = 0.5 if curriculum else 1.0
        agents = [agent(f"adversary_{i}", size=0.075, accel=3.0, max_speed=1.0) for i in range(num_adversaries)]
        agents += [agent(f"agent_{i}", size=0.05, accel=self._PREY_ACCEL * factor,
                         max_speed=self._PREY_MAX_SPEED * factor) for i in range(num_good)]
        self.layout = WorldLayout(agents, [landmark(f"landmark {i}", size=0.2) for i in range(num_obstacles)],
                                  dim_c=2)
        self._a = num_adversaries + num_good
        self._others = others(self._a)
        self._good_other = (self._others >= num_adversaries).astype(np.float64)[..., None]  # [A, A-1, 1]

    def draw(self, rng):
        agents = rng.uniform(-1, +1, (self._a, 2))
        obstacles = rng.uniform(-0.9, +0.9, (self.layout.num_entities - self._a, 2))
        return {"pos": np.concatenate([agents, obstacles])}

    def observe(self, s):
        a, na = self._a, self.n_adv
        pos = coords(s.pos)
        p = pos[:, :a]
        lm_rel = rel(pos[:, a:], p)  # [2, A, L, E]
        if self.k_landmarks is not None:
            lm_rel = gather(lm_rel, nearest(norm2(lm_rel), self.k_landmarks), self.k_landmarks)
        oth_rel = _others_rel(p, self._others)  # [2, A, A-1, E]
        oth_vel = coords(s.vel)[:, self._others]  # [2, A, A-1, E]
        if self.k_agents is None:
            # Only good agents' velocities are seen; they come last among each agent's others.
            vel_adv, vel_good = oth_vel[:, :na, na - 1:], oth_vel[:, na:, na:]
        else:
            order = nearest(norm2(oth_rel), self.k_agents)
            oth_rel = gather(oth_rel, order, self.k_agents)
            seen_vel = gather(oth_vel * self._good_other, order, self.k_agents)
            vel_adv, vel_good = seen_vel[:, :na], seen_vel[:, na:]
        base = concat([point(s.vel[:, :a]), point(s.pos[:, :a]), vectors(lm_rel), vectors(oth_rel)])
        return [ObsGroup(np.arange(na), concat([base[:na], vectors(vel_adv)])),
                ObsGroup(np.arange(na, a), concat([base[na:], vectors(vel_good)]))]

    def agent_reward(self, s):
        a, na = self._a, self.n_adv
        pos = coords(s.pos)
        caught = _touching(pos, self.layout, slice(0, na), slice(na, a))  # [adv, good, E]
        good = -10.0 * caught.sum(0)  # [good, E]
        x = np.abs(pos[:, na:a])
        good = good - bound_penalty(x[0])
        good = good - bound_penalty(x[1])
        adv = 10.0 * caught.sum((0, 1))
        return np.concatenate([np.repeat(adv[None], na, axis=0), good]).T

    def terminal(self, s):
        if not self.terminate:
            return super().terminal(s)
        caught = _touching(coords(s.pos), self.layout, slice(0, self.n_adv), slice(self.n_adv, self._a))
        return caught.any(0).all(0)


class WorldComm(BatchedScenario):
    """simple_world_comm_v3: tag with food, forests that hide agents, and a leader that talks."""

    def __init__(self, num_good: int = 2, num_adversaries: int = 4, num_obstacles: int = 1, num_food: int = 2,
                 num_forests: int = 2):
        if num_adversaries < 1 or num_good < 1 or num_food < 1 or num_obstacles < 0 or num_forests < 0:
            raise ValueError("simple_world_comm needs num_adversaries, num_good and num_food >= 1 "
                             "(mpe2 takes the leader and the nearest food as given)")
        self.n_adv, self.n_good = num_adversaries, num_good
        self.n_obst, self.n_food, self.n_forest = num_obstacles, num_food, num_forests
        agents = [agent("leadadversary_0", size=0.075, accel=3.0, max_speed=1.0, silent=False)]
        agents += [agent(f"adversary_{i - 1}", size=0.075, accel=3.0, max_speed=1.0)
                   for i in range(1, num_adversaries)]
        agents += [agent(f"agent_{i}", size=0.045, accel=4.0, max_speed=1.3) for i in range(num_good)]
        lms = [landmark(f"landmark {i}", size=0.2) for i in range(num_obstacles)]
        lms += [landmark(f"food {i}", size=0.03, collide=False) for i in range(num_food)]
        lms += [landmark(f"forest {i}", size=0.3, collide=False) for i in range(num_forests)]
        self.layout = WorldLayout(agents, lms, dim_c=4)
        self._a = num_adversaries + num_good
        self._others = others(self._a)
        self._leader = (np.arange(self._a) == 0)[:, None]  # [A, 1]

    def draw(self, rng):
        n_lm = self.n_obst + self.n_food + self.n_forest
        agents = rng.uniform(-1, +1, (self._a, 2))
        # mpe2 places every landmark, then places the food and the forests again.
        rows = rng.uniform(-0.9, +0.9, (n_lm + self.n_food + self.n_forest, 2))
        return {"pos": np.concatenate([agents, rows[:self.n_obst], rows[n_lm:]])}

    def _forests(self, pos: np.ndarray) -> np.ndarray:
        """[A, W, E] whether each agent is inside each forest; pos [2, M, E]."""
        w0 = self._a + self.n_obst + self.n_food
        return _touching(pos, self.layout, slice(0, self._a), slice(w0, self.layout.num_entities))

    def observe(self, s):
        a, na = self._a, self.n_adv
        pos = coords(s.pos)
        p = pos[:, :a]
        inf = self._forests(pos)  # [A, W, E]
        inf_o = inf[self._others]  # [A, A-1, W, E]
        shared = (inf[:, None] & inf_o).any(2)  # [A, A-1, E]
        out = ~inf.any(1)  # [A, E]
        # Others are seen when both stand in one forest, when neither is in any forest, or by the leader.
        seen = shared | (out[:, None] & out[self._others]) | self._leader[..., None]
        oth_rel = np.where(seen, _others_rel(p, self._others), 0.0)  # [2, A, A-1, E]
        oth_vel = np.where(seen, coords(s.vel)[:, self._others], 0.0)
        in_forest = np.where(inf, 1.0, -1.0)  # [A, W, E]
        base = concat([point(s.vel[:, :a]), point(s.pos[:, :a]), vectors(rel(pos[:, a:], p)), vectors(oth_rel)])
        comm = np.broadcast_to(point(s.comm[:, :1]), (na, self.layout.dim_c, s.num_envs))
        adv = concat([base[:na], vectors(oth_vel[:, :na, na - 1:]), in_forest[:na], comm])
        good = concat([base[na:], in_forest[na:], vectors(oth_vel[:, na:, na:])])
        return [ObsGroup(np.arange(na), adv), ObsGroup(np.arange(na, a), good)]

    def agent_reward(self, s):
        a, na = self._a, self.n_adv
        pos = coords(s.pos)
        caught = _touching(pos, self.layout, slice(0, na), slice(na, a))  # [adv, good, E]
        f0 = a + self.n_obst
        food = slice(f0, f0 + self.n_food)
        ate = _touching(pos, self.layout, slice(na, a), food)  # [good, F, E]
        good = -5.0 * caught.sum(0)
        x = np.abs(pos[:, na:a])
        good = good - 2 * bound_penalty(x[0])
        good = good - 2 * bound_penalty(x[1])
        for f in range(self.n_food):  # one food at a time, the order mpe2 adds its rewards in
            good = good + 2.0 * ate[:, f]
        good = good - 0.05 * pair_dist(pos[:, na:a], pos[:, food]).min(1)
        adv = -(0.1 * pair_dist(pos[:, :na], pos[:, na:a]).min(1)) + 5.0 * caught.sum((0, 1))
        return np.concatenate([adv, good]).T
