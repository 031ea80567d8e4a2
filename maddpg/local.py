"""The single-process training loop: one process steps E envs, acts, stores and learns on the original schedule."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from maddpg.agent import MADDPGAgent
from maddpg.algo.learning import configure_threads
from maddpg.checkpoint import Checkpoint
from maddpg.envs.mpe import make_env
from maddpg.episodes import Episode, EpisodeTracker
from maddpg.runfolder import RunFolder
from maddpg.runspec import RunSpec
from maddpg.types import Step


@dataclass
class TrainResult:
    run_dir: Path
    episodes: int
    env_steps: int
    updates: int
    mean_reward: float  # mean episode reward (sum over agents) of the last 100 episodes
    seconds: float
    interrupted: bool
    checkpoint: Path | None


class Loop:
    """Steps E envs with the agent: act on the current observations, step, store, learn when due.

    The observations acted on are always `Step.obs`, so the first action of an episode comes from its reset
    observation, never from the previous episode's terminal one.
    """

    def __init__(self, env, agent: MADDPGAgent, seed: int):
        self.env, self.agent = env, agent
        self.tracker = EpisodeTracker(env.num_envs, env.spec.num_agents)
        self.obs = env.reset(seed=seed)

    def step(self) -> tuple[Step, list[Episode]]:
        actions = self.agent.act(self.obs)
        step = self.env.step(self.agent.env_actions(actions))
        self.agent.observe(self.obs, actions, step)
        self.obs = step.obs
        self.agent.update()
        return step, self.tracker.add(step.reward, step.terminated | step.truncated)


def train(spec: RunSpec, run_dir: Path, *, progress: bool = True) -> TrainResult:
    """Trains until `spec.num_episodes` episodes ended (or Ctrl-C), then writes the checkpoint, CSV and plot."""
    configure_threads(spec.tf_threads)
    env = make_env(spec)
    agent = MADDPGAgent(spec, env.spec, env.num_envs)
    episodes = 0
    resume = False
    if spec.restore:
        ckpt = Checkpoint(Path(spec.restore))
        ckpt.check_fits(env.spec)
        agent.restore(ckpt.arrays, ckpt.counters)
        episodes = int(ckpt.counters.get("episodes", 0))
        resume = Path(run_dir).resolve() in ckpt.path.resolve().parents
    run = RunFolder(run_dir, spec, env.spec, resume=resume)
    loop = Loop(env, agent, spec.seed)
    recent: deque[float] = deque(maxlen=100)
    start, interrupted, saved = time.perf_counter(), False, None
    steps_at_start = agent.env_steps
    bar = tqdm(total=spec.num_episodes, initial=episodes, unit="ep", disable=not progress, dynamic_ncols=True,
               desc=f"train {spec.scenario}")
    try:
        while episodes < spec.num_episodes:
            _, finished = loop.step()
            for episode in finished:
                episodes += 1
                recent.append(episode.total)
                run.record(episodes, episode, agent.env_steps, agent.updates, time.perf_counter() - start)
                bar.update(1)
                if episodes % spec.save_rate == 0:
                    saved = _save(run, agent, episodes)
                if episodes % 100 == 0 or episodes == spec.num_episodes:
                    rate = (agent.env_steps - steps_at_start) / max(time.perf_counter() - start, 1e-9)
                    bar.set_postfix(reward=f"{np.mean(recent):.2f}", steps_per_s=f"{rate:,.0f}",
                                    updates=agent.updates, refresh=False)
                if episodes >= spec.num_episodes:
                    break
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
        if episodes and (saved is None or saved[1] != episodes):
            saved = _save(run, agent, episodes)
        run.plot()
        run.close()
        env.close()
    return TrainResult(Path(run_dir), episodes, agent.env_steps, agent.updates,
                       float(np.mean(recent)) if recent else float("nan"), time.perf_counter() - start, interrupted,
                       saved[0] if saved else None)


def _save(run: RunFolder, agent: MADDPGAgent, episodes: int) -> tuple[Path, int]:
    arrays, counters = agent.state()
    return run.checkpoint(arrays, {**counters, "episodes": episodes}), episodes
