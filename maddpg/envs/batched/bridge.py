"""Copies world state between mpe2 envs and a batched WorldState (tests, rendering)."""

from __future__ import annotations

from typing import Any

import numpy as np

from maddpg.envs.batched.core import WorldState
from maddpg.envs.batched.scenarios import BatchedScenario


def stack(values: list[Any]) -> np.ndarray:
    """Stacks one env's values per row; values that are not numbers (generator states) go in an object array."""
    if isinstance(values[0], (dict, np.random.Generator)):
        out = np.empty(len(values), dtype=object)
        for i, v in enumerate(values):
            out[i] = v
        return out
    return np.stack([np.asarray(v) for v in values])


def generator_like(state: dict) -> np.random.Generator:
    bits = np.random.PCG64()
    bits.state = state
    return np.random.Generator(bits)


def load(scenario: BatchedScenario, s: WorldState, k: int, raw) -> None:
    """Copies an unwrapped mpe2 env's world, step count and generator into row k of `s`."""
    world = raw.world
    if len(world.entities) != s.pos.shape[1] or len(world.agents) != s.comm.shape[1]:
        raise ValueError("the mpe2 env has a different number of entities than this batched env")
    s.pos[k] = np.array([e.state.p_pos for e in world.entities], dtype=np.float64)
    s.vel[k] = np.array([e.state.p_vel for e in world.entities], dtype=np.float64)
    if s.comm.shape[2]:
        s.comm[k] = np.array([a.state.c for a in world.agents], dtype=np.float64)
    s.steps[k] = raw.steps
    for key, value in scenario.read_mpe2(raw).items():
        s.extra[key][k] = value
    s.rngs[k] = generator_like(raw.np_random.bit_generator.state)


def store(scenario: BatchedScenario, s: WorldState, k: int, raw) -> None:
    """Writes row k of `s` into an unwrapped mpe2 env (positions, velocities, messages, goals, generator)."""
    world = raw.world
    for i, entity in enumerate(world.entities):
        entity.state.p_pos = s.pos[k, i].copy()
        entity.state.p_vel = s.vel[k, i].copy()
    for i, agent in enumerate(world.agents):
        agent.state.c = s.comm[k, i].copy()
    raw.steps = int(s.steps[k])
    scenario.write_mpe2(raw, {key: value[k] for key, value in s.extra.items()})
    raw.np_random = generator_like(s.rngs[k].bit_generator.state)


def make_render_env(scenario: str, kwargs: dict[str, Any], max_cycles: int, continuous: bool, mode: str):
    """An mpe2 env to draw batched states with (imported lazily: pygame is slow to load)."""
    from maddpg.envs.mpe import make_mpe2_env

    env = make_mpe2_env(scenario, kwargs, max_cycles=max_cycles, continuous_actions=continuous,
                        render_mode=mode)
    env.reset(seed=0)
    return env
