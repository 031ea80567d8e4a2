"""collect_treasure for E worlds: collectors pick up treasures and bring them to deposits of their type."""

from __future__ import annotations

import numpy as np

from maddpg.envs.batched.core import WorldLayout, WorldState, agent, landmark, norm, others
from maddpg.envs.batched.scenarios.base import BatchedScenario
from maddpg.envs.batched.scenarios.envfirst import concat, dist, flat, group, rel

_BOUND = 0.95  # treasures appear in [-0.95, 0.95]^2
_GONE = -999.0  # where mpe2 parks a treasure that was picked up
_MAX_TYPES = 6  # mpe2's colour palette


class CollectTreasure(BatchedScenario):
    """collect_treasure_v1.

    Extra state: `holding` [E, C] treasure type per collector (-1: none), `ttype` [E, T] and `alive` [E, T]
    per treasure, and what respawns need: mpe2 respawns treasures from a copy of the env's generator
    taken at reset (`world.np_random`). Its draws per respawn are fixed (uniform(), a position, a type),
    so we draw respawns ahead per env into `rs_buf` [E, B, 3] (x, y, type) and consume them in treasure
    order, which keeps the per-step work free of loops over envs (refills loop over the envs that run out).
    """

    def __init__(self, num_collectors: int = 6, num_deposits: int = 2, num_treasures: int = 6):
        if num_collectors < 1 or num_deposits < 1 or num_treasures < 1:
            raise ValueError("num_collectors, num_deposits and num_treasures must be >= 1")
        if num_deposits > _MAX_TYPES:
            raise ValueError(f"num_deposits: at most {_MAX_TYPES} deposit types are supported, got {num_deposits}")
        self.c, self.d, self.t = num_collectors, num_deposits, num_treasures
        agents = [agent(f"collector_{i}", size=0.05, collide=False, accel=1.5, max_speed=1.0)
                  for i in range(num_collectors)]
        agents += [agent(f"deposit_{i}", size=0.075, collide=False, accel=1.5, max_speed=1.0, mass=2.25)
                   for i in range(num_deposits)]
        self.layout = WorldLayout(agents, [landmark(f"treasure_{i}", size=0.025, collide=False)
                                           for i in range(num_treasures)], dim_c=2)
        self._a = num_collectors + num_deposits
        self._others = others(self._a)
        self._buf = 2 * num_treasures  # at most T respawns per step

    def draw(self, rng):
        world_rng = rng.bit_generator.state  # mpe2 deep-copies the generator before using it
        agents = rng.uniform(-1.0, 1.0, (self._a, 2))
        ttype, tpos = np.zeros(self.t, np.int64), np.zeros((self.t, 2))
        for i in range(self.t):  # type and position interleave in mpe2's draws
            ttype[i] = int(rng.integers(0, self.d))
            tpos[i] = rng.uniform(-_BOUND, _BOUND, 2)
        return {"pos": np.concatenate([agents, tpos]), "holding": np.full(self.c, -1), "ttype": ttype,
                "alive": np.ones(self.t, bool), "world_rng": world_rng, "rs_buf": np.zeros((self._buf, 3)),
                "rs_len": 0, "rs_pos": 0, "bonus": 0.0}

    # --- pickups, deliveries, respawns (mpe2's post_step) ---

    def post_step(self, s):
        x, a = s.extra, self._a
        dead = ~x["alive"]
        near = dist(s.pos[:, a:], s.pos[:, :self.c]) < 0.025 + 0.05  # [E, T, C]
        free = x["holding"] < 0
        picked = np.zeros(s.num_envs)
        for t in range(self.t):  # treasures in order: a collector takes at most one per step
            cand = x["alive"][:, t, None] & free & near[:, t]
            env = np.flatnonzero(cand.any(1))
            col = cand[env].argmax(1)
            x["holding"][env, col] = x["ttype"][env, t]
            free[env, col] = False
            x["alive"][env, t] = False
            s.pos[env, a + t] = _GONE
            picked[env] += 1
        if dead.any():
            self._respawn(s, dead)
        holding = x["holding"]
        deposit = s.pos[np.arange(s.num_envs)[:, None], self.c + np.maximum(holding, 0)]  # [E, C, 2] held type's
        delivered = (holding >= 0) & (norm(s.pos[:, :self.c] - deposit) < 0.05 + 0.075)
        holding[delivered] = -1
        x["bonus"] = 5.0 * picked + 5.0 * delivered.sum(1)

    def _respawn(self, s: WorldState, dead: np.ndarray) -> None:
        x = s.extra
        need = dead.sum(1)
        for k in np.flatnonzero(need > x["rs_len"] - x["rs_pos"]):
            self._refill(x, k)
        slot = x["rs_pos"][:, None] + np.cumsum(dead, 1) - 1  # [E, T] each dead treasure's event
        events = np.take_along_axis(x["rs_buf"], np.clip(slot, 0, self._buf - 1)[..., None], axis=1)
        env, t = np.nonzero(dead)
        s.pos[env, self._a + t] = events[env, t, :2]
        x["ttype"][env, t] = events[env, t, 2].astype(np.int64)
        x["alive"][env, t] = True
        x["rs_pos"] += need

    def _refill(self, x: dict, k: int) -> None:
        rng = x["world_rng"][k]
        if isinstance(rng, dict):
            bits = np.random.PCG64()
            bits.state = rng
            rng = x["world_rng"][k] = np.random.Generator(bits)
        left = x["rs_buf"][k, x["rs_pos"][k]:x["rs_len"][k]].copy()
        rows = [left]
        for _ in range(self._buf - len(left)):
            rng.uniform()  # mpe2's respawn_prob test (always passes at 1.0)
            xy = rng.uniform(-_BOUND, _BOUND, 2)
            rows.append(np.array([[xy[0], xy[1], int(rng.integers(0, self.d))]]))
        x["rs_buf"][k] = np.concatenate(rows)
        x["rs_len"][k], x["rs_pos"][k] = self._buf, 0

    # --- rewards ---

    def agent_reward(self, s):
        x, c, a = s.extra, self.c, self._a
        pc, holding = s.pos[:, :c], x["holding"]
        bump = dist(pc, pc) < 0.05 + 0.05
        bump[:, np.arange(c), np.arange(c)] = False
        rew_c = -5.0 * bump.sum(-1)
        d_t = np.where(x["alive"][:, None], dist(pc, s.pos[:, a:]), np.inf).min(-1)  # [E, C]
        d_dep = norm(s.pos[np.arange(s.num_envs)[:, None], c + np.maximum(holding, 0)] - pc)
        shaping = np.where(holding < 0, d_t, d_dep)
        rew_c = np.where(np.isfinite(shaping), rew_c - 0.1 * shaping, rew_c) + x["bonus"][:, None]
        pd = s.pos[:, c:a]  # [E, D, 2]
        carriers = holding[:, None, :] == np.arange(self.d)[None, :, None]  # [E, D, C]
        d_car = np.where(carriers, dist(pd, pc), np.inf).min(-1)
        centroid = pc.mean(1)
        d_mid = norm(centroid[:, None] - pd)
        rew_d = (0.0 - 0.1 * np.where(carriers.any(-1), d_car, d_mid)) + x["bonus"][:, None]
        return np.concatenate([rew_c, rew_d], axis=1)

    # --- observations ---

    def observe(self, s):
        x, a, c, d = s.extra, self._a, self.c, self.d
        p, vel = s.pos[:, :a], s.vel[:, :a]
        types = np.arange(d)
        held = (x["holding"][..., None] == types).astype(np.float64)  # [E, C, D]
        deposit_enc = np.broadcast_to(np.eye(d), (s.num_envs, d, d))
        enc = np.concatenate([np.concatenate([np.zeros_like(held), held], -1),
                              np.concatenate([deposit_enc, np.zeros_like(deposit_enc)], -1)], axis=1)
        oth_rel = rel(p, p)[:, np.arange(a)[:, None], self._others]  # [E, A, A-1, 2]
        block = np.concatenate([oth_rel, vel[:, self._others], enc[:, self._others]], -1)
        order = np.argsort(norm(oth_rel), axis=-1, kind="stable")  # Python's sorted() is stable too
        oth = np.take_along_axis(block, order[..., None], axis=2)
        t_rel = rel(s.pos[:, a:], p)  # [E, A, T, 2]
        alive = x["alive"][:, None, :, None]
        t_block = np.where(alive, np.concatenate(
            [t_rel, np.broadcast_to((x["ttype"][..., None] == types)[:, None], t_rel.shape[:3] + (d,))], -1), 0.0)
        key = np.where(x["alive"][:, None], norm(t_rel), 1e6)  # dead treasures last
        tre = np.take_along_axis(t_block, np.argsort(key, axis=-1, kind="stable")[..., None], axis=2)
        tail = concat([flat(oth), flat(tre)])
        return [group(np.arange(c), concat([p[:, :c], vel[:, :c], held, tail[:, :c]])),
                group(np.arange(c, a), concat([p[:, c:], vel[:, c:], tail[:, c:]]))]

    # --- mpe2 bridge ---

    def read_mpe2(self, raw):
        world = raw.world
        holding = [-1 if ag.holding is None else int(ag.holding) for ag in world.agents[:self.c]]
        return {"holding": np.array(holding), "ttype": np.array([lm.type for lm in world.landmarks]),
                "alive": np.array([lm.alive for lm in world.landmarks]),
                "world_rng": world.np_random.bit_generator.state, "rs_buf": np.zeros((self._buf, 3)),
                "rs_len": 0, "rs_pos": 0, "bonus": 0.0}

    def write_mpe2(self, raw, extra):
        """Sets holdings, treasure types and colours (not the respawn generator, which we draw ahead)."""
        world = raw.world
        palette = world.treasure_colors
        for ag, h in zip(world.agents[:self.c], extra["holding"], strict=True):
            ag.holding = None if h < 0 else int(h)
            ag.color = np.array([0.85, 0.85, 0.85]) if h < 0 else 0.85 * palette[int(h)]
        for lm, ty, alive in zip(world.landmarks, extra["ttype"], extra["alive"], strict=True):
            lm.type, lm.alive, lm.color = int(ty), bool(alive), palette[int(ty)].copy()
