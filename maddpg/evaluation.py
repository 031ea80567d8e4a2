"""Evaluating a saved policy: episode rewards, a rendered GIF, the scenario's benchmark data (numpy only)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from maddpg.acting.actor import Actor
from maddpg.acting.heads import make_heads
from maddpg.acting.policy import NumpyPolicy
from maddpg.checkpoint import Checkpoint, CheckpointError
from maddpg.envs.mpe import make_env
from maddpg.episodes import EpisodeTracker


@dataclass
class EvalResult:
    rewards: np.ndarray  # [episodes] sum over agents
    per_agent: np.ndarray  # [episodes, N]
    agent_ids: list[str]
    benchmark: list | None = None  # per episode, per step: agent -> the scenario's benchmark_data (if recorded)

    @property
    def mean(self) -> float:
        return float(self.rewards.mean())

    @property
    def std(self) -> float:
        return float(self.rewards.std())


def load_actor(ckpt: Checkpoint, seed: int) -> Actor:
    """The checkpoint's actors, exploring as in training (no warm-up: the policy acts from the first step)."""
    spec = ckpt.spec.model_copy(update={"warmup_steps": 0})
    policy = NumpyPolicy(make_heads(ckpt.env_spec, spec.resolved_action_dist), ckpt.actor_weights())
    return Actor.for_run(spec, policy, np.random.default_rng(seed))


def evaluate(ckpt: Checkpoint, episodes: int, *, seed: int = 12345, greedy: bool = False, num_envs: int = 8,
             env_overrides: dict | None = None, benchmark_out: Path | None = None,
             progress: bool = True) -> EvalResult:
    """Runs `episodes` episodes with the checkpoint's policy and returns their rewards.

    Args:
      ckpt: a loaded checkpoint. episodes: how many. seed: env and sampling seed.
      greedy: act with the distribution's mode instead of sampling (training acts by sampling).
      env_overrides: run-spec fields to change (e.g. {"scenario": ...}); the agents must still fit.
      benchmark_out: where to write the scenario's benchmark_data per episode and step (JSON), if wanted.
    """
    spec = ckpt.spec.model_copy(update=env_overrides or {})
    num_envs = min(num_envs, episodes)
    bench = benchmark_out is not None
    # Benchmark data comes from mpe2's own scenario code, so that mode steps the reference engine.
    env = make_env(spec, num_envs=num_envs, extra_kwargs={"benchmark_data": True} if bench else None,
                   engine="mpe2" if bench else None)
    ckpt.check_fits(env.spec)
    actor = load_actor(ckpt, seed)
    new_episode = np.ones(num_envs, bool)
    tracker = EpisodeTracker(num_envs, env.spec.num_agents)
    done_eps, bench_eps = [], []
    bench_now: list[list] = [[] for _ in range(num_envs)]
    obs = env.reset(seed=seed)
    with tqdm(total=episodes, unit="ep", disable=not progress, desc="evaluate") as bar:
        while len(done_eps) < episodes:
            step = env.step(actor.to_env(actor.act(obs, [("evaluate", new_episode)], explore=not greedy)))
            ended = new_episode = step.terminated | step.truncated
            if bench:
                for k in range(num_envs):
                    bench_now[k].append({a: _jsonable(i.get("benchmark_data")) for a, i in env.last_infos[k].items()})
                    if ended[k]:
                        bench_eps.append(bench_now[k])
                        bench_now[k] = []
            obs = step.obs
            finished = tracker.add(step.reward, ended)
            done_eps.extend(finished)
            bar.update(min(len(finished), episodes - bar.n))
    env.close()
    done_eps = done_eps[:episodes]
    if bench:
        Path(benchmark_out).write_text(json.dumps({"scenario": spec.scenario, "episodes": bench_eps[:episodes]}))
    return EvalResult(np.array([e.total for e in done_eps]), np.stack([e.per_agent for e in done_eps]),
                      env.spec.agent_ids, bench_eps[:episodes] if bench else None)


def write_gif(ckpt: Checkpoint, path: Path, *, seed: int = 12345, greedy: bool = False, fps: int = 10) -> int:
    """Renders one episode (mpe2 rgb_array) to a GIF; returns the number of frames."""
    import imageio.v2 as imageio

    env = make_env(ckpt.spec, num_envs=1, render_mode="rgb_array")
    ckpt.check_fits(env.spec)
    actor = load_actor(ckpt, seed)
    obs = env.reset(seed=seed)
    frames = [env.render()]
    first = np.ones(1, bool)
    while True:
        step = env.step(actor.to_env(actor.act(obs, [("gif", first)], explore=not greedy)))
        first = np.zeros(1, bool)
        if step.terminated[0] or step.truncated[0]:
            break
        obs = step.obs
        frames.append(env.render())
    env.close()
    imageio.mimsave(path, frames, duration=1000 / fps, loop=0)
    return len(frames)


def _jsonable(x):
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def display(ckpt: Checkpoint, episodes: int, *, seed: int = 12345, greedy: bool = False) -> None:
    """Renders episodes on screen (mpe2 human mode), as openai/maddpg's --display."""
    import pygame

    try:
        env = make_env(ckpt.spec, num_envs=1, render_mode="human")
        ckpt.check_fits(env.spec)
        actor = load_actor(ckpt, seed)
        obs = env.reset(seed=seed)
        finished, new_episode = 0, np.ones(1, bool)
        while finished < episodes:
            step = env.step(actor.to_env(actor.act(obs, [("display", new_episode)], explore=not greedy)))
            new_episode = step.terminated | step.truncated
            finished += int(new_episode[0])
            obs = step.obs
        env.close()
    except pygame.error as e:
        raise CheckpointError(f"--display needs a screen ({e}); use --gif FILE to render to a file") from None
