"""Local distributed runs as real processes: a learner and explorers started through the console script."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from maddpg.launch import LocalRun, free_tcp_address
from maddpg.runspec import RunSpec
from maddpg.transport.security import RunKey
from tests.integration.cli import MADDPG, run
from tests.integration.test_learning import THRESHOLD


def _rewards(run_dir: Path) -> np.ndarray:
    with open(run_dir / "rewards.csv", newline="") as f:
        return np.array([float(r["reward"]) for r in csv.DictReader(f)])


def _episodes(run_dir: Path) -> int:
    path = run_dir / "rewards.csv"
    return max(0, len(path.read_text().splitlines()) - 1) if path.exists() else 0


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_the_explorer_never_imports_tensorflow():
    code = ("import sys, services.explorer.main, maddpg.envs.batched, maddpg.envs.mpe, maddpg.transport.client; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.slow
def test_two_explorers_learn_simple_as_well_as_the_single_process_loop(tmp_path):
    run_dir = tmp_path / "dist"
    result = run("train", "--scenario", "simple", "--num-episodes", "3000", "--seed", "1", "--explorers", "2",
                 "--envs-per-explorer", "16", "--quiet", "--run-dir", str(run_dir))
    assert result.returncode == 0, result.stderr
    rewards = _rewards(run_dir)
    assert 3000 <= len(rewards) < 3000 + 32  # the run ends at the first chunk boundary after 3,000 episodes
    assert rewards[-100:].mean() > THRESHOLD, rewards[-100:].mean()  # the single-process test's threshold
    assert list((run_dir / "checkpoints").glob("ckpt-*/manifest.json"))


def test_sigkill_of_one_explorer_does_not_stop_the_run(tmp_path):
    spec = RunSpec(scenario="simple", num_episodes=400, explorers=2, envs_per_explorer=4, learning_starts=500,
                   batch_size=64, num_units=16)
    local = LocalRun(spec, tmp_path / "run", quiet=True)
    local.start()
    try:
        deadline = time.time() + 120
        while _episodes(tmp_path / "run") < 40 and time.time() < deadline:
            time.sleep(0.2)
        victim = local.explorers[0]
        maps = Path(f"/proc/{victim.pid}/maps").read_text()
        assert "tensorflow" not in maps  # no TensorFlow library mapped into a running explorer
        victim.send_signal(signal.SIGKILL)
        assert local.wait() == 0
    finally:
        local.stop_explorers(grace=0)
        if local.learner.poll() is None:
            local.learner.kill()
    assert _episodes(tmp_path / "run") == 400
    assert local.explorers[0].returncode == -signal.SIGKILL and local.explorers[1].returncode == 0


def test_ctrl_c_stops_every_process_and_keeps_the_run_folder(tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([MADDPG, "train", "--scenario", "simple", "--num-episodes", "100000", "--explorers", "2",
                             "--envs-per-explorer", "4", "--quiet", "--run-dir", str(run_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    deadline = time.time() + 120
    while _episodes(run_dir) < 30 and time.time() < deadline:
        time.sleep(0.2)
    children = _children(proc.pid)
    assert len(children) == 3  # a learner and two explorers
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal does on Ctrl-C
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    time.sleep(0.5)
    assert not [pid for pid in children if _alive(pid)]  # no orphans
    assert (run_dir / "learning_curve.png").exists()
    assert list((run_dir / "checkpoints").glob("ckpt-*/manifest.json"))


def test_explorers_reconnect_to_a_restarted_learner(tmp_path):
    address = free_tcp_address()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "MADDPG_RUN_KEY": RunKey.generate().text}
    tiny = ["--scenario", "simple", "--num-episodes", "60", "--learning-starts", "100", "--batch-size", "32", "--quiet"]

    def learner(name):
        return subprocess.Popen([MADDPG, "learner", "--bind", address, "--run-dir", str(tmp_path / name), *tiny],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    first = learner("first")
    explorer = subprocess.Popen([MADDPG, "explorer", "--learner", address, "--envs", "2", "--explorer-id", "e0",
                                 "--request-timeout", "1", "--give-up-after", "60"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while _episodes(tmp_path / "first") < 5 and time.time() < deadline:
            time.sleep(0.2)
        first.kill()
        first.wait()
        second = learner("second")
        out, err = second.communicate(timeout=120)
        assert second.returncode == 0, err
        assert _episodes(tmp_path / "second") == 60  # fed by the same explorer, which reconnected
        assert explorer.wait(timeout=30) == 0
    finally:
        for p in (first, explorer):
            if p.poll() is None:
                p.kill()


def test_an_explorer_without_a_learner_gives_up_with_a_clear_error():
    result = run("explorer", "--learner", free_tcp_address(), "--request-timeout", "0.5", "--give-up-after", "2",
                 timeout=60, env={"MADDPG_RUN_KEY": RunKey.generate().text})
    assert result.returncode == 2
    lines = [json.loads(line) for line in result.stdout.splitlines()]  # the services log JSON lines on stdout
    assert lines[-1]["level"] == "ERROR" and "did not answer" in lines[-1]["message"]
    assert "Traceback" not in result.stdout + result.stderr
