"""Suite `recovery`: how long a run stops collecting when its learner is SIGKILLed and started again.

A local run (1 learner + 2 explorer processes x 16 envs, simple_spread N=3) trains until it has written a
checkpoint and updates run; then the learner is SIGKILLed and started again at once (as a supervisor or a
Kubernetes Job would), resumes from its newest checkpoint by itself, and the explorers reconnect. Measured:
seconds from the SIGKILL to the new learner's metrics endpoint answering (process start, imports, restore),
and to its first new episode (explorers back, the update compiled). The baseline, in the same run: a cold
start, from starting the processes to the first episode.
"""

from __future__ import annotations

import signal
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

from maddpg.bench.harness import Result, write
from maddpg.launch import LocalRun
from maddpg.runspec import RunSpec


def _spec() -> RunSpec:
    return RunSpec(scenario="simple_spread", num_agents=3, num_episodes=10**9, explorers=2, envs_per_explorer=16,
                   learning_starts=1024, save_rate=64)


def _episodes(port: int) -> float | None:
    """The learner's episode counter from its metrics endpoint; None while it does not answer."""
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1).read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("maddpg_episodes_total"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0  # serving, before its first episode


def _until(condition, timeout: float, what: str, run: LocalRun) -> float:
    start = time.monotonic()
    while not condition():
        if run.learner.poll() is not None:
            raise RuntimeError(f"the learner exited with {run.learner.returncode} while waiting for {what}")
        if time.monotonic() - start > timeout:
            raise RuntimeError(f"no {what} within {timeout:.0f} s")
        time.sleep(0.02)
    return time.monotonic() - start


def _one_round(work: Path) -> tuple[float, float, float]:
    """(cold start to first episode, kill to serving, kill to first new episode) in seconds."""
    run = LocalRun(_spec(), Path(tempfile.mkdtemp(prefix="recovery-", dir=work)) / "run", quiet=True)
    port = run.metrics_ports["learner"]
    started = time.monotonic()
    run.start()
    try:
        _until(lambda: (_episodes(port) or 0) > 0, 300, "first episode", run)
        cold = time.monotonic() - started
        checkpoints = run.run_dir / "checkpoints"
        _until(lambda: any(checkpoints.glob("ckpt-*/manifest.json")), 300, "checkpoint", run)
        time.sleep(2.0)  # updates running, explorers in their steady state
        run.learner.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        run.learner.wait()
        run.start_learner()
        _until(lambda: _episodes(port) is not None, 300, "metrics endpoint", run)
        serving = time.monotonic() - killed
        restored = _episodes(port)
        _until(lambda: (_episodes(port) or 0) > restored, 300, "new episode", run)
        return cold, serving, time.monotonic() - killed
    finally:
        if run.learner.poll() is None:
            run.learner.send_signal(signal.SIGINT)
        run.wait()


def run(quick: bool = False, out: Path | None = None) -> dict:
    rounds = 1 if quick else 3
    with tempfile.TemporaryDirectory() as folder:
        samples = [_one_round(Path(folder)) for _ in range(rounds)]
    cold, serving, recovery = (statistics.median(column) for column in zip(*samples))
    case = "simple_spread N=3, 1 learner + 2 explorers x 16 envs, local queue"
    results = [
        Result(case, "kill_to_first_new_episode_s", recovery, "s", cold,
               note=f"median of {rounds}; baseline: a cold start to its first episode in the same run"),
        Result(case, "kill_to_serving_s", serving, "s", note="SIGKILL to the restarted learner's metrics answering"),
    ]
    return write("recovery", results, out)
