"""Admission by memory: an estimate of a run's learner peak from its run spec, checked against a per-run limit
before anything starts (a run that cannot fit would only be OOM-killed later, or take the host down)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from maddpg.envs.spaces import AgentSpec
from maddpg.runspec import RunSpec

FLOAT_BYTES = 4
RUNTIME_BYTES = 768 * 2**20  # TensorFlow and the learner's code: a learner of a small run peaks near 1 GiB
_NETWORK_COPIES = 5  # weights, target weights, gradients and Adam's two moments
_PASSES = 4  # critic passes of an update kept for the backward pass (q_tm1, q_t, q_pi, gradients)


@lru_cache(maxsize=256)
def _agents(scenario: str, kwargs: tuple, continuous_actions: bool) -> tuple[AgentSpec, ...]:
    """The agents of a scenario (built once per configuration: the batched engine answers in milliseconds)."""
    from maddpg.envs.mpe import make_env

    spec = RunSpec(scenario=scenario, env_kwargs=dict(kwargs), continuous_actions=continuous_actions)
    env = make_env(spec, num_envs=1, engine="batched")
    env.close()
    return env.spec.agents


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


@dataclass(frozen=True)
class MemoryEstimate:
    """A learner's peak memory in bytes, by what holds it.

    Attributes:
      floats_per_transition: what the replay buffer stores per transition (observations, next observations and
        actions of every agent, a reward and a done flag per agent).
      transitions: what the buffer fills: its capacity, or every transition of a shorter run (its pages are
        committed only when written).
      replay: the replay buffer. update: the sampled batches and the critics' activations of one update.
      networks: actors and critics with their copies. runtime: TensorFlow and the rest.
    """

    floats_per_transition: int
    transitions: int
    replay: int
    update: int
    networks: int
    runtime: int = RUNTIME_BYTES

    @property
    def total(self) -> int:
        return self.replay + self.update + self.networks + self.runtime

    def describe(self) -> str:
        return (f"replay buffer {_gib(self.replay)} ({self.transitions:,} transitions x "
                f"{self.floats_per_transition:,} floats), update {_gib(self.update)}, networks "
                f"{_gib(self.networks)}, runtime {_gib(self.runtime)}")


def estimate_memory(spec: RunSpec) -> MemoryEstimate:
    """The learner's peak memory for `spec` (a model of maddpg.replay.buffer and maddpg.algo.learning).

    Raises:
      ValueError: the scenario refuses its keyword arguments.
    """
    try:
        agents = _agents(spec.scenario, tuple(sorted(spec.scenario_kwargs().items())), spec.continuous_actions)
    except (AssertionError, TypeError) as e:  # mpe2 checks some arguments with assert
        raise ValueError(str(e) or type(e).__name__) from None
    obs, act, n, u = [a.obs_dim for a in agents], [a.action_size for a in agents], len(agents), spec.num_units
    per_transition = sum(2 * o + a for o, a in zip(obs, act)) + 2 * n
    adversaries = spec.num_adversaries if spec.num_adversaries is not None else sum(a.adversary for a in agents)
    critic_in = [sum(obs) + sum(act) if (spec.adv_policy if i < adversaries else spec.good_policy) == "maddpg"
                 else obs[i] + act[i] for i in range(n)]
    params = sum((o + 1) * u + (u + 1) * u + (u + 1) * 2 * a  # actor (2 x action: a Gaussian's mean and scale)
                 + (c + 1) * u + (u + 1) * u + (u + 1)  # critic
                 for o, a, c in zip(obs, act, critic_in))
    batches = 1 if spec.shared_batch else n
    transitions = min(spec.replay_size, spec.num_episodes * spec.max_episode_len)
    return MemoryEstimate(
        floats_per_transition=per_transition, transitions=transitions,
        replay=transitions * per_transition * FLOAT_BYTES,
        update=spec.batch_size * FLOAT_BYTES * (batches * per_transition + _PASSES * sum(c + 2 * u for c in critic_in)),
        networks=params * _NETWORK_COPIES * FLOAT_BYTES)


def memory_problem(spec: RunSpec, limit: int, limit_name: str) -> tuple[str, str] | None:
    """None when the run fits in `limit` bytes, else (the field to lower, a message with the estimate and the
    most that field may be).

    Raises:
      ValueError: the scenario refuses its keyword arguments.
    """
    estimate = estimate_memory(spec)
    if estimate.total <= limit:
        return None
    room = limit - estimate.total
    options = [  # (bytes it holds, field, bytes per unit of the field, its value)
        (estimate.replay, "replay_size", estimate.floats_per_transition * FLOAT_BYTES, estimate.transitions),
        (estimate.update, "batch_size", estimate.update // spec.batch_size, spec.batch_size),
        (estimate.networks, "num_units", None, spec.num_units)]
    held, field, unit, value = max(options, key=lambda option: option[0])
    advice = f"lower {field}"
    if held + room <= 0:
        advice += f" and more: the rest alone needs {_gib(estimate.total - held)}"
    elif unit and held + room >= unit:
        advice += f" to at most {(held + room) // unit:,}"
    return field, (f"the run's learner would need about {_gib(estimate.total)} ({estimate.describe()}), above the "
                   f"per-run limit of {_gib(limit)} ({limit_name}): {advice}")
