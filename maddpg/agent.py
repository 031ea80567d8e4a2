"""An agent of one run: its actor and its trainer, built together by `build_agent` (Acme's builder role).

The single-process loop (`maddpg.local`) and the learner service build their agent here, so both act and
learn alike. The actor acts (numpy); the trainer stores and learns (TensorFlow); `update()` runs the updates
that are due and hands the actor the new weights; `state()`/`restore()` cover both for checkpoints.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from maddpg.acting.actor import Actor
from maddpg.acting.heads import make_heads
from maddpg.acting.policy import NumpyPolicy
from maddpg.envs.spaces import EnvSpec
from maddpg.runspec import RunSpec
from maddpg.trainer import Trainer


@dataclass
class Agent:
    """The actor and trainer of one run."""

    actor: Actor
    trainer: Trainer
    metrics: dict[str, np.ndarray] | None = None  # the last update's, per agent (q_loss, p_loss, q)

    @property
    def env_spec(self) -> EnvSpec:
        return self.trainer.env_spec

    @property
    def env_steps(self) -> int:
        """Env steps inserted into the replay buffer (what checkpoints count)."""
        return self.trainer.env_steps

    @property
    def updates(self) -> int:
        return self.trainer.updates

    def update(self) -> dict[str, np.ndarray] | None:
        """Runs the updates that are due and refreshes the actor's weights; the last update's metrics or None."""
        metrics = self.trainer.update()
        if metrics is not None:
            self.actor.set_weights(self.trainer.actor_weights())
            self.metrics = metrics
        return metrics

    def _generators(self) -> dict[str, np.random.Generator]:
        return {"rng/replay_sampling": self.trainer.rng, "rng/acting": self.actor.rng}

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, int]]:
        """The trainer's arrays and counters plus the random generators' states, for a checkpoint."""
        arrays, counters = self.trainer.state()
        for name, gen in self._generators().items():  # a bit generator's state is a JSON-able dict
            arrays[name] = np.frombuffer(json.dumps(gen.bit_generator.state).encode(), np.uint8).copy()
        return arrays, counters

    def restore(self, arrays: dict[str, np.ndarray], counters: dict[str, int]) -> None:
        """Loads a checkpoint's arrays and counters; the actor counts on from its env steps.

        Raises:
          ValueError: the arrays do not fit (a missing, unknown or differently shaped variable).
        """
        generators = self._generators()
        unused = sorted(set(arrays) - set(self.trainer.learner.variables()) - set(generators))
        if unused:
            raise ValueError(f"checkpoint does not fit this learner: unused {unused[:5]}")
        self.trainer.restore(arrays, counters)
        for name, gen in generators.items():
            if name in arrays:  # older checkpoints have none: the generators keep their seeded state
                gen.bit_generator.state = json.loads(arrays[name].tobytes().decode())
        self.actor.steps = self.trainer.env_steps
        self.actor.set_weights(self.trainer.actor_weights())


def build_agent(spec: RunSpec, env_spec: EnvSpec, jit: bool = True) -> Agent:
    """The actor and trainer a run spec describes, the actor holding a numpy copy of the trainer's actors."""
    heads = make_heads(env_spec, spec.resolved_action_dist)
    trainer = Trainer(spec, env_spec, heads, jit=jit)
    actor = Actor.for_run(spec, NumpyPolicy(heads, trainer.actor_weights()), np.random.default_rng(spec.seed + 3))
    return Agent(actor, trainer)
