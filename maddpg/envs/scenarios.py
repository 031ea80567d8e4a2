"""The mpe2 scenarios this project knows, with the keyword arguments each one accepts.

Kept as a table (no mpe2 import) so that validating a run spec stays cheap; a test checks the
table against mpe2's own constructor signatures.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Scenario:
    """One mpe2 environment family.

    Attributes:
      name: our name, also the `--scenario` value (the mpe2 module without its version suffix).
      module: the mpe2 module that holds `parallel_env`.
      kwargs: scenario keyword arguments with their mpe2 defaults (besides max_cycles,
        continuous_actions and render_mode, which come from the run spec).
      size_kwarg: the keyword that `num_agents` sets, where the scenario has one.
      description: one line for `maddpg scenarios`.
    """

    name: str
    module: str
    kwargs: dict[str, int | float | bool | None] = field(default_factory=dict)
    size_kwarg: str | None = None
    description: str = ""


_COMMON: dict[str, int | float | bool | None] = {"dynamic_rescaling": True, "benchmark_data": False}
_PARTIAL_OBS: dict[str, int | float | bool | None] = {
    "num_agent_neighbors": None,
    "num_landmark_neighbors": None,
}

SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in [
        Scenario("simple", "mpe2.simple_v3", dict(_COMMON), None,
                 "one agent reaches a landmark"),
        Scenario("simple_adversary", "mpe2.simple_adversary_v3",
                 {"N": 2, **_COMMON, **_PARTIAL_OBS}, "N",
                 "N good agents hide the target landmark from one adversary"),
        Scenario("simple_crypto", "mpe2.simple_crypto_v3", dict(_COMMON), None,
                 "alice and bob share a key; eve eavesdrops"),
        Scenario("simple_push", "mpe2.simple_push_v3", dict(_COMMON), None,
                 "an adversary pushes the agent away from its landmark"),
        Scenario("simple_reference", "mpe2.simple_reference_v3",
                 {"local_ratio": 0.5, **_COMMON}, None,
                 "two agents tell each other which landmark to reach"),
        Scenario("simple_speaker_listener", "mpe2.simple_speaker_listener_v4", dict(_COMMON), None,
                 "a speaker guides a listener to a landmark"),
        Scenario("simple_spread", "mpe2.simple_spread_v3",
                 {"N": 3, "local_ratio": 0.5, **_COMMON, "curriculum": False,
                  "terminate_on_success": False, **_PARTIAL_OBS}, "N",
                 "N agents cover N landmarks without colliding"),
        Scenario("simple_tag", "mpe2.simple_tag_v3",
                 {"num_good": 1, "num_adversaries": 3, "num_obstacles": 2, **_COMMON,
                  "curriculum": False, "terminate_on_success": False, **_PARTIAL_OBS}, None,
                 "predators chase faster prey around obstacles"),
        Scenario("simple_world_comm", "mpe2.simple_world_comm_v3",
                 {"num_good": 2, "num_adversaries": 4, "num_obstacles": 1, "num_food": 2,
                  "num_forests": 2, **_COMMON}, None,
                 "tag with forests, food and a leader that talks"),
        Scenario("collect_treasure", "mpe2.collect_treasure_v1",
                 {"num_collectors": 6, "num_deposits": 2, "num_treasures": 6, **_COMMON}, None,
                 "collectors bring treasures to matching deposits"),
        Scenario("simple_formation", "mpe2.simple_formation_v1",
                 {"N": 4, **_COMMON, "terminate_on_success": False}, "N",
                 "N agents form a circle around a landmark"),
        Scenario("simple_line", "mpe2.simple_line_v1",
                 {"N": 4, **_COMMON, "terminate_on_success": False}, "N",
                 "N agents spread along a line between two landmarks"),
    ]
}


def get_scenario(name: str) -> Scenario:
    """Returns the scenario called `name`.

    Raises:
      KeyError: with the list of known names.
    """
    try:
        return SCENARIOS[name]
    except KeyError:
        raise KeyError(f"unknown scenario {name!r}; choose one of: {', '.join(SCENARIOS)}") from None
