"""Batched versions of every scenario in `maddpg.envs.scenarios.SCENARIOS`, by name."""

from __future__ import annotations

from typing import Any

from maddpg.envs.batched.scenarios.base import BatchedScenario, ObsGroup
from maddpg.envs.batched.scenarios.basic import Adversary, Push, Simple, Spread
from maddpg.envs.batched.scenarios.comm import Crypto, Reference, SpeakerListener
from maddpg.envs.batched.scenarios.shapes import Formation, Line
from maddpg.envs.batched.scenarios.tag import Tag, WorldComm
from maddpg.envs.batched.scenarios.treasure import CollectTreasure

BATCHED_SCENARIOS: dict[str, type[BatchedScenario]] = {
    "simple": Simple,
    "simple_adversary": Adversary,
    "simple_crypto": Crypto,
    "simple_push": Push,
    "simple_reference": Reference,
    "simple_speaker_listener": SpeakerListener,
    "simple_spread": Spread,
    "simple_tag": Tag,
    "simple_world_comm": WorldComm,
    "collect_treasure": CollectTreasure,
    "simple_formation": Formation,
    "simple_line": Line,
}


def make_scenario(name: str, kwargs: dict[str, Any]) -> BatchedScenario:
    """Builds the batched scenario `name` from its scenario keyword arguments (rendering ones removed)."""
    try:
        cls = BATCHED_SCENARIOS[name]
    except KeyError:
        raise ValueError(f"the batched engine has no scenario {name!r}") from None
    return cls(**kwargs)


__all__ = ["BATCHED_SCENARIOS", "BatchedScenario", "ObsGroup", "make_scenario"]
