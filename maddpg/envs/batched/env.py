"""BatchedMPEEnv: E copies of an mpe2 scenario stepped as arrays, behind MPEEnv's interface."""

from __future__ import annotations

from typing import Any

import numpy as np

from maddpg.envs.batched import bridge
from maddpg.envs.batched.actions import ActionDecoder, agent_specs
from maddpg.envs.batched.core import Physics, WorldState, empty_state
from maddpg.envs.batched.memory import tune_allocator
from maddpg.envs.batched.scenarios import ObsGroup, make_scenario
from maddpg.envs.scenarios import get_scenario
from maddpg.envs.spaces import EnvSpec
from maddpg.types import Step

_RENDER_ONLY = ("dynamic_rescaling",)


class BatchedMPEEnv:
    """E copies of one mpe2 scenario, simulated together with numpy; a drop-in for `MPEEnv`.

    Call order: `reset(seed)` once, then `step(actions)` repeatedly. Envs whose episode ended (terminated
    or truncated at `max_cycles`) are reset inside `step`; `Step.next_obs` keeps their final observation
    and `Step.obs` holds the new episode's first one. Physics, observations and rewards follow mpe2
    1.1.1 operation for operation (float64 inside, float32 out). Each env owns a numpy Generator seeded
    like mpe2's (`seed + k` for copy k) and consumed in mpe2's order at reset, so seeded runs reproduce
    mpe2's episodes; drawing an initial state is the one loop over envs (each env has its own stream).

    Args:
      scenario: a name from `maddpg.envs.scenarios.SCENARIOS`.
      kwargs: the scenario's keyword arguments (missing ones take the table's defaults).
      num_envs: E, the number of copies.
      max_cycles: episode length limit.
      continuous_actions: Box actions instead of Discrete.
      render_mode: "rgb_array" or "human" to render copy 0 through an mpe2 env, or None.

    The first construction in a process calls `tune_allocator()` (glibc's mallopt): numpy's large
    per-step temporaries otherwise come back from the OS as fresh pages every step, which halves the
    speed at N=20, E=256. It keeps at most 128 MB of freed heap in the process.

    Raises:
      ValueError: for an unknown keyword argument or one this engine does not support
        (`benchmark_data=True`).
    """

    def __init__(self, scenario: str, kwargs: dict[str, Any] | None = None, *, num_envs: int = 1,
                 max_cycles: int = 25, continuous_actions: bool = False, render_mode: str | None = None):
        table = get_scenario(scenario)
        kwargs = dict(kwargs or {})
        unknown = sorted(set(kwargs) - set(table.kwargs))
        if unknown:
            raise ValueError(f"{scenario} has no keyword argument(s) {', '.join(unknown)}")
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        merged = {**table.kwargs, **kwargs}
        if merged.pop("benchmark_data", False):
            raise ValueError("benchmark_data=True is not supported by the batched engine (use engine mpe2)")
        self._mpe2_kwargs = {k: v for k, v in kwargs.items() if k != "benchmark_data"}
        tune_allocator()
        self._scenario = make_scenario(scenario, {k: v for k, v in merged.items() if k not in _RENDER_ONLY})
        self._layout = self._scenario.layout
        self.num_envs = num_envs
        self.max_cycles = max_cycles
        self.continuous_actions = continuous_actions
        self.render_mode = render_mode
        self.spec = EnvSpec(scenario=scenario, agents=agent_specs(self._layout, self._obs_dims(),
                                                                  continuous_actions))
        self._decoder = ActionDecoder(self._layout, continuous_actions)
        self._physics = Physics(self._layout)
        self._state: WorldState | None = None
        self._render_env = None
        self._cam_range = 1.0
        self.last_reward64: np.ndarray | None = None  # [E, N] float64 rewards of the last step
        self.last_infos: list[dict[str, Any]] = [{name: {} for name in self.spec.agent_ids}
                                                 for _ in range(num_envs)]

    # --- the MPEEnv interface ---

    def reset(self, seed: int | None = None) -> list[np.ndarray]:
        """Resets every copy (copy k gets seed + k) and returns the observations, one [E, d_i] per agent."""
        if self._state is None:
            self._state = empty_state(self._layout, self.num_envs)
            self._state.rngs = [np.random.default_rng() for _ in range(self.num_envs)]
        if seed is not None:
            self._state.rngs = [np.random.Generator(np.random.PCG64(seed + k)) for k in range(self.num_envs)]
        self._reset_envs(np.arange(self.num_envs))
        return self._float32(self._scenario.observe(self._state))

    def step(self, actions: list[np.ndarray]) -> Step:
        """Steps every copy once.

        Args:
          actions: one array per agent: [E] integers for discrete spaces, [E, size] floats for Box.
        """
        s = self._state
        if s is None:
            raise RuntimeError("call reset() before step()")
        u = self._decoder.decode(actions, s)
        self._physics.step(s, u)
        self._scenario.post_step(s)
        reward = self._scenario.rewards(s)  # [E, N] float64
        s.steps += 1
        truncated = s.steps >= self.max_cycles
        terminated = self._scenario.terminal(s) & ~truncated  # mpe2 checks the time limit first
        next_obs = self._float32(self._scenario.observe(s))
        obs = [o.copy() for o in next_obs]
        done = np.flatnonzero(terminated | truncated)
        if len(done):
            self._reset_envs(done)
            fresh = self._float32(self._scenario.observe(s.take(done)))
            for o, f in zip(obs, fresh, strict=True):
                o[done] = f
        self.last_reward64 = reward
        return Step(next_obs, reward.astype(np.float32), terminated, truncated, obs)

    def render(self) -> np.ndarray | None:
        """Renders copy 0 through an mpe2 env loaded with its state (an RGB array in rgb_array mode)."""
        if self.render_mode is None or self._state is None:
            return None
        if self._render_env is None:
            self._render_env = bridge.make_render_env(self.spec.scenario, self._mpe2_kwargs, self.max_cycles,
                                                      self.continuous_actions, self.render_mode)
        raw = self._render_env.unwrapped
        bridge.store(self._scenario, self._state, 0, raw)
        raw.original_cam_range = self._cam_range  # mpe2 fixes its camera range at reset
        return self._render_env.render()

    def close(self) -> None:
        if self._render_env is not None:
            self._render_env.close()
            self._render_env = None

    # --- state access (tests, checkpoints of explorers) ---

    def get_state(self) -> WorldState:
        """A deep copy of every world's state (positions, velocities, messages, steps, extras, generators)."""
        self._require_state()
        return self._state.copy()

    def set_state(self, state: WorldState) -> None:
        """Replaces every world's state with a copy of `state` (from `get_state`, possibly edited)."""
        ref = empty_state(self._layout, self.num_envs)
        for name in ("pos", "vel", "comm", "steps"):
            if getattr(state, name).shape != getattr(ref, name).shape:
                raise ValueError(f"state.{name} has shape {getattr(state, name).shape}, "
                                 f"expected {getattr(ref, name).shape}")
        if len(state.rngs) != self.num_envs:
            raise ValueError(f"state.rngs has {len(state.rngs)} generators, expected {self.num_envs}")
        self._state = state.copy()

    def load_mpe2(self, k: int, env) -> None:
        """Copies one mpe2 env's world (and its generator, so later resets agree too) into copy k.

        Args:
          k: the copy to overwrite.
          env: an mpe2 env of the same scenario and arguments (parallel, AEC or raw).
        """
        if self._state is None:
            self.reset()
        bridge.load(self._scenario, self._state, k, env.unwrapped)

    def store_mpe2(self, k: int, env) -> None:
        """Writes copy k's world into an mpe2 env (the inverse of `load_mpe2`, for rendering and checks)."""
        self._require_state()
        bridge.store(self._scenario, self._state, k, env.unwrapped)

    def observe64(self) -> list[np.ndarray]:
        """The current observations in float64, one [E, d_i] per agent (mpe2's values before its cast)."""
        self._require_state()
        return self._per_agent(self._scenario.observe(self._state), np.float64)

    # --- internals ---

    def _require_state(self) -> None:
        if self._state is None:
            raise RuntimeError("call reset() first")

    def _reset_envs(self, idx: np.ndarray) -> None:
        s = self._state
        rows = [self._scenario.draw(s.rngs[k]) for k in idx]  # each env consumes its own generator
        s.vel[idx] = 0.0
        s.comm[idx] = 0.0
        s.steps[idx] = 0
        if idx[0] == 0:  # copy 0's camera range at reset (rendering only)
            self._cam_range = float(np.max(np.abs(rows[0]["pos"])))
        for key in rows[0]:
            values = bridge.stack([row[key] for row in rows])
            if key == "pos":
                s.pos[idx] = values
                continue
            if key not in s.extra:
                s.extra[key] = np.zeros((self.num_envs,) + values.shape[1:], values.dtype)
            s.extra[key][idx] = values

    def _obs_dims(self) -> list[int]:
        probe = empty_state(self._layout, 1)
        row = self._scenario.draw(np.random.default_rng(0))
        probe.pos[0] = row.pop("pos")
        probe.extra = {k: bridge.stack([v]) for k, v in row.items()}
        obs = self._per_agent(self._scenario.observe(probe), np.float64)
        return [o.shape[1] for o in obs]

    def _float32(self, groups: list[ObsGroup]) -> list[np.ndarray]:
        return self._per_agent(groups, np.float32)

    def _per_agent(self, groups: list[ObsGroup], dtype) -> list[np.ndarray]:
        out: list[np.ndarray | None] = [None] * self._layout.num_agents
        for g in groups:
            # Cast first (a cheap contiguous pass), then transpose [G, D, E] -> [G, E, D] at the narrow
            # dtype, so that each agent's [E, D] block is contiguous as MPEEnv's are.
            values = np.ascontiguousarray(g.values.astype(dtype, copy=False).transpose(0, 2, 1))
            for j, i in enumerate(g.agents):
                out[int(i)] = values[j]
        assert all(o is not None for o in out), "every agent must be observed"
        return out  # type: ignore[return-value]
