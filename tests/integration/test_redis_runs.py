"""Distributed runs with the replay queue in a real Redis, including a learner killed with SIGKILL."""

import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import redis

from maddpg.launch import free_tcp_address, free_tcp_port
from maddpg.replay.redis_queue import stream_key
from maddpg.transport.codec import decode_blob
from maddpg.transport.security import RunKey
from tests.integration.cli import MADDPG, run
from tests.integration.redis_server import RedisServer

TINY = ["--scenario", "simple", "--learning-starts", "500", "--batch-size", "64", "--num-units", "16", "--quiet"]


def _episodes(run_dir: Path) -> int:
    path = run_dir / "rewards.csv"
    return max(0, len(path.read_text().splitlines()) - 1) if path.exists() else 0


def _newest_manifest(run_dir: Path) -> dict:
    paths = sorted((run_dir / "checkpoints").glob("ckpt-*/manifest.json"))
    return json.loads(paths[-1].read_text()) if paths else {}


def test_a_distributed_run_through_redis(tmp_path):
    (tmp_path / "redis").mkdir()
    server = RedisServer(tmp_path / "redis").start()
    try:
        run_dir = tmp_path / "run"
        result = run("train", *TINY, "--num-episodes", "200", "--explorers", "2", "--envs-per-explorer", "4",
                     "--save-rate", "50", "--queue", server.url, "--run-dir", str(run_dir), timeout=300)
        assert result.returncode == 0, result.stderr
        assert _episodes(run_dir) >= 200  # the run ends at the first chunk boundary after 200 episodes
        client = redis.Redis.from_url(server.url)
        key = stream_key("run")
        assert client.xinfo_stream(key)["entries-added"] > 0  # chunks went through Redis...
        # ...and every one the final checkpoint accounts for is acknowledged; those read after the run's last
        # episode stay in the stream, unconsumed, for a resumed run.
        intake = _newest_manifest(run_dir)["counters"]["intake"]
        for entry in client.xpending_range(key, "learner", "-", "+", 1000):
            chunk = decode_blob(client.xrange(key, entry["message_id"], entry["message_id"])[0][1][b"chunk"])
            assert chunk.seq > intake[f"{chunk.explorer_id}/{chunk.run_id}"]
    finally:
        server.stop()


def test_a_learner_killed_mid_run_resumes_and_loses_no_acknowledged_chunk(tmp_path):
    (tmp_path / "redis").mkdir()
    server = RedisServer(tmp_path / "redis").start()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "MADDPG_RUN_KEY": RunKey.generate().text}
    run_dir, address = tmp_path / "run", free_tcp_address()
    spec = [*TINY, "--num-episodes", "100000", "--save-rate", "20", "--chunk-len", "5"]
    envs, chunk_len = 4, 5

    metrics_port = free_tcp_port()

    def learner(*extra):
        return subprocess.Popen([MADDPG, "learner", "--bind", address, "--run-dir", str(run_dir), "--queue",
                                 server.url, "--metrics-port", str(metrics_port), *spec, *extra], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    first = learner()
    explorer = subprocess.Popen([MADDPG, "explorer", "--learner", address, "--envs", str(envs), "--explorer-id",
                                 "e0", "--request-timeout", "2"], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    second = None
    try:
        deadline = time.time() + 120
        while len(list((run_dir / "checkpoints").glob("ckpt-*/manifest.json"))) < 2 and time.time() < deadline:
            time.sleep(0.2)
        client = redis.Redis.from_url(server.url)
        key = stream_key("run")
        while client.xpending(key, "learner")["pending"] < 3 and time.time() < deadline:
            time.sleep(0.01)  # some chunks are in the buffer but in no checkpoint yet
        exposition = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
        assert 'maddpg_replay_queue_unacked{role="learner",run_id="run"}' in exposition  # Redis' own gauges
        assert 'maddpg_replay_queue_depth{role="learner",run_id="run"}' in exposition
        first.send_signal(signal.SIGKILL)  # no final checkpoint, no acknowledgement
        first.wait()
        time.sleep(1.0)
        explorer.send_signal(signal.SIGKILL)  # freeze the stream: nothing more is added
        explorer.wait()
        added = client.xinfo_stream(key)["entries-added"]
        group = client.xinfo_groups(key)[0]
        undelivered = len(client.xrange(key, min=b"(" + group["last-delivered-id"], max="+"))
        unacked = group["pending"] + undelivered  # delivered but not acknowledged, or never delivered
        checkpoint = _newest_manifest(run_dir)["counters"]
        rows = envs * chunk_len
        # Every chunk Redis acknowledged is covered by the checkpoint or still in the stream.
        assert checkpoint["env_steps"] + unacked * rows >= added * rows
        assert unacked > 0

        second = learner()  # resumes by itself from the run's newest checkpoint
        for line in second.stdout:  # logged once the run folder is reopened (and cut back to the checkpoint)
            if "learner serving on" in line:
                break
        deadline = time.time() + 120
        while _episodes(run_dir) <= checkpoint["episodes"] and time.time() < deadline:
            time.sleep(0.2)  # the CSV was cut back to the checkpoint; re-read chunks add episodes again
        time.sleep(2.0)
        second.send_signal(signal.SIGINT)  # stop: the final checkpoint covers what it re-read
        second.communicate(timeout=120)
        assert second.returncode == 130
        final = _newest_manifest(run_dir)["counters"]
        # Every chunk added was consumed once: those the checkpoint held (acknowledged or not) were skipped.
        assert sum(final["intake"].values()) == added
        assert final["env_steps"] == added * rows
        assert final["updates"] >= checkpoint["updates"]
        assert client.xpending(key, "learner")["pending"] == 0
        episodes = [int(line.split(",")[0]) for line in (run_dir / "rewards.csv").read_text().splitlines()[1:]]
        assert episodes == list(range(1, len(episodes) + 1))  # resumed from the checkpoint, no episode twice
    finally:
        for p in (first, explorer, second):
            if p is not None and p.poll() is None:
                p.kill()
        server.stop()
