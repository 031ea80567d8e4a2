"""What an agent sees and does: observation size and action space, independent of the env engine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class AgentSpec:
    """One agent of a scenario.

    Attributes:
      name: the mpe2 agent id, e.g. "agent_0", "adversary_0".
      obs_dim: observation size (agents of one scenario may differ).
      action_kind: "discrete" (the env takes an integer) or "box" (the env takes a float vector).
      action_size: number of discrete actions, or the Box dimension.
      action_groups: for discrete actions, the factors mpe2 multiplies together: (5, dim_c) for a
        moving agent that talks (env action = move + 5 * symbol), (5,) or (dim_c,) otherwise.
      low, high: Box bounds (mpe2: 0 and 1).
      adversary: whether mpe2 calls it an adversary (its name starts with "adversary", "leadadversary"
        or "eve").
    """

    name: str
    obs_dim: int
    action_kind: Literal["discrete", "box"]
    action_size: int
    action_groups: tuple[int, ...]
    low: float = 0.0
    high: float = 1.0
    adversary: bool = False


@dataclass(frozen=True)
class EnvSpec:
    """The agents of one scenario, in mpe2's order."""

    scenario: str
    agents: tuple[AgentSpec, ...]

    @property
    def num_agents(self) -> int:
        return len(self.agents)

    @property
    def agent_ids(self) -> list[str]:
        return [agent.name for agent in self.agents]

    @property
    def obs_dims(self) -> list[int]:
        return [agent.obs_dim for agent in self.agents]

    @property
    def num_adversaries(self) -> int:
        return sum(agent.adversary for agent in self.agents)

    def describe(self) -> str:
        parts = []
        for agent in self.agents:
            kind = "D" if agent.action_kind == "discrete" else "B"
            parts.append(f"{agent.name}: obs {agent.obs_dim}, act {kind}{agent.action_size}")
        return "; ".join(parts)


def is_adversary(name: str) -> bool:
    return name.startswith(("adversary", "leadadversary", "eve"))
