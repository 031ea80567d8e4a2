"""The single-process training loop: one process steps E envs, acts, stores and learns on the original schedule."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from maddpg.agent import Agent, build_agent
from maddpg.algo.learning import configure_threads
from maddpg.envs.mpe import make_env
from maddpg.episodes import Episode, EpisodeTracker
from maddpg.memory import check_fits_machine
from maddpg.resume import restore
from maddpg.runfolder import RunFolder
from maddpg.runspec import RunSpec
from maddpg.tracking import RunTracker, TrainResult
from maddpg.types import Step, Transition

STREAM = "local"  # the actor's name for this loop's envs


class Loop:
    """Steps E envs with the agent: act on the current observations, step, store, learn when due.

    The observations acted on are always `Step.obs`, so the first action of an episode comes from its reset
    observation, never from the previous episode's terminal one. Only terminations are stored as done: time
    limits bootstrap, as in the original.
    """

    def __init__(self, env, agent: Agent, seed: int):
        self.env, self.agent = env, agent
        self.tracker = EpisodeTracker(env.num_envs, env.spec.num_agents)
        self.obs = env.reset(seed=seed)
        self._new_episode = np.ones(env.num_envs, bool)

    def step(self) -> tuple[Step, list[Episode]]:
        actor = self.agent.actor
        actions = actor.act(self.obs, [(STREAM, self._new_episode)])
        step = self.env.step(actor.to_env(actions))
        done = np.repeat(step.terminated.astype(np.float32)[:, None], self.env.spec.num_agents, axis=1)
        self.agent.trainer.insert(Transition(self.obs, actions, step.reward, step.next_obs, done))
        self._new_episode = step.terminated | step.truncated
        self.obs = step.obs
        self.agent.update()
        return step, self.tracker.add(step.reward, self._new_episode)


def train(spec: RunSpec, run_dir: Path, *, progress: bool = True, checkpoint_uri: str | None = None,
          warm_start: str | Path | None = None) -> TrainResult:
    """Trains until `spec.num_episodes` episodes ended (or Ctrl-C), then writes the checkpoint, CSV and plot.

    `checkpoint_uri` chooses the checkpoint store (default: the run folder's checkpoints/). A run whose store
    holds a checkpoint continues from the newest; one that holds none starts from `warm_start` if given (another
    run's checkpoint or folder; see maddpg.resume).
    """
    configure_threads(spec.tf_threads)
    env = make_env(spec)
    check_fits_machine(spec, env.spec.agents)
    agent = build_agent(spec, env.spec)
    start = restore(agent, spec, run_dir, checkpoint_uri, warm_start)
    run = RunFolder(run_dir, spec, env.spec, episodes=start.episodes, rewards=start.rewards)
    tracker = RunTracker(run, agent, start.episodes, progress, f"train {spec.scenario}", checkpoint_uri)
    loop = Loop(env, agent, spec.seed)
    try:
        while not tracker.done:  # Ctrl-C sets tracker.stop: the loop ends and the run folder is written
            _, finished = loop.step()
            for episode in finished:
                tracker.record(episode)
            if tracker.checkpoint_due:  # between two steps: a checkpoint never splits one
                tracker.checkpoint()
    finally:
        result = tracker.finish()
        env.close()
    return result
