"""Batched MPE engine: E copies of any mpe2 scenario simulated as [E, ...] numpy arrays, equal to mpe2."""

from maddpg.envs.batched.core import WorldState
from maddpg.envs.batched.env import BatchedMPEEnv
from maddpg.envs.batched.memory import tune_allocator
from maddpg.envs.batched.scenarios import BATCHED_SCENARIOS

__all__ = ["BATCHED_SCENARIOS", "BatchedMPEEnv", "WorldState", "tune_allocator"]
