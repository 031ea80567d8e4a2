"""Checkpoints in a folder: numpy arrays plus a manifest written last, so a reader never sees half of one.

Layout: `<root>/ckpt-<updates>/variables.npz` and `manifest.json`. A checkpoint is built in a temporary
folder and renamed into place in one step; folders without a manifest are ignored by readers.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from maddpg.envs.spaces import AgentSpec, EnvSpec
from maddpg.runspec import RunSpec

FORMAT = 1
MANIFEST = "manifest.json"


class CheckpointError(Exception):
    """A checkpoint is missing, unreadable or does not fit the run."""


def save(root: Path, spec: RunSpec, env_spec: EnvSpec, arrays: dict[str, np.ndarray], counters: dict[str, int],
         keep: int = 3) -> Path:
    """Writes a checkpoint under `root` and keeps the newest `keep`. Returns its folder."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"ckpt-{counters.get('updates', 0):010d}-{counters.get('episodes', 0):08d}"
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    with open(tmp / "variables.npz", "wb") as f:
        np.savez(f, **arrays)
    manifest = {"format": FORMAT, "created": time.time(), "spec": spec.model_dump(mode="json"),
                "agents": [asdict(a) for a in env_spec.agents], "counters": counters, "variables": "variables.npz"}
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in list_checkpoints(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints under `root`, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.name.startswith("ckpt-") and (p / MANIFEST).is_file())


def resolve(path: Path) -> Path:
    """Finds the checkpoint meant by `path`: a checkpoint folder, a run folder, or a folder of checkpoints."""
    path = Path(path)
    if (path / MANIFEST).is_file():
        return path
    for root in (path / "checkpoints", path):
        found = list_checkpoints(root)
        if found:
            return found[-1]
    if not path.exists():
        raise CheckpointError(f"{path} does not exist")
    raise CheckpointError(f"no complete checkpoint in {path} (expected a run folder or a ckpt-* folder)")


class Checkpoint:
    """A loaded checkpoint: its run spec, agents, counters and arrays."""

    def __init__(self, path: Path):
        self.path = resolve(path)
        try:
            manifest = json.loads((self.path / MANIFEST).read_text())
            if manifest.get("format") != FORMAT:
                raise CheckpointError(f"{self.path}: checkpoint format {manifest.get('format')} is not {FORMAT}")
            self.spec = RunSpec.model_validate(manifest["spec"])
            self.env_spec = EnvSpec(self.spec.scenario, tuple(
                AgentSpec(**{**a, "action_groups": tuple(a["action_groups"])}) for a in manifest["agents"]))
            self.counters: dict[str, int] = manifest["counters"]
            with np.load(self.path / manifest["variables"]) as data:
                self.arrays = {k: data[k] for k in data.files}
        except CheckpointError:
            raise
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"{self.path} is not a readable checkpoint: {e}") from None

    def check_fits(self, env_spec: EnvSpec) -> None:
        """Raises CheckpointError unless the checkpoint's agents match `env_spec` (names, sizes, actions)."""
        mine, theirs = self.env_spec, env_spec
        if mine.agents != theirs.agents:
            raise CheckpointError(
                f"checkpoint {self.path} was trained on {mine.scenario} ({mine.describe()}) "
                f"but the env is {theirs.scenario} ({theirs.describe()})")

    def actor_weights(self) -> list[list[tuple[np.ndarray, np.ndarray]]]:
        """Each agent's actor weights as numpy arrays (no TensorFlow needed)."""
        weights = []
        for agent in self.env_spec.agents:
            layers, k = [], 0
            while f"{agent.name}/actor/w{k}" in self.arrays:
                layers.append((self.arrays[f"{agent.name}/actor/w{k}"], self.arrays[f"{agent.name}/actor/b{k}"]))
                k += 1
            if not layers:
                raise CheckpointError(f"{self.path} holds no actor for {agent.name}")
            weights.append(layers)
        return weights
