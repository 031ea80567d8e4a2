"""The one place where observations become actions: warm-up, exploration noise per env, the policy.

A batch may mix the envs of many streams: the explorers of a distributed run (the learner's inference server
batches their requests), or the envs of one single-process loop, or of `maddpg evaluate`. Each stream keeps
its own noise processes, one per env, restarted when that env's episode starts anew.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Sequence

import numpy as np

from maddpg.acting.noise import make_noise
from maddpg.acting.policy import NumpyPolicy, Weights

# (stream, new_episode): a stream's id and, for each of its envs in the batch, whether its episode just began.
Part = tuple[Hashable, np.ndarray]


class Actor:
    """Acts for batches of envs from one or many streams.

    During warm-up (the first `warmup_steps` env steps acted for, counted over every stream) actions are
    uniformly random; afterwards they are sampled from the policy, or its mode plus the stream's noise for
    deterministic exploration (`ou`, `gaussian`).

    Args:
      policy: the actors. rng: draws samples, warm-up actions and noise.
      exploration: "sample", "ou" or "gaussian" (the run spec's field). sigma, theta: the noise's parameters.
      warmup_steps: env steps acted uniformly at random. steps: env steps acted for already (a restored run).
      max_streams: streams whose noise is kept; beyond it the least recently served one starts afresh.
    """

    def __init__(self, policy: NumpyPolicy, rng: np.random.Generator, *, exploration: str = "sample",
                 sigma: float = 0.2, theta: float = 0.15, warmup_steps: int = 0, steps: int = 0,
                 max_streams: int = 4096):
        self.policy, self.rng = policy, rng
        self._exploration, self._sigma, self._theta = exploration, sigma, theta
        self.warmup_steps, self.steps = warmup_steps, steps
        self._max_streams = max_streams
        self._noise: OrderedDict[Hashable, list] = OrderedDict()  # stream -> one process per agent

    @classmethod
    def for_run(cls, spec, policy: NumpyPolicy, rng: np.random.Generator, steps: int = 0) -> Actor:
        """The actor a run spec describes (exploration, noise, warm-up)."""
        return cls(policy, rng, exploration=spec.exploration, sigma=spec.exploration_sigma, theta=spec.ou_theta,
                   warmup_steps=spec.warmup_steps, steps=steps)

    @property
    def warming_up(self) -> bool:
        return self.steps < self.warmup_steps

    def act(self, obs: list[np.ndarray], parts: Sequence[Part], explore: bool = True) -> list[np.ndarray]:
        """Action vectors [B, action_dim_i] per agent for observations [B, obs_dim_i] per agent.

        Args:
          parts: the streams the rows of `obs` belong to, in order, each with its envs' new-episode flags
            (their lengths add up to B).
          explore: False: the policy's mode, no noise, nothing counted (evaluation).
        """
        if not explore:
            return self.policy.mode(obs)
        batch = obs[0].shape[0]
        noise = self._draw(parts, draw=not self.warming_up)
        actions = self.policy.uniform(batch, self.rng) if self.warming_up else self.policy.sample(obs, self.rng, noise)
        self.steps += batch
        return actions

    def forget(self, stream: Hashable) -> None:
        """Drops a stream's noise (an explorer that restarted or went away)."""
        self._noise.pop(stream, None)

    def set_weights(self, weights: list[Weights]) -> None:
        self.policy.set_weights(weights)

    def to_env(self, actions: list[np.ndarray]) -> list[np.ndarray]:
        return self.policy.to_env(actions)

    def _draw(self, parts: Sequence[Part], draw: bool) -> list[np.ndarray | None]:
        """Restarts the noise of envs whose episode began and draws the next noise of every env, per agent
        (None for agents without noise)."""
        if self._exploration not in ("ou", "gaussian"):
            return [None] * len(self.policy.heads)
        per_agent: list[list[np.ndarray]] = [[] for _ in self.policy.heads]
        for stream, new_episode in parts:
            processes = self._processes(stream, len(new_episode))
            for i, process in enumerate(processes):
                process.reset(new_episode)
                if draw:
                    per_agent[i].append(process())
        return [np.concatenate(p) if draw else None for p in per_agent]

    def _processes(self, stream: Hashable, envs: int) -> list:
        processes = self._noise.get(stream)
        if processes is None or processes[0].shape[0] != envs:
            processes = [make_noise(self._exploration, (envs, h.action_dim), self._sigma, self._theta, self.rng)
                         for h in self.policy.heads]
            self._noise[stream] = processes
            while len(self._noise) > self._max_streams:
                self._noise.popitem(last=False)
        self._noise.move_to_end(stream)
        return processes
