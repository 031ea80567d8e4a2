"""MADDPG for all agents as one object: act on a batch of observations, observe transitions, learn on schedule.

The single-process loop (`maddpg.local`) drives it directly; the distributed learner reuses it unchanged,
fed by the replay queue instead of an env.

Call order::

    agent = MADDPGAgent(spec, env_spec, num_envs)
    actions = agent.act(obs)                    # [E, act_dim_i] per agent
    step = env.step(agent.env_actions(actions))
    agent.observe(obs, actions, step)          # stores, counts env steps, schedules updates
    agent.update()                              # runs the updates that are due
"""

from __future__ import annotations

import json

import numpy as np

from maddpg.algo import heads as H
from maddpg.algo.learning import MADDPGLearner
from maddpg.algo.policy import NumpyPolicy
from maddpg.envs.spaces import EnvSpec
from maddpg.replay.buffer import ReplayBuffer
from maddpg.runspec import RunSpec
from maddpg.types import Step, Transition


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
        raise ValueError(f"num_adversaries: {n_adv} is more than the {env_spec.num_agents} agents of {spec.scenario}")
    return [spec.adv_policy if i < n_adv else spec.good_policy for i in range(env_spec.num_agents)]


class MADDPGAgent:
    """Acting, replay and learning for every agent of one env spec.

    Args:
      spec: the run spec (hyperparameters, schedule, exploration, seed).
      env_spec: the agents.
      num_envs: E, the env copies acted for at once (sizes the exploration noise state).
      jit: compile updates with XLA.
    """

    def __init__(self, spec: RunSpec, env_spec: EnvSpec, num_envs: int = 1, jit: bool = True):
        self.spec, self.env_spec = spec, env_spec
        self.heads = H.make_heads(env_spec, spec.resolved_action_dist)
        self.learner = MADDPGLearner(
            env_spec, self.heads, agent_policies(spec, env_spec), num_units=spec.num_units, lr=spec.lr,
            gamma=spec.gamma, tau=spec.tau, grad_norm_clip=spec.grad_norm_clip, actor_reg=spec.actor_reg,
            seed=spec.seed, jit=jit, shared_batch=spec.shared_batch)
        self.buffer = ReplayBuffer(spec.replay_size, env_spec.obs_dims, [h.action_dim for h in self.heads])
        self.schedule = UpdateSchedule(spec.update_every, spec.min_replay)
        self.policy = NumpyPolicy(self.heads, self.learner.actor_weights(), np.random.default_rng(spec.seed + 3),
                                  spec.exploration, spec.exploration_sigma, spec.ou_theta, num_envs)
        self._rng = np.random.default_rng(spec.seed + 2)
        self.env_steps = 0
        self.updates = 0
        self.metrics: dict[str, np.ndarray] | None = None  # the last update's, per agent (see learn_once)
        self._pending = 0

    def act(self, obs: list[np.ndarray]) -> list[np.ndarray]:
        """Exploratory action vectors for observations [E, obs_dim_i] (uniform during warm-up)."""
        if self.env_steps < self.spec.warmup_steps:
            return self.policy.uniform(obs[0].shape[0])
        return self.policy.act(obs)

    def env_actions(self, actions: list[np.ndarray]) -> list[np.ndarray]:
        return self.policy.to_env(actions)

    def observe(self, obs: list[np.ndarray], actions: list[np.ndarray], step: Step) -> None:
        """Stores the transitions of one step of E envs and schedules the updates that became due.

        Only terminations are stored as done: time limits bootstrap, as in the original.
        """
        n = self.env_spec.num_agents
        done = np.repeat(step.terminated.astype(np.float32)[:, None], n, axis=1)
        self.insert(Transition(obs, actions, step.reward, step.next_obs, done))
        self.policy.reset_noise(step.terminated | step.truncated)

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
        if metrics is not None:
            self.policy.set_weights(self.learner.actor_weights())
            self.metrics = metrics
        return metrics

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
        (`shared_batch`); returns per-agent arrays: critic loss `q_loss`, actor loss `p_loss`, mean Q `q`."""
        n, b = self.env_spec.num_agents, self.spec.batch_size
        if self.spec.shared_batch:
            batch = self.buffer.gather(self.buffer.sample_indices(self._rng, (b,)))  # fields [B, ...]
            metrics = self.learner.step(batch.obs, batch.action, batch.reward.T, batch.next_obs, batch.done.T)
            self.updates += 1
            return metrics
        idx = self.buffer.sample_indices(self._rng, (n, b))
        batch = self.buffer.gather(idx)  # fields [N, B, ...]
        own = (np.arange(n)[:, None], np.arange(b)[None, :], np.arange(n)[:, None])
        metrics = self.learner.step(batch.obs, batch.action, batch.reward[own], batch.next_obs, batch.done[own])
        self.updates += 1
        return metrics

    def _generators(self) -> dict[str, np.random.Generator]:
        return {"rng/replay_sampling": self._rng, "rng/acting": self.policy.rng}

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, int]]:
        """The learner's arrays (weights, targets, optimizer slots, TF and numpy RNG states) and the counters,
        for a checkpoint."""
        arrays = {name: v.numpy() for name, v in self.learner.variables().items()}
        for name, gen in self._generators().items():  # a bit generator's state is a JSON-able dict
            arrays[name] = np.frombuffer(json.dumps(gen.bit_generator.state).encode(), np.uint8).copy()
        return arrays, {"env_steps": self.env_steps, "updates": self.updates}

    def restore(self, arrays: dict[str, np.ndarray], counters: dict[str, int]) -> None:
        """Loads a checkpoint's arrays; every variable must be matched with the same shape."""
        variables = self.learner.variables()
        generators = self._generators()
        for name, gen in generators.items():
            if name in arrays:  # older checkpoints have none: the generators keep their seeded state
                gen.bit_generator.state = json.loads(arrays[name].tobytes().decode())
        missing = sorted(set(variables) - set(arrays))
        unused = sorted(set(arrays) - set(variables) - set(generators))
        if missing or unused:
            raise ValueError(f"checkpoint does not fit this learner: missing {missing[:5]}, unused {unused[:5]}")
        for name, var in variables.items():
            if tuple(var.shape) != arrays[name].shape:
                raise ValueError(f"checkpoint variable {name} has shape {arrays[name].shape}, not {tuple(var.shape)}")
            var.assign(arrays[name])
        self.env_steps = int(counters.get("env_steps", 0))
        self.updates = int(counters.get("updates", 0))
        self.policy.set_weights(self.learner.actor_weights())
