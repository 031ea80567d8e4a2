"""Where a training run starts from: the newest complete checkpoint of its own store, else `--restore` (another
run's checkpoint), else zero.

A learner (or `maddpg train`) restarted after a crash, or a pod replaced by Kubernetes, finds its run's newest
checkpoint by itself and continues: no flag needed. A checkpoint that cannot be read is skipped for the one
before it (stores keep the newest few).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from maddpg.checkpoint import Checkpoint, CheckpointError
from maddpg.runfolder import CHECKPOINTS
from maddpg.runspec import RunSpec
from maddpg.storage import CheckpointStore, FileStore, open_store

log = logging.getLogger(__name__)


@dataclass
class Start:
    """What a run starts from."""

    episodes: int = 0  # episodes the restored counters account for
    counters: dict = field(default_factory=dict)  # the restored checkpoint's counters (own run only)
    checkpoint: Path | str | None = None  # the checkpoint restored, if any
    own: bool = False  # the checkpoint is this run's own (a resume), not a warm start from another run
    rewards: bytes | None = None  # the rewards CSV the own checkpoint holds (for a run folder that lost its own)

    @property
    def intake(self) -> dict[str, int]:
        """The intake ledger's positions: how far into each explorer life's chunks the run has consumed."""
        return dict(self.counters.get("intake", {}))


def run_store(run_dir: Path, checkpoint_uri: str | None) -> CheckpointStore:
    """The run's checkpoint store: `checkpoint_uri`, or the run folder's checkpoints/."""
    return open_store(checkpoint_uri) if checkpoint_uri else FileStore(Path(run_dir) / CHECKPOINTS)


def newest_readable(store: CheckpointStore) -> Checkpoint | None:
    """The newest checkpoint of `store` that reads whole, or None when it holds none."""
    for name in reversed(store.list()):
        try:
            return Checkpoint(store.location(name))
        except CheckpointError as e:
            log.warning("skipping checkpoint %s: %s", name, e)
    return None


def restore(agent, spec: RunSpec, run_dir: Path, checkpoint_uri: str | None = None,
            warm_start: str | Path | None = None) -> Start:
    """Loads into `agent` the run's newest checkpoint, or `warm_start` (a checkpoint or run folder of another
    run: `--restore`) when the run has none.

    Raises:
      CheckpointError: the checkpoint does not fit the agent, or was trained with a different spec.
    """
    ckpt = newest_readable(run_store(run_dir, checkpoint_uri))
    own = ckpt is not None
    if ckpt is None and warm_start:
        ckpt = Checkpoint(warm_start)
    if ckpt is None:
        return Start()
    if own:
        conflicts = spec.resume_conflicts(ckpt.spec)
        if conflicts:
            raise CheckpointError(f"{ckpt.path} holds a run of another spec ({'; '.join(conflicts)}): choose "
                                  "another --run-dir (or checkpoint store) for a new run, or give the same spec "
                                  "to continue it")
    if ckpt.spec.critic != spec.critic:  # another learner's variables: say so before a list of missing names
        raise CheckpointError(f"{ckpt.path} was trained with --critic {ckpt.spec.critic}, this run has --critic "
                              f"{spec.critic}: give --critic {ckpt.spec.critic} to start from it")
    ckpt.check_fits(agent.env_spec)
    try:
        agent.restore(ckpt.arrays, ckpt.counters)
    except ValueError as e:
        raise CheckpointError(f"{ckpt.path}: {e}") from None
    if own:
        log.info("resuming from %s (%d episodes, %d env steps)", ckpt.path, ckpt.counters.get("episodes", 0),
                 ckpt.counters.get("env_steps", 0))
    rewards = None
    if own:
        try:
            rewards = ckpt.rewards_csv()
        except CheckpointError as e:  # the policy is whole: the run goes on, its curve restarts from the folder's
            log.warning("%s", e)
    return Start(int(ckpt.counters.get("episodes", 0)), dict(ckpt.counters) if own else {}, ckpt.path, own,
                 rewards)
