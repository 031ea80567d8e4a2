"""The talking scenarios: simple_crypto, simple_reference and simple_speaker_listener for E worlds."""

from __future__ import annotations

import numpy as np

from maddpg.envs.batched.core import WorldLayout, agent, landmark, norm
from maddpg.envs.batched.scenarios.base import BatchedScenario
from maddpg.envs.batched.scenarios.envfirst import flat, group, rel


def _index_of(items: list, item) -> int:
    for i, x in enumerate(items):
        if x is item:
            return i
    raise ValueError("object not found in the mpe2 world")


class Crypto(BatchedScenario):
    """simple_crypto_v3: alice encodes the goal colour with a key, bob decodes it, eve eavesdrops."""

    def __init__(self):
        agents = [agent(f"{name}_0", movable=False, collide=False, silent=False) for name in ("eve", "bob", "alice")]
        self.layout = WorldLayout(agents, [landmark(f"landmark {i}", collide=False) for i in range(2)], dim_c=4)
        self._colors = np.eye(4)[:2]  # landmark i's colour: one-hot of length dim_c

    def draw(self, rng):
        goal = int(rng.integers(2))
        key = int(rng.integers(2))
        return {"goal": goal, "key": key, "pos": rng.uniform(-1, +1, (5, 2))}

    def observe(self, s):
        goal_color, key = self._colors[s.extra["goal"]], self._colors[s.extra["key"]]
        alice_c = s.comm[:, 2]
        return [group([0], alice_c[:, None]), group([1], np.concatenate([key, alice_c], axis=-1)[:, None]),
                group([2], np.concatenate([goal_color, key], axis=-1)[:, None])]

    def agent_reward(self, s):
        goal_color = self._colors[s.extra["goal"]]
        spoke = (s.comm != 0).any(-1)  # mpe2 skips an all-zero message
        err = np.square(s.comm - goal_color[:, None]).sum(-1)  # [E, 3]
        eve = np.where(spoke[:, 0], -err[:, 0], 0.0)
        good = np.where(spoke[:, 0], err[:, 0], 0.0) + np.where(spoke[:, 1], -err[:, 1], 0.0)
        return np.stack([eve, good, good], axis=1)

    def read_mpe2(self, raw):
        world = raw.world
        key = world.agents[2].key
        keys = [i for i, lm in enumerate(world.landmarks) if lm.color is key]
        if not keys:
            keys = [i for i, lm in enumerate(world.landmarks) if np.array_equal(lm.color, key)]
        return {"goal": _index_of(world.landmarks, world.agents[0].goal_a), "key": keys[0]}

    def write_mpe2(self, raw, extra):
        world = raw.world
        goal = world.landmarks[int(extra["goal"])]
        for ag in world.agents:
            ag.goal_a = goal
        world.agents[1].color = goal.color
        world.agents[2].key = world.landmarks[int(extra["key"])].color


_REFERENCE_COLORS = np.array([[0.75, 0.25, 0.25], [0.25, 0.75, 0.25], [0.25, 0.25, 0.75]])


class Reference(BatchedScenario):
    """simple_reference_v3: each agent tells the other which of three landmarks to reach."""

    def __init__(self, local_ratio: float = 0.5):
        if not 0.0 <= local_ratio <= 1.0:
            raise ValueError(f"local_ratio must lie in [0, 1], got {local_ratio}")
        self.local_ratio = local_ratio
        self.layout = WorldLayout([agent(f"agent_{i}", collide=False, silent=False) for i in range(2)],
                                  [landmark(f"landmark {i}", collide=False) for i in range(3)], dim_c=10)

    def draw(self, rng):
        goal_b = [int(rng.integers(3)), int(rng.integers(3))]
        return {"goal_b": np.array(goal_b), "pos": rng.uniform(-1, +1, (5, 2))}

    def observe(self, s):
        p, vel, lm = s.pos[:, :2], s.vel[:, :2], s.pos[:, 2:]
        goal_color = _REFERENCE_COLORS[s.extra["goal_b"]]  # [E, 2, 3]
        other_c = s.comm[:, ::-1]
        return [group([0, 1], np.concatenate([vel, flat(rel(lm, p)), goal_color, other_c], axis=-1))]

    def agent_reward(self, s):
        e = np.arange(s.num_envs)[:, None]
        target = s.pos[e, 2 + s.extra["goal_b"]]  # [E, 2, 2]: agent i's goal landmark
        return -norm(s.pos[:, 1::-1] - target)  # the other agent's distance to it

    def global_reward(self, s):
        r = self.agent_reward(s)
        return (r[:, 0] + r[:, 1]) / 2

    def read_mpe2(self, raw):
        world = raw.world
        return {"goal_b": np.array([_index_of(world.landmarks, ag.goal_b) for ag in world.agents])}

    def write_mpe2(self, raw, extra):
        world = raw.world
        for i, ag in enumerate(world.agents):
            ag.goal_a = world.agents[1 - i]
            ag.goal_b = world.landmarks[int(extra["goal_b"][i])]
        for i, lm in enumerate(world.landmarks):
            lm.color = _REFERENCE_COLORS[i].copy()
        for i, ag in enumerate(world.agents):
            ag.color = np.array([0.25, 0.25, 0.25])
        for ag in world.agents:
            ag.goal_a.color = ag.goal_b.color


_LISTENER_COLORS = np.array([[0.65, 0.15, 0.15], [0.15, 0.65, 0.15], [0.15, 0.15, 0.65]])


class SpeakerListener(BatchedScenario):
    """simple_speaker_listener_v4: a still speaker names the goal landmark, a silent listener goes there."""

    def __init__(self):
        agents = [agent("speaker_0", movable=False, size=0.075, collide=False, silent=False),
                  agent("listener_0", size=0.075, collide=False)]
        self.layout = WorldLayout(agents, [landmark(f"landmark {i}", size=0.04, collide=False) for i in range(3)],
                                  dim_c=3)

    def draw(self, rng):
        goal = int(rng.integers(3))
        return {"goal": goal, "pos": rng.uniform(-1, +1, (5, 2))}

    def observe(self, s):
        p, vel, lm = s.pos[:, 1:2], s.vel[:, 1:2], s.pos[:, 2:]
        listener = np.concatenate([vel, flat(rel(lm, p)), s.comm[:, :1]], axis=-1)
        return [group([0], _LISTENER_COLORS[s.extra["goal"]][:, None]), group([1], listener)]

    def agent_reward(self, s):
        goal = s.pos[np.arange(s.num_envs), 2 + s.extra["goal"]]
        r = -np.square(s.pos[:, 1] - goal).sum(-1)
        return np.stack([r, r], axis=1)

    def read_mpe2(self, raw):
        world = raw.world
        return {"goal": _index_of(world.landmarks, world.agents[0].goal_b)}

    def write_mpe2(self, raw, extra):
        world = raw.world
        speaker, listener = world.agents
        speaker.goal_a, speaker.goal_b = listener, world.landmarks[int(extra["goal"])]
        listener.goal_a = listener.goal_b = None
        listener.color = speaker.goal_b.color + np.array([0.45, 0.45, 0.45])
