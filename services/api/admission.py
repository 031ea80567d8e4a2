"""Admission by memory: the learner's peak estimated from a run spec (maddpg.memory) checked against a per-run
limit before anything starts."""

from __future__ import annotations

from functools import lru_cache

from maddpg import memory
from maddpg.envs.spaces import AgentSpec
from maddpg.memory import FLOAT_BYTES, RUNTIME_BYTES, MemoryEstimate
from maddpg.runspec import RunSpec

__all__ = ["FLOAT_BYTES", "RUNTIME_BYTES", "estimate_memory", "memory_problem"]


@lru_cache(maxsize=256)
def _agents(scenario: str, kwargs: tuple, continuous_actions: bool) -> tuple[AgentSpec, ...]:
    """The agents of a scenario (built once per configuration: the batched engine answers in milliseconds)."""
    from maddpg.envs.mpe import make_env

    spec = RunSpec(scenario=scenario, env_kwargs=dict(kwargs), continuous_actions=continuous_actions)
    env = make_env(spec, num_envs=1, engine="batched")
    env.close()
    return env.spec.agents


def _agents_of(spec: RunSpec) -> tuple[AgentSpec, ...]:
    try:
        return _agents(spec.scenario, tuple(sorted(spec.scenario_kwargs().items())), spec.continuous_actions)
    except (AssertionError, TypeError) as e:  # mpe2 checks some arguments with assert
        raise ValueError(str(e) or type(e).__name__) from None


def estimate_memory(spec: RunSpec) -> MemoryEstimate:
    """The learner's peak memory for `spec`.

    Raises:
      ValueError: the scenario refuses its keyword arguments.
    """
    return memory.estimate_memory(spec, _agents_of(spec))


def memory_problem(spec: RunSpec, limit: int, limit_name: str) -> tuple[str, str] | None:
    """None when the run fits in the per-run limit of `limit` bytes (`limit_name`), else (the field to lower,
    a message naming it).

    Raises:
      ValueError: the scenario refuses its keyword arguments.
    """
    return memory.memory_problem(spec, _agents_of(spec), limit, "the per-run limit", limit_name)
