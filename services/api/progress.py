"""A run's progress read from its run folder: the rewards CSV (written live) and its checkpoints."""

from __future__ import annotations

import csv
from pathlib import Path

from maddpg.checkpoint import list_checkpoints
from maddpg.runfolder import CHECKPOINTS, REWARDS
from maddpg.storage import StoreError


def read_rewards(run_dir: Path) -> dict[str, list[float]]:
    """The rewards CSV as columns. Tolerates a file being written: a cut last line is skipped."""
    path = Path(run_dir) / REWARDS
    try:
        with open(path, newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            rows = []
            for row in reader:
                if header is None or len(row) != len(header):
                    continue
                try:
                    rows.append([float(v) for v in row])
                except ValueError:
                    continue
    except OSError:
        return {}
    if header is None:
        return {}
    return {name: [r[i] for r in rows] for i, name in enumerate(header)}


def read_progress(run_dir: Path) -> dict:
    """env_steps, episodes, updates, mean_reward_last_100 and newest_checkpoint of a run folder."""
    columns = read_rewards(run_dir)
    rewards = columns.get("reward", [])
    last = rewards[-100:]
    try:
        checkpoints = list_checkpoints(Path(run_dir) / CHECKPOINTS)
    except StoreError:
        checkpoints = []
    return {
        "episodes": int(columns["episode"][-1]) if rewards else 0,
        "env_steps": int(columns["env_steps"][-1]) if rewards else 0,
        "updates": int(columns["updates"][-1]) if rewards else 0,
        "mean_reward_last_100": sum(last) / len(last) if last else None,
        "newest_checkpoint": str(checkpoints[-1]) if checkpoints else None,
    }
