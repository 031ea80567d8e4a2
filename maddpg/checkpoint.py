"""Checkpoints: numpy arrays plus a manifest written last, in a store (a folder or S3), so a reader never sees
half of one.

Layout in a store: `ckpt-<updates>-<episodes>/variables.npz`, `rewards.csv.gz` (the run's episode-reward CSV up
to the checkpoint's episode: a run whose folder is lost with its pod keeps its learning curve) and
`manifest.json`. The manifest names each object with its size and SHA-256, checked on read; names without a
manifest are ignored by readers.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from maddpg.envs.spaces import AgentSpec, EnvSpec
from maddpg.runspec import RunSpec
from maddpg.storage import (MANIFEST, CheckpointError, CheckpointStore, StoreError, checkpoint_name, locate,
                            open_store)

__all__ = ["FORMAT", "MANIFEST", "Checkpoint", "CheckpointError", "encode", "list_checkpoints", "resolve", "save"]

FORMAT = 1
VARIABLES = "variables.npz"
REWARDS_CSV = "rewards.csv.gz"

log = logging.getLogger(__name__)


def encode(spec: RunSpec, env_spec: EnvSpec, arrays: dict[str, np.ndarray], counters: dict[str, float],
           rewards_csv: bytes | None = None) -> tuple[str, dict[str, bytes], bytes]:
    """A checkpoint as (name, objects, manifest) ready for `CheckpointStore.put`; `rewards_csv` (the run's
    rewards CSV as written so far) is stored gzipped beside the variables."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    objects = {VARIABLES: buffer.getvalue()}
    if rewards_csv is not None:
        objects[REWARDS_CSV] = gzip.compress(rewards_csv, compresslevel=6, mtime=0)
    manifest = {"format": FORMAT, "created": time.time(), "spec": spec.model_dump(mode="json"),
                "agents": [asdict(a) for a in env_spec.agents], "counters": counters, "variables": VARIABLES,
                "objects": {key: {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
                            for key, data in objects.items()}}
    name = checkpoint_name(counters.get("updates", 0), counters.get("episodes", 0))
    return name, objects, (json.dumps(manifest, indent=2) + "\n").encode()


def save(root: Path | str | CheckpointStore, spec: RunSpec, env_spec: EnvSpec, arrays: dict[str, np.ndarray],
         counters: dict[str, float], keep: int = 3, rewards_csv: bytes | None = None) -> Path | str:
    """Writes a checkpoint to `root` (a folder, a `file://` or `s3://` URI, or a store) and keeps the newest
    `keep`. Returns where it is: a folder for a file store, a URI otherwise.

    Raises:
      StoreError: the checkpoint was not written (the previous ones are untouched).
    """
    store = root if isinstance(root, CheckpointStore) else open_store(root)
    name, objects, manifest = encode(spec, env_spec, arrays, counters, rewards_csv)
    store.put(name, objects, manifest)
    try:
        store.prune(keep)
    except StoreError as e:  # the new checkpoint is whole; old ones stay until the next prune
        log.warning("checkpoint %s written, but pruning older ones failed: %s", name, e)
    return store.location(name)


def list_checkpoints(root: Path | str | CheckpointStore) -> list[Path | str]:
    """Complete checkpoints in `root` (a folder, URI or store), oldest first; folders for a file store."""
    store = root if isinstance(root, CheckpointStore) else open_store(root)
    return [store.location(name) for name in store.list()]


def resolve(path: Path | str) -> Path | str:
    """Finds the checkpoint meant by `path`: a checkpoint, a run folder, or a folder (or URI) of checkpoints."""
    store, name = locate(path)
    return store.location(name)


class Checkpoint:
    """A loaded checkpoint: its run spec, agents, counters and (unless `load_arrays=False`) arrays.

    Args:
      path: a checkpoint, a run folder, a folder of checkpoints, a `file://` or `s3://` URI of one of these,
        or a store (its newest checkpoint).
      load_arrays: also read the arrays (False: the manifest only).
    """

    def __init__(self, path: Path | str | CheckpointStore, load_arrays: bool = True):
        self.store, self.name = locate(path)
        self.path = self.store.location(self.name)
        try:
            self.manifest = json.loads(self.store.get(self.name, MANIFEST))
            if self.manifest.get("format") != FORMAT:
                raise CheckpointError(f"{self.path}: checkpoint format {self.manifest.get('format')} is not {FORMAT}")
            self.spec = RunSpec.from_stored(self.manifest["spec"])
            self.env_spec = EnvSpec(self.spec.scenario, tuple(
                AgentSpec(**{**a, "action_groups": tuple(a["action_groups"])}) for a in self.manifest["agents"]))
            self.counters: dict[str, float] = self.manifest["counters"]
            self.arrays: dict[str, np.ndarray] = self._load_arrays() if load_arrays else {}
        except CheckpointError:
            raise
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"{self.path} is not a readable checkpoint: {e}") from None

    def _object(self, key: str) -> bytes:
        """Object `key`, checked against the manifest's size and SHA-256 (when it lists them)."""
        data = self.store.get(self.name, key)
        expected = self.manifest.get("objects", {}).get(key)  # absent in checkpoints written before stores
        if expected and (len(data) != expected["bytes"] or hashlib.sha256(data).hexdigest() != expected["sha256"]):
            raise CheckpointError(f"{self.path}: {key} does not match its manifest (size or SHA-256): the object "
                                  f"was changed or cut after the manifest was written")
        return data

    def _load_arrays(self) -> dict[str, np.ndarray]:
        with np.load(io.BytesIO(self._object(self.manifest["variables"]))) as npz:
            return {k: npz[k] for k in npz.files}

    def rewards_csv(self) -> bytes | None:
        """The run's rewards CSV up to this checkpoint's episode, or None when the checkpoint holds none
        (written before checkpoints carried it).

        Raises:
          CheckpointError: the object is listed but cannot be read whole.
        """
        if REWARDS_CSV not in self.manifest.get("objects", {}):
            return None
        try:
            return gzip.decompress(self._object(REWARDS_CSV))
        except (OSError, EOFError, StoreError) as e:
            raise CheckpointError(f"{self.path}: {REWARDS_CSV} cannot be read: {e}") from None

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

