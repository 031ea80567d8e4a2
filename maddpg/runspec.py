"""The run spec: what a training run learns (scenario, agents, algorithm) and its size, typed and validated once at
the entry point. How a run is started or shown (`--restore`, evaluate's `--display` and `--benchmark`) and where
it runs (service settings) are not part of it.

Field names follow openai/maddpg's train.py flags (`--max-episode-len` is `max_episode_len`); the defaults
are the original's. The CLI builds its flags from these fields, so each description is also its `--help`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import (BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator,
                      model_validator)

from maddpg.envs.scenarios import SCENARIOS, Scenario, get_scenario

PolicyKind = Literal["maddpg", "ddpg"]
ActionDist = Literal[
    "auto", "soft_categorical", "soft_multi_categorical", "gaussian", "deterministic", "bernoulli"
]
Exploration = Literal["sample", "ou", "gaussian"]

MAX_AGENTS = 100  # agents of one env, whichever keywords set them (num_agents, N, num_good + num_adversaries...)
MAX_ENTITIES = 100  # landmarks, obstacles, food, forests or treasures of one kind
MAX_STEPS = 10**9  # episodes, env steps and the rates counted in them
# The ranges of the scenarios' numeric keywords (mpe2's own asserts, and what the batched engine supports); the
# type of each comes from its default in maddpg.envs.scenarios (None: an optional count).
ENV_KWARG_RANGES: dict[str, tuple[float, float]] = {
    "N": (1, MAX_AGENTS), "num_good": (1, MAX_AGENTS), "num_adversaries": (1, MAX_AGENTS),
    "num_collectors": (1, MAX_AGENTS), "num_deposits": (1, 6),  # mpe2 has 6 deposit colours
    "num_obstacles": (0, MAX_ENTITIES), "num_food": (1, MAX_ENTITIES), "num_forests": (0, MAX_ENTITIES),
    "num_treasures": (1, MAX_ENTITIES), "num_agent_neighbors": (1, MAX_AGENTS),
    "num_landmark_neighbors": (1, MAX_ENTITIES), "local_ratio": (0.0, 1.0),
}
_AGENT_KWARGS = ("N", "num_good", "num_adversaries", "num_collectors", "num_deposits")  # each of these is agents


# Fields a resumed run may change: how long it runs, how it is deployed and saved, not what it learns.
RESUMABLE_CHANGES = frozenset({"num_episodes", "explorers", "envs_per_explorer", "save_rate", "keep_checkpoints",
                               "exp_name", "tf_threads"})
# Modes that were run spec fields once (now `train --restore`, `evaluate --display/--benchmark`): specs stored
# with them (a run folder's spec.json, a checkpoint's manifest, the API's registry) still load, without them.
RETIRED_FIELDS = frozenset({"restore", "benchmark", "benchmark_iters", "display"})


class RunSpec(BaseModel):
    """What one training run does. Unknown fields are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    # Environment.
    scenario: str = Field("simple", max_length=64, json_schema_extra={"enum": list(SCENARIOS)},
                          description="mpe2 scenario (see `maddpg scenarios`)")
    num_agents: int | None = Field(
        None, ge=1, le=MAX_AGENTS,
        description="number of agents N, for scenarios that have one (simple_spread, simple_adversary, "
                    "simple_formation, simple_line); default: the scenario's")
    env_kwargs: dict[str, int | float | bool] = Field(
        default_factory=dict,
        description="other scenario keyword arguments, e.g. local_ratio=0.5 (see `maddpg scenarios`): the "
                    "scenario's own names and types; counts of agents at most 100 in all, of other entities at "
                    "most 100 each, local_ratio in [0, 1]")
    continuous_actions: bool = Field(
        False, description="use mpe2's continuous Box(0,1) action spaces instead of Discrete")
    max_episode_len: int = Field(25, ge=1, le=100_000, description="maximum episode length (env steps)")
    num_episodes: int = Field(60_000, ge=1, le=MAX_STEPS, description="number of episodes to train for")
    num_envs: int = Field(1, ge=1, le=4096, description="env copies stepped together by the training loop")
    engine: Literal["batched", "mpe2"] = Field(
        "batched", description="environment engine: batched (numpy, all env copies at once, equal to mpe2 in "
                               "tests) or mpe2 (the reference, one copy at a time)")
    explorers: int = Field(
        0, ge=0, le=64,
        description="explorer processes (SEED RL: a learner process serves them batched inference); "
                    "0 trains in one process")
    envs_per_explorer: int = Field(16, ge=1, le=4096, description="env copies each explorer steps")
    chunk_len: int = Field(10, ge=1, le=1000, description="env steps per transition chunk an explorer sends")

    # Agents.
    num_adversaries: int | None = Field(
        None, ge=0, le=MAX_AGENTS,
        description="agents (the first ones) that use --adv-policy; default: the scenario's adversaries")
    good_policy: PolicyKind = Field("maddpg", description="policy of good agents: maddpg or ddpg (local critic)")
    adv_policy: PolicyKind = Field("maddpg", description="policy of adversaries: maddpg or ddpg (local critic)")
    action_dist: ActionDist = Field(
        "auto",
        description="action distribution: auto picks soft_categorical (Gumbel-softmax) for Discrete and "
                    "gaussian for Box, or deterministic when --exploration is ou/gaussian")
    exploration: Exploration = Field(
        "sample",
        description="sample: act by sampling the action distribution (original); ou / gaussian: "
                    "deterministic actor plus Ornstein-Uhlenbeck / Gaussian noise (continuous actions)")
    exploration_sigma: float = Field(0.2, ge=0, le=100, description="noise scale of the ou / gaussian exploration")
    ou_theta: float = Field(0.15, ge=0, le=100, description="mean reversion rate of the Ornstein-Uhlenbeck process")
    warmup_steps: int = Field(0, ge=0, le=MAX_STEPS,
                              description="env steps of uniform random actions before the policy acts")

    # Learning (openai/maddpg defaults).
    lr: float = Field(1e-2, gt=0, le=1, description="Adam learning rate of actors and critics")
    gamma: float = Field(0.95, ge=0, le=1, description="discount factor")
    batch_size: int = Field(1024, ge=1, le=65_536, description="transitions per update and agent")
    num_units: int = Field(64, ge=1, le=4096, description="units in each of the 2 hidden layers")
    tau: float = Field(0.01, gt=0, le=1, description="soft target update rate")
    grad_norm_clip: float = Field(0.5, gt=0, le=1e6, description="per-variable gradient norm clip")
    actor_reg: float = Field(1e-3, ge=0, le=1000, description="weight of the actor regularizer mean(logits^2)")
    replay_size: int = Field(1_000_000, ge=1, le=100_000_000, description="replay buffer capacity (transitions)")
    update_every: int = Field(100, ge=1, le=1_000_000, description="env steps between two updates of all agents")
    learning_starts: int | None = Field(
        None, ge=0, le=100_000_000,
        description="transitions in the buffer before updates start; default batch_size * max_episode_len")
    shared_batch: bool = Field(
        False, description="one replay batch for every agent's update, target actions computed once per update: N "
                           "times fewer target-actor passes and gathers (faster with many agents; openai/maddpg "
                           "samples a batch per agent, the default)")
    critic: Literal["joint", "pooled"] = Field(
        "joint", description="critic of the maddpg agents: joint (the original: each reads every agent's "
                             "observation and action, an input that grows with N) or pooled (an encoder per kind "
                             "of agent shared by all, embeddings mean-pooled, a head per agent: an input of fixed "
                             "size; see maddpg/algo/README.md)")

    # Run bookkeeping.
    seed: int = Field(0, ge=0, le=2**31 - 1, description="random seed of envs, networks and sampling")
    save_rate: int = Field(1000, ge=1, le=MAX_STEPS,
                           description="episodes between checkpoints (and learning-curve plots)")
    keep_checkpoints: int = Field(3, ge=1, le=1000, description="newest checkpoints kept in the run folder")
    exp_name: str | None = Field(
        None, pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,127}$",
        description="experiment name stored with the run (at most 128 letters, digits, spaces, '.', '_' or '-')")
    tf_threads: int = Field(1, ge=1, le=64, description="TensorFlow intra/inter-op threads (1 avoids fights on 2 cores)")

    @field_validator("scenario")
    @classmethod
    def _known_scenario(cls, value: str) -> str:
        if value not in SCENARIOS:
            raise ValueError(f"unknown scenario {value!r}; choose one of: {', '.join(SCENARIOS)}")
        return value

    @field_validator("env_kwargs")
    @classmethod
    def _scenario_kwargs(cls, value: dict, info: ValidationInfo) -> dict:
        if "scenario" in info.data:  # else the scenario's own error says why
            check_env_kwargs(get_scenario(info.data["scenario"]), value)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> RunSpec:
        scenario = get_scenario(self.scenario)
        if self.num_agents is not None and scenario.size_kwarg is None:
            raise ValueError(
                f"num_agents: scenario {self.scenario} has a fixed number of agents; "
                "drop --num-agents or set its own keyword in env_kwargs")
        if self.exploration != "sample":
            if not self.continuous_actions:
                raise ValueError(
                    f"exploration: {self.exploration!r} noise needs continuous actions (--continuous-actions)")
            if self.action_dist not in ("auto", "deterministic"):
                raise ValueError(
                    f"exploration: {self.exploration!r} noise needs the deterministic action_dist, "
                    f"not {self.action_dist!r}")
        if self.continuous_actions and self.action_dist == "soft_multi_categorical":
            raise ValueError("action_dist: soft_multi_categorical needs Discrete actions (drop --continuous-actions)")
        if not self.continuous_actions and self.action_dist in ("gaussian", "deterministic", "bernoulli"):
            raise ValueError(f"action_dist: {self.action_dist} needs continuous actions (--continuous-actions)")
        if self.learning_starts is not None and self.learning_starts > self.replay_size:
            raise ValueError("learning_starts: larger than replay_size, training would never start")
        return self

    # Derived values.
    @property
    def min_replay(self) -> int:
        """Transitions in the buffer before the first update (the original: batch * max episode length)."""
        if self.learning_starts is not None:
            return self.learning_starts
        return min(self.batch_size * self.max_episode_len, self.replay_size)

    @property
    def resolved_action_dist(self) -> str:
        if self.action_dist != "auto":
            return self.action_dist
        if not self.continuous_actions:
            return "soft_categorical"
        return "deterministic" if self.exploration != "sample" else "gaussian"

    def scenario_kwargs(self) -> dict[str, int | float | bool]:
        """Keyword arguments for the mpe2 constructor (num_agents mapped to the scenario's size keyword)."""
        kwargs = dict(self.env_kwargs)
        size_kwarg = get_scenario(self.scenario).size_kwarg
        if self.num_agents is not None and size_kwarg is not None:
            kwargs[size_kwarg] = self.num_agents
        return kwargs

    def resume_conflicts(self, saved: RunSpec) -> list[str]:
        """How this spec differs from `saved` (a run's own) in what the run learns, one "field: a -> b" each.

        A run may be resumed with other bookkeeping and deployment fields (more episodes, other explorers);
        anything else would mix two experiments in one run.
        """
        return [f"{name}: {getattr(saved, name)!r} -> {getattr(self, name)!r}" for name in type(self).model_fields
                if name not in RESUMABLE_CHANGES and getattr(saved, name) != getattr(self, name)]

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    def save(self, path: Path) -> None:
        Path(path).write_text(self.to_json() + "\n")

    @classmethod
    def load(cls, path: Path) -> RunSpec:
        return cls.from_stored(json.loads(Path(path).read_text()))

    @classmethod
    def from_stored(cls, data: dict | str | bytes) -> RunSpec:
        """A spec as stored by this or an earlier version (a dict or its JSON): RETIRED_FIELDS are dropped."""
        if not isinstance(data, dict):
            data = json.loads(data)
        return cls.model_validate({k: v for k, v in data.items() if k not in RETIRED_FIELDS})


def check_env_kwargs(scenario: Scenario, kwargs: dict[str, int | float | bool]) -> None:
    """Raises ValueError unless `kwargs` are keywords of `scenario` of the type of their default (bools are bools,
    counts are integers), inside ENV_KWARG_RANGES, with at most MAX_AGENTS agents in all."""
    for key, value in kwargs.items():
        if key not in scenario.kwargs:
            allowed = ", ".join(scenario.kwargs) or "none"
            raise ValueError(f"{scenario.name} has no keyword {key!r}; it accepts: {allowed}")
        default = scenario.kwargs[key]
        if isinstance(default, bool) != isinstance(value, bool):
            raise ValueError(f"{key} is {'a' if isinstance(default, bool) else 'no'} boolean, not {value!r}")
        if isinstance(value, bool):
            continue
        if not isinstance(default, float) and not isinstance(value, int):
            raise ValueError(f"{key} is a count, an integer, not {value!r}")
        low, high = ENV_KWARG_RANGES[key]
        if not low <= value <= high:
            raise ValueError(f"{key} must lie in [{low}, {high}], not {value!r}")
    agents = sum(kwargs.get(key, scenario.kwargs.get(key, 0)) or 0 for key in _AGENT_KWARGS)
    if agents > MAX_AGENTS:
        raise ValueError(f"{agents} agents in all ({', '.join(k for k in _AGENT_KWARGS if k in scenario.kwargs)}); "
                         f"at most {MAX_AGENTS}")


def format_validation_error(error: ValidationError) -> str:
    """One line per problem, naming the field, for a CLI or a log."""
    lines = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "spec"
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"{where}: {message}" if not message.startswith(f"{where}:") else message)
    return "\n".join(lines)
