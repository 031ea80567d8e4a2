"""A run's progress: live from its run folder (the rewards CSV and checkpoints) when that is on the API's host,
else (kubernetes runs: the folder is in the learner pod) from the counters of the newest checkpoint in the
run's checkpoint store, which the learner writes every `save_rate` episodes and when it stops."""

from __future__ import annotations

import csv
import os
import threading
import time
from pathlib import Path

from maddpg.checkpoint import Checkpoint, CheckpointError, list_checkpoints
from maddpg.runfolder import CHECKPOINTS, REWARDS
from maddpg.storage import StoreError, open_store
from services.api.registry import ACTIVE, RunRecord


def _complete_lines(path: Path, last: int | None) -> tuple[str, list[str]]:
    """The header and the complete data lines (ending in a newline) of a CSV, or only the `last` ones, read
    from the end of the file so that a long run costs no more than a short one."""
    with open(path, "rb") as f:
        header = f.readline()
        if not header.endswith(b"\n"):
            return "", []
        start, size = f.tell(), f.seek(0, os.SEEK_END)
        block = 16_384
        while True:
            pos = start if last is None else max(start, size - block)
            f.seek(pos)
            data = f.read(size - pos)
            if pos == start or data.count(b"\n") > last:
                break
            block *= 4
    if pos > start:
        data = data[data.index(b"\n") + 1:]  # the first line read is cut
    lines = data.decode(errors="replace").split("\n")[:-1]  # the piece after the last newline is being written
    return header.decode(errors="replace").strip(), lines[-last:] if last else lines


def read_rewards(run_dir: Path, last: int | None = None) -> dict[str, list[float]]:
    """The rewards CSV as columns (only its `last` rows, if given). A line being written is skipped."""
    try:
        header, lines = _complete_lines(Path(run_dir) / REWARDS, last)
    except OSError:
        return {}
    if not header:
        return {}
    names = next(csv.reader([header]))
    rows = []
    for row in csv.reader(lines):
        if len(row) != len(names):
            continue
        try:
            rows.append([float(v) for v in row])
        except ValueError:
            continue
    return {name: [r[i] for r in rows] for i, name in enumerate(names)}


def read_progress(run_dir: Path) -> dict:
    """env_steps, episodes, updates, mean_reward_last_100 and newest_checkpoint of a run folder."""
    columns = read_rewards(run_dir, last=100)
    rewards = columns.get("reward", [])
    try:
        checkpoints = list_checkpoints(Path(run_dir) / CHECKPOINTS)
    except StoreError:
        checkpoints = []
    return {
        "source": "run_folder",
        "episodes": int(columns["episode"][-1]) if rewards else 0,
        "env_steps": int(columns["env_steps"][-1]) if rewards else 0,
        "updates": int(columns["updates"][-1]) if rewards else 0,
        "mean_reward_last_100": sum(rewards) / len(rewards) if rewards else None,
        "newest_checkpoint": str(checkpoints[-1]) if checkpoints else None,
    }


def read_checkpoint_progress(uri: str, **store_options) -> dict:
    """episodes, env_steps, updates and newest_checkpoint from the newest checkpoint's manifest at `uri`.

    Args:
      uri: the run's checkpoint store (s3://bucket/prefix/RUN_ID or file:///...).
      store_options: for an S3 store (endpoint_url, credentials).
    """
    try:
        checkpoint = Checkpoint(open_store(uri, **store_options), load_arrays=False)
    except StoreError as e:
        return {"source": "checkpoint", "note": f"cannot read the run's checkpoints: {e}"}
    except CheckpointError:
        return {"source": "checkpoint", "note": f"no complete checkpoint in {uri} yet"}
    counters = checkpoint.counters
    return {"source": "checkpoint", "episodes": counters.get("episodes", 0),
            "env_steps": counters.get("env_steps", 0), "updates": counters.get("updates", 0),
            "newest_checkpoint": str(checkpoint.path)}


class ProgressReader:
    """Progress of registered runs: from the run folder when the record has one on this host (read every time:
    a file read), else from the run's checkpoint store (`endpoints["checkpoints"]`), cached per run.

    A store is read at most every `ttl_s` seconds per run (and again when its status changed), and once for good
    after the run ended; `refresh=False` (listing many runs) never reads a store and answers with what the cache
    holds.

    Args:
      store_options: options of the S3 stores (endpoint_url).
      ttl_s: seconds a store's answer stays fresh. max_entries: cached runs kept.
    """

    def __init__(self, store_options: dict | None = None, ttl_s: float = 10.0, max_entries: int = 4096):
        self._store_options, self._ttl_s, self._max_entries = store_options or {}, ttl_s, max_entries
        self._cache: dict[str, tuple[float, str, dict]] = {}  # run id -> (fresh until, run status then, progress)
        self._lock = threading.Lock()

    def __call__(self, record: RunRecord, refresh: bool = True) -> dict:
        if record.run_dir:
            return read_progress(Path(record.run_dir))
        uri = record.endpoints.get("checkpoints")
        if not uri:
            return {"source": "none", "note": "the run folder is in the learner pod and no checkpoint store is "
                                              "configured (MADDPG_API_CHECKPOINT_URI)"}
        with self._lock:
            until, status, progress = self._cache.get(record.id, (0.0, "", None))
        if progress is not None and (not refresh or (until > time.monotonic() and status == record.status)):
            return progress
        if not refresh:
            return {"source": "checkpoint", "note": "not read yet: GET /runs/{id} reads the newest checkpoint"}
        progress = read_checkpoint_progress(uri, **self._store_options)
        final = record.status not in ACTIVE and "note" not in progress
        with self._lock:
            self._cache.pop(record.id, None)  # re-inserted last: the oldest entries go first
            self._cache[record.id] = (float("inf") if final else time.monotonic() + self._ttl_s, record.status,
                                      progress)
            while len(self._cache) > self._max_entries:
                self._cache.pop(next(iter(self._cache)))
        return progress
