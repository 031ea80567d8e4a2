"""The MADDPG paper's cooperative-navigation metrics (simple_spread) from mpe2's per-step benchmark data.

mpe2's simple_spread `benchmark_data(agent, world)` is `(reward, collisions, min_dists, occupied_landmarks)`:
`min_dists` sums over the landmarks the distance from each landmark to its nearest agent and
`occupied_landmarks` counts the landmarks with an agent within 0.1 (both the same for every agent);
`collisions` counts the other agents touching this one (centres closer than the sum of their sizes).
The original MPE also counted each agent as touching itself, so its per-agent collisions are one higher every
step: summed over agents, 2 x the touching pairs + N. Pairs, as reported here, mean the same in both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SCENARIO = "simple_spread"


@dataclass(frozen=True)
class SpreadMetrics:
    """Per step: the mean over all steps; per episode: the mean over episodes of the sum over their steps."""

    episodes: int
    steps: int  # in all
    distance_per_step: float  # sum over landmarks of the distance to the nearest agent
    distance_per_episode: float
    collisions_per_step: float  # pairs of distinct agents touching
    collisions_per_episode: float
    occupied_per_step: float  # landmarks with an agent within 0.1
    occupied_per_episode: float

    def table(self) -> str:
        """The metrics as a small text table, with what each one counts."""
        rows = [("landmark distance (sum over landmarks of the nearest agent's)", self.distance_per_step,
                 self.distance_per_episode),
                ("colliding agent pairs (mpe2: no agent collides with itself)", self.collisions_per_step,
                 self.collisions_per_episode),
                ("occupied landmarks (an agent within 0.1)", self.occupied_per_step, self.occupied_per_episode)]
        width = max(len(name) for name, _, _ in rows)
        lines = [f"cooperative navigation, {self.episodes} episodes ({self.steps} steps):",
                 f"  {'':{width}}  {'per step':>9}  {'per episode':>11}"]
        lines += [f"  {name:{width}}  {step:9.3f}  {episode:11.3f}" for name, step, episode in rows]
        return "\n".join(lines)


def spread_metrics(episodes: list[list[dict[str, list[float]]]]) -> SpreadMetrics:
    """The metrics of episodes recorded by `maddpg evaluate --benchmark` on simple_spread.

    Args:
      episodes: per episode, per step, agent name -> that agent's benchmark_data tuple.

    Raises:
      ValueError: no episodes, or data that is not simple_spread's.
    """
    if not episodes or not all(episodes):
        raise ValueError("benchmark data: no steps recorded")
    per_episode = []  # [episodes] of [steps, 3]: distance, pairs, occupied
    for episode in episodes:
        steps = []
        for step in episode:
            data = np.asarray(list(step.values()), np.float64)  # [N, 4]
            if data.ndim != 2 or data.shape[1] != 4:
                raise ValueError(f"benchmark data is not {SCENARIO}'s (reward, collisions, min_dists, "
                                 f"occupied_landmarks) per agent: got {list(step.values())[:1]}")
            steps.append((data[0, 2], data[:, 1].sum() / 2, data[0, 3]))  # each touching pair counted by both
        per_episode.append(np.asarray(steps))
    every_step = np.concatenate(per_episode)
    sums = np.stack([e.sum(axis=0) for e in per_episode])
    (d_step, c_step, o_step), (d_ep, c_ep, o_ep) = every_step.mean(axis=0), sums.mean(axis=0)
    return SpreadMetrics(len(episodes), len(every_step), float(d_step), float(d_ep), float(c_step), float(c_ep),
                         float(o_step), float(o_ep))
