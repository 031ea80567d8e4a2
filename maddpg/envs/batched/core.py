"""World layout, state and physics of E particle worlds stepped together as [E, ...] arrays.

The physics reproduces mpe2's `_mpe_utils/core.py` to the last bit where the order of floating point
operations allows it: the same formulas evaluated in the same order, so that trajectories stay equal
(contacts are stiff, so a rounding difference can grow over an episode).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np

DIM_P = 2  # position dimensions (mpe2's dim_p)
DT = 0.1  # simulation time step
DAMPING = 0.25
CONTACT_FORCE = 1e2
CONTACT_MARGIN = 1e-3
DEFAULT_ACCEL = 5.0  # mpe2's action "sensitivity" when an agent has no accel


@dataclass(frozen=True)
class Body:
    """Static properties of one entity (an agent or a landmark), as mpe2's scenarios set them."""

    name: str
    size: float = 0.05
    movable: bool = False
    collide: bool = True
    mass: float = 1.0
    max_speed: float | None = None
    accel: float | None = None  # agents only
    silent: bool = True  # agents only


def agent(name: str, **props) -> Body:
    """An agent: movable and (unless told otherwise) silent, like mpe2's `Agent()` in our scenarios."""
    return Body(name, **{"movable": True, **props})


def landmark(name: str, **props) -> Body:
    return Body(name, **{"movable": False, **props})


class WorldLayout:
    """The entities of a scenario (agents first, then landmarks, as in mpe2's `world.entities`)."""

    def __init__(self, agents: list[Body], landmarks: list[Body], dim_c: int):
        self.agents = tuple(agents)
        self.landmarks = tuple(landmarks)
        self.bodies = self.agents + self.landmarks
        self.dim_c = dim_c
        self.num_agents = len(agents)
        self.num_entities = len(self.bodies)
        self.size = np.array([b.size for b in self.bodies])  # [M]
        self.movable = np.array([b.movable for b in self.bodies])
        self.collide = np.array([b.collide for b in self.bodies])
        self.mass = np.array([b.mass for b in self.bodies])
        self.max_speed = np.array([np.nan if b.max_speed is None else b.max_speed for b in self.bodies])
        self.accel = np.array([DEFAULT_ACCEL if b.accel is None else b.accel for b in self.agents])  # [A]
        self.silent = np.array([b.silent for b in self.agents])
        if self.movable[self.num_agents:].any():
            raise ValueError("movable landmarks are not supported (no mpe2 scenario has them)")

    @property
    def agent_names(self) -> list[str]:
        return [b.name for b in self.agents]


@dataclass
class WorldState:
    """Everything that changes in E worlds.

    Attributes:
      pos, vel: [E, M, 2] float64 positions and velocities of every entity (agents, then landmarks).
      comm: [E, A, dim_c] float64 communication state of the agents (mpe2's `agent.state.c`).
      steps: [E] int64 steps taken in the current episode.
      extra: scenario arrays with a leading E axis (goal indices, treasure types, ...).
      rngs: one numpy Generator per env, consumed at reset in mpe2's order.
    """

    pos: np.ndarray
    vel: np.ndarray
    comm: np.ndarray
    steps: np.ndarray
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    rngs: list[np.random.Generator] = field(default_factory=list)

    @property
    def num_envs(self) -> int:
        return self.pos.shape[0]

    def copy(self) -> WorldState:
        """A deep copy (generators included), so that the copy evolves independently."""
        return WorldState(self.pos.copy(), self.vel.copy(), self.comm.copy(), self.steps.copy(),
                          {k: _copy_array(v) for k, v in self.extra.items()}, copy.deepcopy(self.rngs))

    def take(self, idx: np.ndarray) -> WorldState:
        """The worlds at `idx` (array copies; generators shared), e.g. to observe only reset envs."""
        return WorldState(self.pos[idx], self.vel[idx], self.comm[idx], self.steps[idx],
                          {k: v[idx] for k, v in self.extra.items()}, [self.rngs[i] for i in idx])


def _copy_array(x: np.ndarray) -> np.ndarray:
    return copy.deepcopy(x) if x.dtype == object else x.copy()


def empty_state(layout: WorldLayout, num_envs: int) -> WorldState:
    e, m = num_envs, layout.num_entities
    return WorldState(np.zeros((e, m, DIM_P)), np.zeros((e, m, DIM_P)),
                      np.zeros((e, layout.num_agents, layout.dim_c)), np.zeros(e, np.int64))


def norm(delta: np.ndarray) -> np.ndarray:
    """Euclidean length over the last axis, as mpe2 writes it: sqrt(sum(square(d)))."""
    return np.sqrt(np.square(delta).sum(-1))


def coords(pos: np.ndarray) -> np.ndarray:
    """[E, M, 2] -> [2, M, E] contiguous: envs last, so that pairwise maths runs long inner loops.

    numpy is slow on broadcasts whose innermost axis has length 2 (one inner loop per point pair);
    with E innermost the same arithmetic runs about 10x faster at E = 256.
    """
    return np.ascontiguousarray(pos.transpose(2, 1, 0))


def norm2(delta: np.ndarray) -> np.ndarray:
    """[2, ...] -> [...]: the length of vectors stored coordinates-first (same rounding as `norm`)."""
    return np.sqrt(delta[0] * delta[0] + delta[1] * delta[1])


def others(n: int) -> np.ndarray:
    """[n, n-1] indices: row i lists every j != i in increasing order (mpe2's `other is not agent` loops)."""
    return np.array([[j for j in range(n) if j != i] for i in range(n)], dtype=np.intp).reshape(n, n - 1)


def penetration(gap: np.ndarray) -> np.ndarray:
    """mpe2's softplus contact depth `logaddexp(0, -gap / k) * k` for [...] gaps (distance minus radii).

    np.logaddexp costs ~16 ns a value; beyond a gap of 40 k, log1p(exp(x)) rounds to exp(x), so only
    near contacts take the exact (and bit-identical) logaddexp, the rest the cheaper exp.
    """
    k = CONTACT_MARGIN
    x = -gap / k
    with np.errstate(over="ignore"):
        depth = np.exp(x)
    near = x > -40.0
    if near.any():
        depth[near] = np.logaddexp(0, x[near])
    return depth * k


class Physics:
    """mpe2's `World.step` for E worlds: action forces, soft contact forces, damped Euler integration."""

    def __init__(self, layout: WorldLayout):
        self._num_agents = a = layout.num_agents
        self._movable = np.flatnonzero(layout.movable)  # all agents (checked by WorldLayout)
        self._all_agents_move = np.array_equal(self._movable, np.arange(a))
        self._mass = layout.mass[self._movable]  # divided by, as mpe2 does (not times 1/m)
        speed = layout.max_speed[self._movable]
        self._clamp = np.flatnonzero(~np.isnan(speed))
        self._max_speed = speed[self._clamp]
        colliders = np.flatnonzero(layout.collide)
        iu, ju = np.triu_indices(len(colliders), 1)
        # Pairs of immovable colliders exert forces on nothing that moves: skip them.
        keep = layout.movable[colliders[iu]] | layout.movable[colliders[ju]]
        self._colliders, self._ia, self._ib = colliders, iu[keep], ju[keep]
        self._dmin = layout.size[colliders[self._ia]] + layout.size[colliders[self._ib]]
        # Rows of the colliders that move, and where their agents sit among the movable entities.
        self._moving_rows = np.flatnonzero(layout.movable[colliders])
        self._moving_slots = np.searchsorted(self._movable, colliders[self._moving_rows])

    def step(self, state: WorldState, u: np.ndarray) -> None:
        """Advances every world by dt in place.

        Args:
          state: the worlds.
          u: [E, A, 2] action forces of the agents (already scaled by accel).
        """
        force = u if self._all_agents_move else u[:, self._movable]  # [E, Mv, 2]
        if len(self._ia):
            force = self._add_contacts(state.pos, force)
        mv = slice(0, self._num_agents) if self._all_agents_move else self._movable
        pos, vel = state.pos[:, mv], state.vel[:, mv]
        pos += vel * DT  # mpe2 moves with the old velocity first (PettingZoo #962)
        vel = vel * (1 - DAMPING)
        vel += (force / self._mass[:, None]) * DT
        if len(self._clamp):
            vel = self._clamp_speed(vel)
        state.pos[:, mv] = pos
        state.vel[:, mv] = vel

    def _add_contacts(self, pos: np.ndarray, force: np.ndarray) -> np.ndarray:
        p = coords(pos)[:, self._colliders]  # [2, K, E]
        delta = p[:, self._ia] - p[:, self._ib]  # [2, P, E] from b to a
        dist = norm2(delta)
        pen = penetration(dist - self._dmin[:, None])
        f = (CONTACT_FORCE * delta) / dist * pen  # [2, P, E] force on a; -f on b
        kc = p.shape[1]
        pair_force = np.zeros((DIM_P, kc, kc, p.shape[2]))
        pair_force[:, self._ia, self._ib] = f
        pair_force[:, self._ib, self._ia] = -f
        # mpe2 adds the contact forces one partner at a time, in entity order, to the action force;
        # a loop over partners keeps that rounding (np.sum may sum pairwise).
        total = np.zeros((DIM_P, kc, p.shape[2]))
        total[:, self._moving_rows] = force[:, self._moving_slots].transpose(2, 1, 0)
        for j in range(kc):
            total += pair_force[:, :, j]
        force = force.copy()
        force[:, self._moving_slots] = total[:, self._moving_rows].transpose(2, 1, 0)
        return force

    def _clamp_speed(self, vel: np.ndarray) -> np.ndarray:
        v = vel[:, self._clamp]
        speed = np.sqrt(np.square(v[..., 0]) + np.square(v[..., 1]))[..., None]
        over = speed > self._max_speed[:, None]
        with np.errstate(invalid="ignore", divide="ignore"):  # resting agents: 0/0 where not over
            vel[:, self._clamp] = np.where(over, v / speed * self._max_speed[:, None], v)
        return vel
