"""Action spaces of a batched world and the decoding of E actions per agent into forces and messages."""

from __future__ import annotations

import numpy as np

from maddpg.envs.batched.core import DIM_P, WorldLayout, WorldState
from maddpg.envs.spaces import AgentSpec, is_adversary

MOVE_ACTIONS = 2 * DIM_P + 1  # noop, left, right, down, up
# mpe2's discrete movement: 1 -> u_x = -1, 2 -> u_x = +1, 3 -> u_y = -1, 4 -> u_y = +1.
_MOVES = np.array([[0.0, 0.0], [-1.0, 0.0], [1.0, 0.0], [0.0, -1.0], [0.0, 1.0]])


def action_size(body, dim_c: int, continuous: bool) -> int:
    """The size of an agent's action space, computed as mpe2's SimpleEnv does."""
    if body.movable:
        size = MOVE_ACTIONS
    else:
        size = 0 if continuous else 1
    if not body.silent:
        size = size + dim_c if continuous else size * dim_c
    return size


def agent_specs(layout: WorldLayout, obs_dims: list[int], continuous: bool) -> tuple[AgentSpec, ...]:
    """The AgentSpecs that `maddpg.envs.mpe.env_spec_of` reads off the equivalent mpe2 env."""
    specs = []
    for body, obs_dim in zip(layout.agents, obs_dims, strict=True):
        size = action_size(body, layout.dim_c, continuous)
        if continuous:
            groups: tuple[int, ...] = (size,)
        elif body.movable and not body.silent:
            groups = (MOVE_ACTIONS, layout.dim_c)
        else:
            groups = (size,)
        specs.append(AgentSpec(name=body.name, obs_dim=obs_dim, action_kind="box" if continuous else "discrete",
                               action_size=size, action_groups=groups, low=0.0, high=1.0,
                               adversary=is_adversary(body.name)))
    return tuple(specs)


class _Group:
    """Agents that share one action space layout, decoded together."""

    def __init__(self, idx: list[int], body, layout: WorldLayout, continuous: bool):
        self.idx = np.array(idx, dtype=np.intp)
        self.movable, self.silent = body.movable, body.silent
        self.size = action_size(body, layout.dim_c, continuous)
        self.accel = layout.accel[self.idx][:, None]  # [G, 1]


class ActionDecoder:
    """Turns one action array per agent into action forces u [E, A, 2] and communication states.

    Discrete: an integer, `a % 5` the movement and `a // 5` the symbol (one-hot message); agents that
    cannot move send `a` itself. Box: floats clipped to [0, 1] in float32 (as mpe2's clipping wrapper
    does on a float32 space), `u = (a[2] - a[1], a[4] - a[3])` computed in float32, then the message.
    """

    def __init__(self, layout: WorldLayout, continuous: bool):
        self._layout, self._continuous = layout, continuous
        keys: dict[tuple[bool, bool], list[int]] = {}
        for i, body in enumerate(layout.agents):
            keys.setdefault((body.movable, body.silent), []).append(i)
        self._groups = [_Group(idx, layout.agents[idx[0]], layout, continuous) for idx in keys.values()]
        self._eye = np.eye(max(layout.dim_c, 1))

    def decode(self, actions: list[np.ndarray], state: WorldState) -> np.ndarray:
        """Returns u [E, A, 2] and writes the messages of the agents that talk into `state.comm`.

        Raises:
          ValueError: on a wrong number of agents, a wrong shape, or a discrete action out of range.
        """
        e, layout = state.num_envs, self._layout
        if len(actions) != layout.num_agents:
            raise ValueError(f"expected {layout.num_agents} action arrays, got {len(actions)}")
        u = np.zeros((e, layout.num_agents, DIM_P))
        for g in self._groups:
            if self._continuous:
                self._decode_box(g, actions, u, state)
            else:
                self._decode_discrete(g, actions, u, state)
        return u

    def _decode_discrete(self, g: _Group, actions, u: np.ndarray, state: WorldState) -> None:
        e = state.num_envs
        try:
            a = np.stack([np.asarray(actions[i]).reshape(e) for i in g.idx], axis=1)  # [E, G]
        except ValueError as err:
            raise ValueError(f"discrete actions must have shape [{e}]: {err}") from None
        if not np.issubdtype(a.dtype, np.integer):
            if not np.array_equal(a, np.floor(a)):
                raise ValueError("discrete actions must be integers")
            a = a.astype(np.int64)
        if a.min() < 0 or a.max() >= g.size:
            raise ValueError(f"discrete actions must lie in [0, {g.size})")
        if g.movable:
            move = a % MOVE_ACTIONS if not g.silent else a
            u[:, g.idx] = _MOVES[move] * g.accel
            symbol = a // MOVE_ACTIONS
        else:
            symbol = a
        if not g.silent:
            state.comm[:, g.idx] = self._eye[symbol]

    def _decode_box(self, g: _Group, actions, u: np.ndarray, state: WorldState) -> None:
        e = state.num_envs
        try:
            a = np.stack([np.asarray(actions[i], np.float32).reshape(e, g.size) for i in g.idx], axis=1)
        except ValueError as err:
            raise ValueError(f"Box actions must have shape [{e}, {g.size}]: {err}") from None
        a = np.clip(a, np.float32(0.0), np.float32(1.0))  # [E, G, size] float32
        if g.movable:
            # mpe2 subtracts in float32 (the action's dtype) and only then widens to float64.
            du = np.stack([a[..., 2] - a[..., 1], a[..., 4] - a[..., 3]], axis=-1)
            u[:, g.idx] = du.astype(np.float64) * g.accel
        if not g.silent:
            start = MOVE_ACTIONS if g.movable else 0
            state.comm[:, g.idx] = a[..., start:start + self._layout.dim_c]
