"""What a run leaves a researcher: TensorBoard event files, counts that agree everywhere, a terminal free of
TensorFlow's start-up lines. Real runs of the console script, single-process and distributed."""

import csv
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from maddpg.launch import free_tcp_port
from tests.integration.cli import MADDPG
from tests.unit.telemetry.test_summaries import scalars

TINY = ["--scenario", "simple", "--learning-starts", "50", "--batch-size", "32", "--update-every", "10",
        "--num-units", "16"]
RUNS = {
    "single": [*TINY, "--num-episodes", "40", "--save-rate", "15"],
    "distributed": [*TINY, "--num-episodes", "120", "--save-rate", "50", "--explorers", "1",
                    "--envs-per-explorer", "4"],
}
# What TensorFlow 2.18+ prints while loading, whatever TF_CPP_MIN_LOG_LEVEL says (checked on this machine).
START_UP = ("oneDNN custom operations", "absl::InitializeLog", "This TensorFlow binary is optimized",
            "cpu_feature_guard", "To enable the following instructions")


def user_env() -> dict[str, str]:
    """A user's environment: nothing set to quiet TensorFlow."""
    env = {**os.environ, "SDL_VIDEODRIVER": "dummy"}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    return env


def rewards(run_dir: Path) -> list[dict]:
    with open(run_dir / "rewards.csv", newline="") as f:
        return list(csv.DictReader(f))


def per_step(rows: list[dict], column: str) -> list[tuple[int, float]]:
    """The mean of `column` over the episodes that ended at each env step (what TensorBoard gets), in order."""
    steps: dict[int, list[float]] = {}
    for r in rows:
        steps.setdefault(int(r["env_steps"]), []).append(float(r[column]))
    return [(step, pytest.approx(np.mean(v), rel=1e-5, abs=1e-5)) for step, v in steps.items()]


def newest_counters(run_dir: Path) -> dict:
    manifests = sorted((run_dir / "checkpoints").glob("ckpt-*/manifest.json"))
    return json.loads(manifests[-1].read_text())["counters"]


@pytest.fixture(scope="module", params=sorted(RUNS))
def finished(request, tmp_path_factory):
    """A whole run with its progress bar on, as a user starts it: (kind, run folder, stdout, stderr)."""
    run_dir = tmp_path_factory.mktemp(request.param) / "run"
    result = subprocess.run([MADDPG, "train", *RUNS[request.param], "--run-dir", str(run_dir)], env=user_env(),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return request.param, run_dir, result.stdout, result.stderr


def test_a_run_prints_none_of_tensorflows_start_up_lines(finished):
    kind, _, out, err = finished
    for text in START_UP:
        assert text not in out + err, (kind, text)
    assert "Traceback" not in err


def test_the_final_line_rewards_csv_bar_and_checkpoint_count_the_same_updates(finished):
    kind, run_dir, out, err = finished
    rows = rewards(run_dir)
    final = re.search(r"done: (\d+) episodes, (\d+) env steps, (\d+) updates", out)  # the learner's log, or train's
    assert final, out
    episodes, env_steps, updates = map(int, final.groups())
    assert updates > 0
    assert (len(rows), int(rows[-1]["env_steps"]), int(rows[-1]["updates"])) == (episodes, env_steps, updates)
    counters = newest_counters(run_dir)
    assert (counters["episodes"], counters["env_steps"], counters["updates"]) == (episodes, env_steps, updates)
    bar = err.replace("\r", "\n").splitlines()
    last = [line for line in bar if f"{episodes}/{episodes}" in line][-1]
    assert f"{updates:,} updates" in last and "eta 00:00" in last, last


def test_tensorboard_events_hold_every_episode_the_losses_and_the_pace(finished):
    kind, run_dir, _, _ = finished
    rows = rewards(run_dir)
    got = scalars(run_dir)
    assert got["charts/episode_reward"] == per_step(rows, "reward")
    assert got["charts/agent_reward/agent_0"] == per_step(rows, "reward_agent_0")
    if kind == "single":  # one env: a row per episode
        assert len(got["charts/episode_reward"]) == len(rows)
    updates = int(rows[-1]["updates"])
    for tag in ("critic_loss", "actor_loss", "q_value"):
        series = got[f"losses/{tag}/agent_0"]
        # at the first episode's end after 10 more updates: about every 10th update, or fewer (the distributed
        # run inserts 4 updates' worth of transitions per chunk, and an episode ends every 2.5 chunks)
        assert updates // 30 <= len(series) <= updates // 10, (tag, len(series), updates)
        steps = [s for s, _ in series]
        assert steps == sorted(steps) and all(np.isfinite(v) for _, v in series)
    assert got["losses/critic_loss/agent_0"][-1][1] >= 0  # a squared error
    for tag in ("charts/env_steps_per_s", "charts/updates_per_s"):
        assert got[tag] and all(v > 0 for _, v in got[tag]), tag


def test_tensorboard_itself_shows_the_run(finished):
    kind, run_dir, _, _ = finished
    port = free_tcp_port()
    server = subprocess.Popen([str(Path(MADDPG).with_name("tensorboard")), "--logdir", str(run_dir.parent), "--host", "127.0.0.1", "--port", str(port)],
                              env=user_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        tags, deadline = {}, time.monotonic() + 120
        while "run" not in tags and time.monotonic() < deadline:
            time.sleep(1)
            try:
                tags = httpx.get(f"http://127.0.0.1:{port}/data/plugin/scalars/tags", timeout=5).json()
            except (httpx.HTTPError, ValueError):
                continue
        assert {"charts/episode_reward", "losses/critic_loss/agent_0", "charts/updates_per_s"} <= set(tags["run"])
        points = httpx.get(f"http://127.0.0.1:{port}/data/plugin/scalars/scalars",
                           params={"run": "run", "tag": "charts/episode_reward"}, timeout=10).json()
        assert [int(step) for _, step, _ in points] == [step for step, _ in per_step(rewards(run_dir), "reward")]
    finally:
        server.terminate()
        server.wait(timeout=30)


def _events_beyond_checkpoint(run_dir: Path) -> bool:
    """The event files hold episodes that the newest checkpoint does not account for."""
    if not list((run_dir / "checkpoints").glob("ckpt-*/manifest.json")):
        return False
    episodes = scalars(run_dir).get("charts/episode_reward", [])
    return bool(episodes) and episodes[-1][0] > newest_counters(run_dir)["env_steps"]


def _kill_with_events_beyond_checkpoint(args: list[str], run_dir: Path) -> bool:
    """Runs (or resumes) the run and SIGKILLs it once its events run ahead of its newest checkpoint; whether
    they still did when it died (a checkpoint may slip in between)."""
    proc = subprocess.Popen([*args, "--num-episodes", "100000"], env=user_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not _events_beyond_checkpoint(run_dir):
            time.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    return _events_beyond_checkpoint(run_dir)


def test_a_run_killed_and_resumed_shows_each_episode_once_in_tensorboard(tmp_path):
    run_dir = tmp_path / "run"
    # Checkpoints every 1,000 episodes (several seconds apart): events are written every 2 s in between.
    args = [MADDPG, "train", "--scenario", "simple", "--learning-starts", "50", "--batch-size", "32",
            "--update-every", "100", "--num-units", "16", "--num-envs", "16", "--save-rate", "1000", "--quiet",
            "--run-dir", str(run_dir)]
    assert any(_kill_with_events_beyond_checkpoint(args, run_dir) for _ in range(3))
    total = newest_counters(run_dir)["episodes"] + 60
    resumed = subprocess.run([*args, "--num-episodes", str(total)], env=user_env(), capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    rows = rewards(run_dir)
    assert total <= len(rows) < total + 16  # the run ends with the step that ends its last episode (16 envs)
    got = scalars(run_dir)
    assert got["charts/episode_reward"] == per_step(rows, "reward")  # each step once, as rewards.csv has it
    for tag, series in got.items():
        steps = [s for s, _ in series]
        assert steps == sorted(steps), tag  # nothing the dead life wrote after its checkpoint is left
