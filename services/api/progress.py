"""A run's progress: live from its run folder (the rewards CSV and checkpoints) when that is on the API's host,
else (kubernetes runs: the folder is in the learner pod) from the counters of the newest checkpoint in the
run's checkpoint store, which the learner writes every `save_rate` episodes and when it stops."""

from __future__ import annotations

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


def _table(run_dir: Path, last: int | None) -> tuple[list[str], list[list[str]]]:
    """The column names and the complete rows (as many fields as names) of a run folder's rewards CSV.

    The CSV holds numbers and a source name without commas or quotes (RunFolder writes it), so a comma splits
    fields.
    """
    try:
        header, lines = _complete_lines(Path(run_dir) / REWARDS, last)
    except OSError:
        return [], []
    names = header.split(",") if header else []
    return names, [fields for fields in (line.split(",") for line in lines) if len(fields) == len(names)]


def _numbers(rows: list[list[str]], columns: list[int]) -> list[list[float]]:
    """The given columns of each row as floats; a row with a field that is not a number is skipped."""
    values = []
    for row in rows:
        try:
            values.append([float(row[i]) for i in columns])
        except ValueError:
            continue
    return values


def _columns(names: list[str], rows: list[list[str]]) -> dict[str, list[float]]:
    numeric = [name for name in names if name != "source"]  # the explorer life that sent the episode: text
    values = _numbers(rows, [names.index(name) for name in numeric])
    return {name: [v[i] for v in values] for i, name in enumerate(numeric)}


def read_rewards(run_dir: Path) -> dict[str, list[float]]:
    """The rewards CSV as columns. A line being written is skipped."""
    return _columns(*_table(run_dir, None))


def read_checkpoint_rewards(uri: str, **store_options) -> dict[str, list[float]]:
    """The rewards CSV stored in the newest checkpoint at `uri` as columns (empty when there is no checkpoint,
    or it predates checkpoints carrying the CSV); what the learner recorded after that checkpoint is not there."""
    try:
        text = Checkpoint(open_store(uri, **store_options), load_arrays=False).rewards_csv()
    except CheckpointError:  # no complete checkpoint yet, an unreadable store or object
        return {}
    if text is None:
        return {}
    header, *lines = text.decode(errors="replace").splitlines()
    names = header.split(",")
    return _columns(names, [fields for fields in (line.split(",") for line in lines) if len(fields) == len(names)])


def read_progress(run_dir: Path) -> dict:
    """env_steps, episodes, updates, mean_reward_last_100 and newest_checkpoint of a run folder, from the last
    100 rows of its rewards CSV (read from the end: a long run costs no more than a short one)."""
    names, rows = _table(run_dir, 100)
    wanted = ("episode", "env_steps", "updates", "reward")
    values = _numbers(rows, [names.index(c) for c in wanted]) if set(wanted) <= set(names) else []
    try:
        checkpoints = list_checkpoints(Path(run_dir) / CHECKPOINTS)
    except StoreError:
        checkpoints = []
    return {
        "source": "run_folder",
        "episodes": int(values[-1][0]) if values else 0,
        "env_steps": int(values[-1][1]) if values else 0,
        "updates": int(values[-1][2]) if values else 0,
        "mean_reward_last_100": sum(v[3] for v in values) / len(values) if values else None,
        "newest_checkpoint": str(checkpoints[-1]) if checkpoints else None,
    }


def read_checkpoint_progress(uri: str, **store_options) -> dict:
    """episodes, env_steps, updates, mean_reward_last_100 (None in checkpoints that predate it) and
    newest_checkpoint from the newest checkpoint's manifest at `uri`.

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
            "mean_reward_last_100": counters.get("mean_reward_last_100"),
            "newest_checkpoint": str(checkpoint.path)}


class ProgressReader:
    """Progress of registered runs: from the run folder when the record has one on this host, else from the
    run's checkpoint store (`endpoints["checkpoints"]`), with a cache per run.

    A running run's folder is read every time (live; a few file reads). A store is read at most every `ttl_s`
    seconds per run, or again when the run's record changed (its status, or an update such as a resume);
    `refresh=False` (listing many runs) never reads a store and answers with what the cache holds. Once a run
    ended, its progress is read once and kept (until a resume and a new end change its record).

    Args:
      store_options: options of the S3 stores (endpoint_url).
      ttl_s: seconds a store's answer stays fresh. max_entries: cached runs kept, the least recently read go.
    """

    def __init__(self, store_options: dict | None = None, ttl_s: float = 10.0, max_entries: int = 4096):
        self._store_options, self._ttl_s, self._max_entries = store_options or {}, ttl_s, max_entries
        self._cache: dict[str, tuple[float, tuple, dict]] = {}  # run id -> (fresh until, record then, progress)
        self._lock = threading.Lock()

    def __call__(self, record: RunRecord, refresh: bool = True) -> dict:
        version = (record.status, record.updated)
        with self._lock:
            until, cached, progress = self._cache.get(record.id, (0.0, (), None))
        if progress is not None and until > time.monotonic() and cached == version:
            return progress
        from_store = not record.run_dir
        if from_store and not refresh:
            return progress or {"source": "checkpoint", "note": "not read yet: GET /runs/{id} reads the newest "
                                                                "checkpoint"}
        if not from_store:
            progress = read_progress(Path(record.run_dir))
        elif record.endpoints.get("checkpoints"):
            progress = read_checkpoint_progress(record.endpoints["checkpoints"], **self._store_options)
        else:
            return {"source": "none", "note": "the run folder is in the learner pod and no checkpoint store is "
                                              "configured (MADDPG_API_CHECKPOINT_URI)"}
        final = record.status not in ACTIVE and "note" not in progress
        if final or from_store:
            with self._lock:
                self._cache.pop(record.id, None)  # re-inserted last: the oldest entries go first
                self._cache[record.id] = (float("inf") if final else time.monotonic() + self._ttl_s,
                                          version, progress)
                while len(self._cache) > self._max_entries:
                    self._cache.pop(next(iter(self._cache)))
        return progress

    def rewards(self, record: RunRecord) -> dict[str, list[float]]:
        """The run's rewards CSV as columns: live from its run folder on this host, else the copy in the newest
        checkpoint of its store (empty when neither exists)."""
        if record.run_dir:
            return read_rewards(Path(record.run_dir))
        if record.endpoints.get("checkpoints"):
            return read_checkpoint_rewards(record.endpoints["checkpoints"], **self._store_options)
        return {}
