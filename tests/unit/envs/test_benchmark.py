"""The paper's cooperative-navigation metrics: mpe2's benchmark_data on hand-placed worlds against a numpy reference."""

import itertools

import numpy as np
import pytest
from mpe2 import simple_spread_v3

from maddpg.envs.benchmark import spread_metrics

# Agents (size 0.15: touching closer than 0.3) and landmarks placed by hand.
LANDMARKS = [(0.05, 0.0), (1.0, 1.5), (-1.0, 0.0)]
STEP_A = [(0.0, 0.0), (0.2, 0.0), (1.0, 1.0)]  # one touching pair; landmark 0 occupied
STEP_B = [(0.0, 0.0), (0.1, 0.0), (0.0, 0.1)]  # every pair touching
STEP_C = [(2.0, 2.0), (-2.0, 2.0), (0.0, -2.0)]  # nothing touching, nothing occupied


def reference(agents, landmarks=LANDMARKS, touch=0.3, occupied_within=0.1):
    """What the paper's metrics are, from positions: (distance, touching pairs, occupied landmarks)."""
    agents, landmarks = np.asarray(agents), np.asarray(landmarks)
    nearest = np.linalg.norm(landmarks[:, None] - agents[None], axis=-1).min(axis=1)
    pairs = sum(np.linalg.norm(agents[i] - agents[j]) < touch for i, j in itertools.combinations(range(len(agents)), 2))
    return nearest.sum(), pairs, (nearest < occupied_within).sum()


@pytest.fixture(scope="module")
def world():
    env = simple_spread_v3.parallel_env(N=3, benchmark_data=True)
    env.reset(seed=0)
    yield env.unwrapped
    env.close()


def mpe2_step(raw, agents):
    """mpe2's own benchmark_data of every agent, with the world placed as given."""
    for agent, pos in zip(raw.world.agents, agents, strict=True):
        agent.state.p_pos = np.array(pos, np.float64)
    for landmark, pos in zip(raw.world.landmarks, LANDMARKS, strict=True):
        landmark.state.p_pos = np.array(pos, np.float64)
    return {a.name: list(raw.scenario.benchmark_data(a, raw.world)) for a in raw.world.agents}


def test_the_hand_placed_steps_are_what_the_reference_says():
    assert reference(STEP_A) == pytest.approx((0.05 + 0.5 + 1.0, 1, 1))
    assert reference(STEP_B) == pytest.approx((0.05 + np.hypot(1.0, 1.4) + 1.0, 3, 1))
    assert reference(STEP_C)[1:] == (0, 0)


def test_metrics_per_step_and_per_episode_match_the_reference(world):
    episodes = [[STEP_A, STEP_B], [STEP_C], [STEP_B, STEP_B, STEP_A]]
    metrics = spread_metrics([[mpe2_step(world, s) for s in episode] for episode in episodes])
    ref = [[reference(s) for s in episode] for episode in episodes]
    every_step = np.array([r for episode in ref for r in episode], np.float64)
    per_episode = np.array([np.sum(episode, axis=0) for episode in ref], np.float64)
    assert (metrics.episodes, metrics.steps) == (3, 6)
    assert (metrics.distance_per_step, metrics.collisions_per_step, metrics.occupied_per_step) == pytest.approx(
        tuple(every_step.mean(axis=0)))
    assert (metrics.distance_per_episode, metrics.collisions_per_episode, metrics.occupied_per_episode) == \
        pytest.approx(tuple(per_episode.mean(axis=0)))
    assert metrics.collisions_per_episode == pytest.approx((1 + 3 + 0 + 3 + 3 + 1) / 3)  # pairs, not agents


def test_the_table_names_each_metric_with_both_rates(world):
    text = spread_metrics([[mpe2_step(world, STEP_A)]]).table()
    assert "1 episodes (1 steps)" in text
    assert "colliding agent pairs" in text and "landmark distance" in text and "occupied landmarks" in text
    assert "1.550" in text and "1.000" in text


@pytest.mark.parametrize("episodes", [[], [[]], [[{"adversary_0": 2}]], [[{"agent_0": [0.0, 1.0]}]]])
def test_data_that_is_not_simple_spreads_is_refused(episodes):
    with pytest.raises(ValueError, match="benchmark data"):
        spread_metrics(episodes)
