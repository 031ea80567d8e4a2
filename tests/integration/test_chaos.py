"""Crash-proof runs on real processes: the learner SIGKILLed at chosen moments and restarted, Redis restarted
with and without persistence, explorers killed and frozen; with exact accounting of every chunk and episode
the explorers sent (local queue and Redis)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from maddpg.checkpoint import Checkpoint
from maddpg.launch import free_tcp_address
from maddpg.transport.security import RunKey
from tests.integration.cli import MADDPG
from tests.integration.redis_server import RedisServer

ENVS, CHUNK_LEN, EPISODE_LEN = 4, 10, 25
SPEC = {"scenario": "simple", "num_episodes": 400, "save_rate": 16, "chunk_len": CHUNK_LEN,
        "max_episode_len": EPISODE_LEN, "learning_starts": 400, "batch_size": 64, "num_units": 16}


class Run:
    """A learner and two explorers as processes of the console script, sharing one run key."""

    def __init__(self, folder: Path, queue: str, **spec):
        self.folder, self.queue = folder, queue
        self.run_dir = folder / "run"
        self.address = free_tcp_address()
        self.env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "MADDPG_RUN_KEY": RunKey.generate().text,
                    "MADDPG_LOG_FORMAT": "json", "OPENBLAS_NUM_THREADS": "1"}
        self.spec = {**SPEC, **spec}
        (folder / "spec.json").write_text(json.dumps(self.spec))
        self.learner: subprocess.Popen | None = None
        self.explorers: list[subprocess.Popen] = []

    def start_learner(self) -> None:
        log = open(self.folder / "learner.log", "a")
        self.learner = subprocess.Popen(
            [MADDPG, "learner", "--bind", self.address, "--run-dir", str(self.run_dir), "--spec",
             str(self.folder / "spec.json"), "--queue", self.queue, "--run-id", "chaos", "--quiet"],
            env=self.env, stdout=log, stderr=subprocess.STDOUT)

    def start_explorers(self, count: int = 2) -> None:
        for _ in range(count):
            self.explorers.append(subprocess.Popen(
                [MADDPG, "explorer", "--learner", self.address, "--envs", str(ENVS), "--explorer-id",
                 f"e{len(self.explorers)}", "--request-timeout", "5"],
                env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))

    def finish(self, code: int = 0) -> None:
        assert self.learner.wait(timeout=300) == code, (self.folder / "learner.log").read_text()[-3000:]

    def episodes_from(self, explorer: str) -> int:
        with open(self.run_dir / "rewards.csv", newline="") as f:
            return sum(r["source"].startswith(f"{explorer}/") for r in csv.DictReader(f))

    def episodes(self) -> int:
        path = self.run_dir / "rewards.csv"
        return max(0, len(path.read_text().splitlines()) - 1) if path.exists() else 0

    def checkpoints(self) -> set[str]:
        root = self.run_dir / "checkpoints"
        return {p.name for p in root.glob("ckpt-*")} if root.exists() else set()

    def kill_learner(self) -> None:
        self.learner.send_signal(signal.SIGKILL)
        self.learner.wait()

    def close(self) -> None:
        for p in [self.learner, *self.explorers]:
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()


def _wait(condition, timeout: float, what: str, poll: float = 0.001) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(poll)


def _settled(read, quiet: float, timeout: float) -> int:
    """`read()` once it has not changed for `quiet` seconds (what was in flight has landed)."""
    deadline, value, since = time.monotonic() + timeout, read(), time.monotonic()
    while time.monotonic() - since < quiet:
        if time.monotonic() > deadline:
            raise AssertionError(f"still changing after {timeout:.0f} s")
        time.sleep(0.1)
        if (now := read()) != value:
            value, since = now, time.monotonic()
    return value


def _kill_between_checkpoints(run: Run) -> None:
    target = run.episodes() + 40
    _wait(lambda: run.episodes() >= target, 120, "episodes", poll=0.05)
    run.kill_learner()


def _kill_while_writing(run: Run) -> None:
    """Kills the learner as soon as a new checkpoint folder exists without its manifest."""
    seen = run.checkpoints()
    root = run.run_dir / "checkpoints"

    def writing() -> bool:
        return any(not (root / name / "manifest.json").exists() for name in run.checkpoints() - seen)
    _wait(writing, 120, "a checkpoint being written")
    run.kill_learner()


def _kill_after_manifest(run: Run) -> None:
    """Kills the learner as soon as a new checkpoint's manifest exists (before its chunks are committed)."""
    seen = run.checkpoints()
    root = run.run_dir / "checkpoints"
    _wait(lambda: any((root / n / "manifest.json").exists() for n in run.checkpoints() - seen), 120,
          "a new manifest")
    run.kill_learner()


def _chunk_has_episode_end(seq: int) -> bool:
    """`simple` never terminates: every env of an explorer ends an episode at each multiple of 25 steps."""
    return (CHUNK_LEN * seq) // EPISODE_LEN > (CHUNK_LEN * (seq - 1)) // EPISODE_LEN


def _explorer_totals(run: Run) -> dict[str, int]:
    """Chunks each explorer life that lived to the end says it sent (its last log line)."""
    sent = {}
    for p in run.explorers:
        out, _ = p.communicate(timeout=60)
        if p.returncode == -signal.SIGKILL:
            continue  # killed by the test: no last line
        assert p.returncode == 0, out[-3000:]
        lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        start = next(r for r in lines if "envs of simple" in r["message"])
        life = start["message"].split("(run ")[1].split(")")[0]
        name = start["message"].split()[1]
        last = lines[-1]["message"]
        assert "sent" in last, last
        sent[f"{name}/{life}"] = int(last.split("sent ")[1].split(" chunks")[0])
    return sent


def _check_exactly_once(run: Run, stream_left: dict[str, set[int]] | None = None) -> dict:
    """Checks the final checkpoint against what the explorers sent; returns its counters.

    Every chunk of every explorer life up to the last one consumed was consumed once (or counted lost: a
    Redis without persistence), its transitions are in the env-step count and its episodes in rewards.csv.
    """
    counters = Checkpoint(run.run_dir).counters
    intake: dict[str, int] = counters["intake"]
    sent = _explorer_totals(run)
    assert set(sent) <= set(intake) and len(intake) == len(run.explorers)  # every life was consumed from
    lost = counters["chunks_lost"]
    assert counters["chunks_rejected"] == 0
    consumed = sum(intake.values()) - lost
    assert counters["env_steps"] == consumed * CHUNK_LEN * ENVS  # no chunk counted twice or missed
    with open(run.run_dir / "rewards.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["episode"]) for r in rows] == list(range(1, len(rows) + 1))
    assert len(rows) == counters["episodes"]
    got = Counter((r["source"], int(r["chunk"])) for r in rows)
    expected = {(life, seq): ENVS for life, last in intake.items() for seq in range(1, last + 1)
                if _chunk_has_episode_end(seq)}
    if lost == 0:
        assert got == expected  # each episode from the chunk that carried it, once
    else:  # the lost chunks' episodes are missing, no other
        assert all(n == ENVS and expected.get(key) == ENVS for key, n in got.items())
        missing = len(expected) - len(got)
        assert 0 <= missing <= lost
    for life, last in intake.items():
        if life in sent:
            assert sent[life] >= last
        if stream_left is not None and life in sent:  # what was not consumed is still in the stream
            assert stream_left.get(life, set()) | set(range(1, last + 1)) == set(range(1, sent[life] + 1))
    return counters


def _stream_left(url: str) -> dict[str, set[int]]:
    """The chunks still in the run's stream, per explorer life."""
    import redis

    from maddpg.transport.codec import decode_blob

    left: dict[str, set[int]] = {}
    for _, fields in redis.Redis.from_url(url).xrange("maddpg:chaos:chunks"):
        chunk = decode_blob(fields[b"chunk"])
        left.setdefault(f"{chunk.explorer_id}/{chunk.run_id}", set()).add(chunk.seq)
    return left


KILLS = [_kill_between_checkpoints, _kill_while_writing, _kill_after_manifest]


def _run_with_kills(run: Run) -> None:
    run.start_learner()
    run.start_explorers()
    try:
        for kill in KILLS:
            kill(run)
            run.start_learner()  # resumes by itself from the newest checkpoint
        run.finish()
    except BaseException:
        run.close()
        raise


def test_learner_killed_three_times_local_queue_counts_every_chunk_once(tmp_path):
    run = Run(tmp_path, "local")
    try:
        _run_with_kills(run)
        _check_exactly_once(run)
    finally:
        run.close()


def _redis(folder: Path, persistent: bool = True) -> RedisServer:
    folder.mkdir()
    return RedisServer(folder, persistent=persistent).start()


def test_learner_killed_three_times_redis_queue_counts_every_chunk_once(tmp_path):
    server = _redis(tmp_path / "redis")
    run = Run(tmp_path, server.url)
    try:
        _run_with_kills(run)
        _check_exactly_once(run, _stream_left(server.url))
    finally:
        run.close()
        server.stop()


@pytest.mark.parametrize("persistent", [True, False], ids=["aof", "no-persistence"])
def test_redis_restarted_mid_run(tmp_path, persistent):
    server = _redis(tmp_path / "redis", persistent)
    run = Run(tmp_path, server.url)
    try:
        run.start_learner()
        run.start_explorers()
        _wait(lambda: run.episodes() >= 120, 120, "episodes", poll=0.05)
        server.kill()
        time.sleep(1.0)
        server.start()  # with AOF: everything acknowledged is back; without: the stream and its group are gone
        run.finish()
        counters = _check_exactly_once(run, _stream_left(server.url) if persistent else None)
        if persistent:
            assert counters["chunks_lost"] == 0
        log = (run.folder / "learner.log").read_text()
        assert persistent or "may have been lost" in log  # the loss is stated
    finally:
        run.close()
        server.stop()


def test_an_explorer_killed_and_replaced_does_not_stop_the_run(tmp_path):
    run = Run(tmp_path, "local")
    try:
        run.start_learner()
        run.start_explorers()
        _wait(lambda: run.episodes() >= 60, 120, "episodes", poll=0.05)
        run.explorers[0].send_signal(signal.SIGKILL)
        run.explorers[0].wait()
        run.start_explorers(1)  # its replacement: a new life of its own
        run.finish()
        counters = _check_exactly_once(run)
        assert counters["episodes"] >= run.spec["num_episodes"]
    finally:
        run.close()


def test_an_explorer_frozen_for_30_s_comes_back_and_the_run_goes_on(tmp_path):
    run = Run(tmp_path, "local", num_episodes=1_000_000)
    try:
        run.start_learner()
        run.start_explorers()
        _wait(lambda: run.episodes() >= 60, 120, "episodes", poll=0.05)
        victim = run.explorers[0]
        victim.send_signal(signal.SIGSTOP)
        frozen_at = _settled(lambda: run.episodes_from("e0"), quiet=3.0, timeout=60)  # chunks sent just before
        time.sleep(30)
        assert run.episodes_from("e0") == frozen_at and run.learner.poll() is None
        victim.send_signal(signal.SIGCONT)
        _wait(lambda: run.episodes_from("e0") > frozen_at, 60, "the frozen explorer's next episodes", poll=0.1)
        run.learner.send_signal(signal.SIGTERM)  # as Kubernetes stops a pod: final checkpoint, explorers told
        run.finish(code=130)
        _check_exactly_once(run)
    finally:
        run.close()
