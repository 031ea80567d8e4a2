"""Adapter over mpe2's parallel API: E env copies stepped one by one, with arrays in and out."""

from __future__ import annotations

import importlib
import os
from typing import Any

import numpy as np

from maddpg.envs.scenarios import get_scenario
from maddpg.envs.spaces import AgentSpec, EnvSpec, is_adversary
from maddpg.types import Step

# pygame (imported by mpe2) prints a banner and needs no screen for rgb_array rendering.
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")


def make_mpe2_env(scenario: str, kwargs: dict[str, Any], *, max_cycles: int, continuous_actions: bool,
                  render_mode: str | None = None):
    """Builds one mpe2 parallel env."""
    module = importlib.import_module(get_scenario(scenario).module)
    return module.parallel_env(max_cycles=max_cycles, continuous_actions=continuous_actions,
                               render_mode=render_mode, **kwargs)


def env_spec_of(scenario: str, env) -> EnvSpec:
    """Reads the agents, their observation sizes and action spaces off a built mpe2 env."""
    raw = env.unwrapped
    world = raw.world
    agents = []
    for name, agent in zip(env.possible_agents, world.agents, strict=True):
        space = env.action_space(name)
        discrete = hasattr(space, "n")
        if discrete:
            size = int(space.n)
            if agent.movable and not agent.silent:
                groups: tuple[int, ...] = (world.dim_p * 2 + 1, world.dim_c)
            else:
                groups = (size,)
            low, high = 0.0, 1.0
        else:
            size = int(space.shape[0])
            groups = (size,)
            low, high = float(np.min(space.low)), float(np.max(space.high))
        agents.append(AgentSpec(
            name=name, obs_dim=int(env.observation_space(name).shape[0]),
            action_kind="discrete" if discrete else "box", action_size=size, action_groups=groups,
            low=low, high=high, adversary=is_adversary(name)))
    return EnvSpec(scenario=scenario, agents=tuple(agents))


class MPEEnv:
    """E copies of one mpe2 scenario behind array inputs and outputs.

    Call order: `reset(seed)` once, then `step(actions)` repeatedly. Envs whose episode ended (terminated
    or truncated at `max_cycles`) are reset inside `step`; `Step.next_obs` keeps their final observation
    and `Step.obs` holds the new episode's first one.

    Args:
      scenario: a name from `maddpg.envs.scenarios.SCENARIOS`.
      kwargs: the scenario's keyword arguments.
      num_envs: E, the number of copies.
      max_cycles: episode length limit.
      continuous_actions: Box actions instead of Discrete.
      render_mode: "rgb_array" or "human" for copy 0, or None.
    """

    def __init__(self, scenario: str, kwargs: dict[str, Any] | None = None, *, num_envs: int = 1,
                 max_cycles: int = 25, continuous_actions: bool = False, render_mode: str | None = None):
        kwargs = dict(kwargs or {})
        self._envs = [
            make_mpe2_env(scenario, kwargs, max_cycles=max_cycles, continuous_actions=continuous_actions,
                          render_mode=render_mode if k == 0 else None)
            for k in range(num_envs)
        ]
        self.spec = env_spec_of(scenario, self._envs[0])
        self.num_envs = num_envs
        self._ids = self.spec.agent_ids
        self.last_infos: list[dict[str, Any]] = [{} for _ in range(num_envs)]

    def reset(self, seed: int | None = None) -> list[np.ndarray]:
        """Resets every copy (copy k gets seed + k) and returns the observations, one [E, d_i] per agent."""
        rows = []
        for k, env in enumerate(self._envs):
            obs, _ = env.reset(seed=None if seed is None else seed + k)
            rows.append(obs)
        return self._stack(rows)

    def step(self, actions: list[np.ndarray]) -> Step:
        """Steps every copy once.

        Args:
          actions: one array per agent: [E] integers for discrete spaces, [E, size] floats for Box.
        """
        next_rows, obs_rows = [], []
        reward = np.zeros((self.num_envs, len(self._ids)), np.float32)
        terminated = np.zeros(self.num_envs, bool)
        truncated = np.zeros(self.num_envs, bool)
        actions = [self._env_action(i, a) for i, a in enumerate(actions)]
        for k, env in enumerate(self._envs):
            action = {name: actions[i][k] for i, name in enumerate(self._ids)}
            obs, rew, term, trunc, infos = env.step(action)
            self.last_infos[k] = infos
            next_rows.append(obs)
            reward[k] = [rew[name] for name in self._ids]
            terminated[k] = any(term.values())
            truncated[k] = any(trunc.values()) and not terminated[k]
            if terminated[k] or truncated[k]:
                obs, _ = env.reset()
            obs_rows.append(obs)
        return Step(self._stack(next_rows), reward, terminated, truncated, self._stack(obs_rows))

    def _env_action(self, i: int, action: np.ndarray) -> np.ndarray:
        agent = self.spec.agents[i]
        if agent.action_kind == "discrete":
            return np.asarray(action, dtype=np.int64).reshape(self.num_envs)
        # mpe2 checks Box actions against a float32 space: pass float32 inside the bounds.
        return np.clip(np.asarray(action, np.float32).reshape(self.num_envs, agent.action_size),
                       agent.low, agent.high)

    def render(self) -> np.ndarray | None:
        """Renders copy 0 (an RGB array in rgb_array mode)."""
        return self._envs[0].render()

    def close(self) -> None:
        for env in self._envs:
            env.close()

    def _stack(self, rows: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
        return [np.stack([row[name] for row in rows]).astype(np.float32, copy=False) for name in self._ids]


def make_env(spec, *, num_envs: int | None = None, render_mode: str | None = None,
             extra_kwargs: dict[str, Any] | None = None, engine: str | None = None):
    """Builds the env of a run spec (`maddpg.runspec.RunSpec`) with its engine (or `engine` if given)."""
    kwargs = {**spec.scenario_kwargs(), **(extra_kwargs or {})}
    cls = MPEEnv
    if (engine or spec.engine) == "batched":
        from maddpg.envs.batched import BatchedMPEEnv as cls
    return cls(spec.scenario, kwargs, num_envs=num_envs or spec.num_envs,
                  max_cycles=spec.max_episode_len, continuous_actions=spec.continuous_actions,
                  render_mode=render_mode)
