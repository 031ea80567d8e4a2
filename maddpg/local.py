"""The single-process training loop: one process steps E envs, acts, stores and learns on the original schedule."""

from __future__ import annotations

from pathlib import Path

from maddpg.agent import MADDPGAgent
from maddpg.algo.learning import configure_threads
from maddpg.envs.mpe import make_env
from maddpg.resume import restore
from maddpg.episodes import Episode, EpisodeTracker
from maddpg.runfolder import RunFolder
from maddpg.runspec import RunSpec
from maddpg.tracking import RunTracker, TrainResult
from maddpg.types import Step


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


def train(spec: RunSpec, run_dir: Path, *, progress: bool = True, checkpoint_uri: str | None = None,
          warm_start: str | Path | None = None) -> TrainResult:
    """Trains until `spec.num_episodes` episodes ended (or Ctrl-C), then writes the checkpoint, CSV and plot.

    `checkpoint_uri` chooses the checkpoint store (default: the run folder's checkpoints/). A run whose store
    holds a checkpoint continues from the newest; one that holds none starts from `warm_start` if given (another
    run's checkpoint or folder; see maddpg.resume).
    """
    configure_threads(spec.tf_threads)
    env = make_env(spec)
    agent = MADDPGAgent(spec, env.spec, env.num_envs)
    start = restore(agent, spec, run_dir, checkpoint_uri, warm_start)
    run = RunFolder(run_dir, spec, env.spec, episodes=start.episodes)
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
