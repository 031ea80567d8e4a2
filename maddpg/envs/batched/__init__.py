"""Batched MPE engine: E copies of any mpe2 scenario simulated as [E, ...] numpy arrays, equal to mpe2."""

from maddpg.envs.batched.core import WorldState
from maddpg.envs.batched.env import BatchedMPEEnv

__all__ = ["BatchedMPEEnv", "WorldState"]
