"""The trainer: the replay buffer, the update schedule and the MADDPG learner of every agent, with their state.

It never acts: `maddpg.acting.Actor` does, on a numpy copy of the actors that `actor_weights()` hands out after
updates. `maddpg.agent.build_agent` composes the two for the single-process loop and the learner service.

Call order::

    trainer.insert(transitions)   # counts env steps, schedules the updates that became due
    trainer.update()              # runs them
"""

from __future__ import annotations

import numpy as np

from maddpg.acting import heads as H
from maddpg.algo.learning import MADDPGLearner
from maddpg.envs.spaces import EnvSpec
from maddpg.errors import SpecError
from maddpg.replay.buffer import ReplayBuffer
from maddpg.runspec import RunSpec
from maddpg.types import Transition


class UpdateSchedule:
    """The original schedule: one update of all agents each time the env-step counter crosses a multiple of
    `every`, once the buffer holds `min_size` transitions. Works for E envs stepping together."""

    def __init__(self, every: int, min_size: int):
        self.every, self.min_size = every, min_size

    def due(self, steps_before: int, steps_after: int, buffer_size: int) -> int:
        if buffer_size < self.min_size:
            return 0
        return steps_after // self.every - steps_before // self.every


def agent_policies(spec: RunSpec, env_spec: EnvSpec) -> list[str]:
    """maddpg or ddpg per agent: the first `num_adversaries` use adv_policy (default: the scenario's count)."""
    n_adv = env_spec.num_adversaries if spec.num_adversaries is None else spec.num_adversaries
    if n_adv > env_spec.num_agents:
        raise SpecError(f"num_adversaries: {n_adv} is more than the {env_spec.num_agents} agents of {spec.scenario}")
    return [spec.adv_policy if i < n_adv else spec.good_policy for i in range(env_spec.num_agents)]


class Trainer:
    """Replay and learning for every agent of one env spec.

    Args:
      spec: the run spec (hyperparameters, schedule, seed).
      env_spec: the agents. heads: their action distributions.
      jit: compile updates with XLA.
    """

    def __init__(self, spec: RunSpec, env_spec: EnvSpec, heads: list[H.Head], jit: bool = True):
        self.spec, self.env_spec, self.heads = spec, env_spec, heads
        self.learner = MADDPGLearner(
            env_spec, heads, agent_policies(spec, env_spec), num_units=spec.num_units, lr=spec.lr,
            gamma=spec.gamma, tau=spec.tau, grad_norm_clip=spec.grad_norm_clip, actor_reg=spec.actor_reg,
            seed=spec.seed, jit=jit, shared_batch=spec.shared_batch, critic=spec.critic)
        self.buffer = ReplayBuffer(spec.replay_size, env_spec.obs_dims, [h.action_dim for h in heads])
        self.schedule = UpdateSchedule(spec.update_every, spec.min_replay)
        self.rng = np.random.default_rng(spec.seed + 2)  # replay sampling
        self.env_steps = 0
        self.updates = 0
        self._pending = 0

    def insert(self, transitions: Transition) -> None:
        """Adds transitions (one per env step) to the buffer and schedules the updates that became due."""
        self.buffer.add(transitions)
        before = self.env_steps
        self.env_steps += transitions.reward.shape[0]
        self._pending += self.schedule.due(before, self.env_steps, len(self.buffer))

    @property
    def pending_updates(self) -> int:
        """Updates that are due but not run yet."""
        return self._pending

    def update(self) -> dict[str, np.ndarray] | None:
        """Runs every update that is due; returns the last one's metrics, or None if none ran."""
        metrics = None
        while self._pending > 0:
            metrics = self.learn_once()
            self._pending -= 1
        return metrics

    def actor_weights(self):
        """Numpy copies of the actors' weights, for `maddpg.acting.Actor.set_weights`."""
        return self.learner.actor_weights()

    def warm_up(self) -> None:
        """Compiles the update on zeros of the batch's shapes without changing any state."""
        n, b = self.env_spec.num_agents, self.spec.batch_size
        lead = (b,) if self.spec.shared_batch else (n, b)
        obs = [np.zeros((*lead, d), np.float32) for d in self.env_spec.obs_dims]
        act = [np.zeros((*lead, h.action_dim), np.float32) for h in self.heads]
        zeros = np.zeros((n, b), np.float32)
        self.learner.warm_up(obs, act, zeros, obs, zeros)

    def learn_once(self) -> dict[str, np.ndarray]:
        """One update of all agents, each on its own uniformly sampled batch (as openai/maddpg), or all on one
        (`shared_batch`)."""
        n, b = self.env_spec.num_agents, self.spec.batch_size
        if self.spec.shared_batch:
            batch = self.buffer.gather(self.buffer.sample_indices(self.rng, (b,)))  # fields [B, ...]
            metrics = self.learner.step(batch.obs, batch.action, batch.reward.T, batch.next_obs, batch.done.T)
            self.updates += 1
            return metrics
        idx = self.buffer.sample_indices(self.rng, (n, b))
        batch = self.buffer.gather(idx)  # fields [N, B, ...]
        own = (np.arange(n)[:, None], np.arange(b)[None, :], np.arange(n)[:, None])
        metrics = self.learner.step(batch.obs, batch.action, batch.reward[own], batch.next_obs, batch.done[own])
        self.updates += 1
        return metrics

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, int]]:
        """The learner's arrays (weights, targets, optimizer slots, TF RNG state) and the counters."""
        return {name: v.numpy() for name, v in self.learner.variables().items()}, {
            "env_steps": self.env_steps, "updates": self.updates}

    def restore(self, arrays: dict[str, np.ndarray], counters: dict[str, int]) -> None:
        """Loads the learner's arrays (every variable must be matched with the same shape; other names are
        left to the caller) and the counters.

        Raises:
          ValueError: a variable is missing or has another shape.
        """
        variables = self.learner.variables()
        missing = sorted(set(variables) - set(arrays))
        if missing:
            raise ValueError(f"checkpoint does not fit this learner: missing {missing[:5]}")
        for name, var in variables.items():
            if tuple(var.shape) != arrays[name].shape:
                raise ValueError(f"checkpoint variable {name} has shape {arrays[name].shape}, not {tuple(var.shape)}")
            var.assign(arrays[name])
        self.env_steps = int(counters.get("env_steps", 0))
        self.updates = int(counters.get("updates", 0))
