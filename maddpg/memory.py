"""A learner's peak memory, estimated from its run spec and agents (a model of maddpg.replay.buffer and
maddpg.algo.learning): the API admits runs by it, and a learner refuses at start a run its machine cannot hold
(it would only be OOM-killed later, or take the host down)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from maddpg.envs.spaces import AgentSpec
from maddpg.errors import UserError
from maddpg.runspec import RunSpec

FLOAT_BYTES = 4
RUNTIME_BYTES = 768 * 2**20  # TensorFlow and the learner's code: a learner of a small run peaks near 1 GiB
_NETWORK_COPIES = 5  # weights, target weights, gradients and Adam's two moments
_PASSES = 4  # critic passes of an update kept for the backward pass (q_tm1, q_t, q_pi, gradients)


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


def estimate_memory(spec: RunSpec, agents: Sequence[AgentSpec]) -> MemoryEstimate:
    """The learner's peak memory for `spec` with these agents."""
    obs, act, n, u = [a.obs_dim for a in agents], [a.action_size for a in agents], len(agents), spec.num_units
    per_transition = sum(2 * o + a for o, a in zip(obs, act)) + 2 * n
    adversaries = spec.num_adversaries if spec.num_adversaries is not None else sum(a.adversary for a in agents)
    joint = [(spec.adv_policy if i < adversaries else spec.good_policy) == "maddpg" for i in range(n)]
    batches = 1 if spec.shared_batch else n
    # Critics of their own: (input size) of each joint or local critic, two hidden layers of u.
    own_in = [obs[i] + act[i] if not joint[i] else sum(obs) + sum(act) for i in range(n)
              if not joint[i] or spec.critic == "joint"]
    params = sum((o + 1) * u + (u + 1) * u + (u + 1) * 2 * a for o, a in zip(obs, act))  # actors (Gaussian: 2 x a)
    params += sum((c + 1) * u + (u + 1) * u + (u + 1) for c in own_in)
    floats = sum(c + 2 * u for c in own_in)  # one sample's activations in one pass of the critics
    heads = sum(joint) if spec.critic == "pooled" else 0
    if heads:  # the pooled critic: an encoder per kind, every agent embedded on every batch, a head per agent
        kinds = {(o, a, agent.adversary) for o, a, agent in zip(obs, act, agents)}
        params += sum((o + a + 1) * u for o, a, _ in kinds) + heads * (((1 + len(kinds)) * u + 1) * u + u + 1)
        floats += batches * sum(o + a + u for o, a in zip(obs, act)) + heads * ((2 + len(kinds)) * u + 1)
    transitions = min(spec.replay_size, spec.num_episodes * spec.max_episode_len)
    return MemoryEstimate(
        floats_per_transition=per_transition, transitions=transitions,
        replay=transitions * per_transition * FLOAT_BYTES,
        update=spec.batch_size * FLOAT_BYTES * (batches * per_transition + _PASSES * floats),
        networks=params * _NETWORK_COPIES * FLOAT_BYTES)


def memory_problem(spec: RunSpec, agents: Sequence[AgentSpec], limit: int, what: str,
                   where: str = "") -> tuple[str, str] | None:
    """None when the run fits in `limit` bytes, else (the field to lower, a message with the estimate and the
    most that field may be). `what` names the limit ("the per-run limit"), `where` where it is set."""
    estimate = estimate_memory(spec, agents)
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
    return field, (f"the run's learner would need about {_gib(estimate.total)} ({estimate.describe()}), above "
                   f"{what} of {_gib(limit)}{f' ({where})' if where else ''}: {advice}")


def machine_memory() -> tuple[int, str, str]:
    """The memory this process may use at most, in bytes, what sets it and where: the container's cgroup limit
    (v2 or v1) where there is one, else the machine's physical memory."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < total:
            return int(text), "the container's memory limit", path
    return total, "this machine's memory", ""


class RunTooLarge(UserError):
    """The run's learner cannot fit in the memory it may use."""


def check_fits_machine(spec: RunSpec, agents: Sequence[AgentSpec]) -> None:
    """Raises RunTooLarge, naming the option to lower, when the learner's estimated peak exceeds what this
    process may use (before the replay buffer is allocated)."""
    problem = memory_problem(spec, agents, *machine_memory())
    if problem:
        field, message = problem
        raise RunTooLarge(f"{message} (--{field.replace('_', '-')})")
