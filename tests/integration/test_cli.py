"""The console script: help, errors without tracebacks, run folders, reproducibility, Ctrl-C."""

import csv
import json
import os
import re
import signal
import subprocess
import time

import imageio.v2 as imageio
import numpy as np
import pytest

from maddpg.runspec import RunSpec
from tests.integration.cli import MADDPG, run

TINY = ["--scenario", "simple", "--num-episodes", "12", "--learning-starts", "50", "--batch-size", "32",
        "--update-every", "10", "--num-units", "16", "--save-rate", "5", "--quiet"]


def _rewards(run_dir):
    with open(run_dir / "rewards.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_help_lists_every_role_and_every_option():
    top = run("--help")
    assert top.returncode == 0
    for role in ("train", "evaluate", "learner", "explorer", "api", "bench", "scenarios"):
        assert role in top.stdout
    train = run("train", "--help")
    assert train.returncode == 0
    for name, field in RunSpec.model_fields.items():
        flag = "--env-kwarg" if name == "env_kwargs" else "--" + name.replace("_", "-")
        assert flag in train.stdout, flag
    for role in ("evaluate", "bench", "scenarios", "learner", "explorer", "api"):
        assert run(role, "--help").returncode == 0


def test_api_help_names_its_options():
    result = run("api", "--help")
    assert result.returncode == 0 and "--host" in result.stdout and "--port" in result.stdout


@pytest.mark.parametrize("args, words", [
    (["train", "--scenario", "nope"], "scenario: unknown scenario 'nope'"),
    (["train", "--batch-size", "-4"], "batch_size"),
    (["train", "--scenario", "simple", "--num-agents", "3"], "num_agents"),
    (["train", "--env-kwarg", "N=x"], "N"),
    (["evaluate", "/nonexistent/run"], "does not exist"),
    # 1e8 transitions of 20 agents (about 1.8 TiB): refused before the buffer is allocated, on any machine.
    (["train", "--scenario", "simple_spread", "--num-agents", "20", "--replay-size", "100000000", "--num-episodes",
      "10000000", "--run-dir", "/tmp/maddpg-never-written"], "lower replay_size to at most"),
])
def test_bad_input_is_a_clear_error_without_traceback(args, words):
    result = run(*args)
    assert result.returncode == 2
    assert words in result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    result = run("train", *TINY, "--seed", "3", "--run-dir", str(run_dir))
    assert result.returncode == 0, result.stderr
    return run_dir, result


def test_a_run_writes_its_folder(tiny_run):
    run_dir, result = tiny_run
    assert "mean episode reward" in result.stdout
    assert RunSpec.load(run_dir / "spec.json").seed == 3
    rows = _rewards(run_dir)
    assert len(rows) == 12 and set(rows[0]) >= {"episode", "env_steps", "reward", "reward_agent_0"}
    assert imageio.imread(run_dir / "learning_curve.png").shape[2] in (3, 4)
    checkpoints = sorted((run_dir / "checkpoints").glob("ckpt-*/manifest.json"))
    assert checkpoints and int(rows[-1]["updates"]) > 0
    # The final checkpoint carries the mean reward too: the API reads it for runs whose folder is in a pod.
    counters = json.loads(checkpoints[-1].read_text())["counters"]
    assert counters["episodes"] == 12
    assert counters["mean_reward_last_100"] == pytest.approx(np.mean([float(r["reward"]) for r in rows]), abs=1e-3)
    assert not list((run_dir / "checkpoints").glob(".tmp-*"))


def test_the_same_seed_gives_the_same_episode_rewards(tiny_run, tmp_path):
    run_dir, _ = tiny_run
    again = run("train", *TINY, "--seed", "3", "--run-dir", str(tmp_path / "again"))
    other = run("train", *TINY, "--seed", "4", "--run-dir", str(tmp_path / "other"))
    assert again.returncode == 0 and other.returncode == 0
    first = [r["reward"] for r in _rewards(run_dir)]
    assert [r["reward"] for r in _rewards(tmp_path / "again")] == first  # updates ran inside these episodes
    assert [r["reward"] for r in _rewards(tmp_path / "other")] != first


def test_a_used_run_folder_is_continued_with_its_spec_and_refused_with_another(tiny_run):
    run_dir, _ = tiny_run
    rows = _rewards(run_dir)
    again = run("train", *TINY, "--seed", "3", "--run-dir", str(run_dir))  # the same run: resumes, already done
    assert again.returncode == 0, again.stderr
    assert _rewards(run_dir) == rows  # nothing counted twice, nothing lost
    other = run("train", *TINY, "--seed", "3", "--lr", "0.5", "--run-dir", str(run_dir))
    assert other.returncode == 2 and "holds a run of another spec" in other.stderr and "lr: 0.01 -> 0.5" in other.stderr
    assert "Traceback" not in other.stderr


def test_a_checkpoint_from_another_scenario_is_refused(tiny_run, tmp_path):
    run_dir, _ = tiny_run
    for args in (["train", "--scenario", "simple_spread", "--restore", str(run_dir), "--run-dir", str(tmp_path / "x")],):
        result = run(*args)
        assert result.returncode == 2
        assert "was trained on simple" in result.stderr and "simple_spread" in result.stderr
        assert "Traceback" not in result.stderr


def test_restore_continues_counting(tiny_run, tmp_path):
    run_dir, _ = tiny_run
    result = run("train", *TINY[:-1], "--num-episodes", "20", "--restore", str(run_dir), "--run-dir",
                 str(tmp_path / "cont"), "--quiet")
    assert result.returncode == 0, result.stderr
    rows = _rewards(tmp_path / "cont")
    assert rows[0]["episode"] == "13" and rows[-1]["episode"] == "20"


def test_a_run_that_lost_its_folder_continues_its_curve_from_the_checkpoint_store(tiny_run, tmp_path):
    """A Kubernetes learner pod replaced on another node starts with an empty run folder: the rewards CSV comes
    back from the newest checkpoint of the run's store, and the run counts on from it."""
    store = tmp_path / "store"
    env = {**os.environ, "MADDPG_CHECKPOINT_URI": store.as_uri()}
    first = run("train", *TINY, "--seed", "3", "--run-dir", str(tmp_path / "pod-1"), env=env)
    assert first.returncode == 0, first.stderr
    rows = _rewards(tmp_path / "pod-1")
    second = run("train", *TINY[:-1], "--num-episodes", "20", "--seed", "3", "--run-dir",
                 str(tmp_path / "pod-2"), "--quiet", env=env)
    assert second.returncode == 0, second.stderr
    continued = _rewards(tmp_path / "pod-2")
    assert continued[:12] == rows and [r["episode"] for r in continued] == [str(i) for i in range(1, 21)]


def test_evaluate_writes_a_gif_and_benchmark_data(tiny_run, tmp_path):
    run_dir, _ = tiny_run
    gif, bench = tmp_path / "ep.gif", tmp_path / "bench.json"
    result = run("evaluate", str(run_dir), "--episodes", "4", "--gif", str(gif), "--benchmark", str(bench), "--quiet")
    assert result.returncode == 0, result.stderr
    assert "mean episode reward:" in result.stdout and "4 episodes" in result.stdout
    frames = imageio.mimread(gif)
    assert "(25 frames)" in result.stdout  # the reset frame and 24 steps; the GIF writer may merge equal frames
    assert len(frames) > 1 and frames[0].shape[:2] == (700, 700)
    assert bench.stat().st_size > 0


def test_evaluate_benchmark_prints_the_papers_metrics_for_simple_spread(tmp_path):
    run_dir, bench = tmp_path / "spread", tmp_path / "bench.json"
    trained = run("train", "--scenario", "simple_spread", "--num-episodes", "2", "--quiet", "--run-dir", str(run_dir))
    assert trained.returncode == 0, trained.stderr
    result = run("evaluate", str(run_dir), "--episodes", "6", "--benchmark", str(bench), "--quiet")
    assert result.returncode == 0, result.stderr
    assert "cooperative navigation, 6 episodes (150 steps)" in result.stdout
    printed = {name: tuple(map(float, re.search(rf"{name}.*?(-?[\d.]+)\s+(-?[\d.]+)$", result.stdout, re.M).groups()))
               for name in ("landmark distance", "colliding agent pairs", "occupied landmarks")}
    episodes = json.loads(bench.read_text())["episodes"]  # mpe2's own benchmark_data, per step and agent
    assert len(episodes) == 6 and all(len(e) == 25 for e in episodes)
    steps = [list(step.values()) for e in episodes for step in e]
    expected = {"landmark distance": [s[0][2] for s in steps],
                "colliding agent pairs": [sum(a[1] for a in s) / 2 for s in steps],  # both agents count a pair
                "occupied landmarks": [s[0][3] for s in steps]}
    for name, values in expected.items():
        assert printed[name] == pytest.approx((np.mean(values), np.sum(values) / 6), abs=1e-3), name


def test_ctrl_c_still_writes_the_run_folder(tmp_path):
    run_dir = tmp_path / "interrupted"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.Popen([MADDPG, "train", "--scenario", "simple", "--num-episodes", "100000", "--quiet",
                             "--run-dir", str(run_dir)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        if (run_dir / "rewards.csv").exists() and len((run_dir / "rewards.csv").read_text().splitlines()) > 30:
            break
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in out
    assert (run_dir / "learning_curve.png").exists()
    assert list((run_dir / "checkpoints").glob("ckpt-*/manifest.json"))
    assert np.isfinite(float(_rewards(run_dir)[-1]["reward"]))
