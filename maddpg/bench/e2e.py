"""Suite `e2e`: env steps/s and updates/s of a whole local distributed run (1 learner + 2 explorer processes,
batched engine, one update per 100 env steps) beside the single-process loop (one mpe2 env, per-step
inference), both on simple_spread, in one bench run (DESIGN.md section 7).

The distributed run is started with `maddpg.launch.LocalRun` (the console script, as `maddpg train --explorers
2`) and stopped with Ctrl-C after a fixed time; its rates come from the run folder's rewards.csv (env_steps,
updates, wall_time_s per finished episode) over the steady state: from `warm_s` seconds after the first update
(XLA compilation and process start-up excluded) to the last episode recorded.
"""

from __future__ import annotations

import csv
import signal
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from maddpg.bench.harness import Result, interleaved, write
from maddpg.launch import LocalRun
from maddpg.runspec import RunSpec

# Updates start once the buffer holds one batch instead of batch * episode length, so that the steady state of
# the original schedule is reached at once (an update's cost does not depend on how full the buffer is).
LEARNING_STARTS = 1024


def _spec(n: int, **fields) -> RunSpec:
    return RunSpec(scenario="simple_spread", num_agents=n, learning_starts=LEARNING_STARTS, num_episodes=10**9,
                   **fields)


def _read_rows(path: Path) -> np.ndarray:
    """(wall_time_s, env_steps, updates) per recorded episode."""
    if not path.exists():
        return np.zeros((0, 3))
    text = path.read_text()
    lines = text.splitlines()[: text.count("\n")]  # a line still being written (the run is live) is left out
    rows = [(float(r["wall_time_s"]), int(r["env_steps"]), int(r["updates"])) for r in csv.DictReader(lines)]
    return np.array(rows, dtype=np.float64).reshape(-1, 3)


def steady_rates(rows: np.ndarray, warm_s: float) -> tuple[float, float, float]:
    """Env steps/s, updates/s and the window's length in seconds, from `warm_s` after the first update."""
    updating = rows[rows[:, 2] > 0]
    if len(updating) < 2:
        return float("nan"), float("nan"), 0.0
    window = updating[updating[:, 0] >= updating[0, 0] + warm_s]
    if len(window) < 2 or window[-1, 0] - window[0, 0] <= 0:
        window = updating
    seconds = window[-1, 0] - window[0, 0]
    if seconds <= 0:
        return float("nan"), float("nan"), 0.0
    return (float((window[-1, 1] - window[0, 1]) / seconds), float((window[-1, 2] - window[0, 2]) / seconds),
            float(seconds))


def _peak_rss_mib(pid: int) -> float:
    """The process's peak resident memory (VmHWM) in MiB; nan once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _distributed(n: int, seconds: float, warm_s: float, start_limit: float, work: Path, memory: dict | None = None,
                 **fields):
    """Runs 1 learner + 2 explorers for `seconds` of steady state; returns (env steps/s, updates/s, window s).

    `memory`, if given, receives the peak resident MiB of the learner and of the first explorer.
    """
    spec = _spec(n, explorers=2, envs_per_explorer=16, engine="batched", **fields)
    run_dir = Path(tempfile.mkdtemp(prefix=f"e2e-n{n}-", dir=work))
    run = LocalRun(spec, run_dir, quiet=True)
    csv_path = run_dir / "rewards.csv"
    run.start()
    try:
        deadline = time.monotonic() + start_limit
        while time.monotonic() < deadline:  # until updates run (processes started, update compiled)
            rows = _read_rows(csv_path)
            if len(rows) and rows[-1, 2] > 0:
                break
            if run.learner.poll() is not None:
                raise RuntimeError(f"the learner exited with {run.learner.returncode} before training")
            time.sleep(0.2)
        else:
            raise RuntimeError(f"no update within {start_limit:.0f} s of starting the distributed run")
        time.sleep(warm_s + seconds)
        if memory is not None:
            memory["learner"], memory["explorer"] = _peak_rss_mib(run.learner.pid), _peak_rss_mib(run.explorers[0].pid)
    finally:
        if run.learner.poll() is None:
            run.learner.send_signal(signal.SIGINT)  # as Ctrl-C: the learner stops explorers and checkpoints
        run.wait()
    return steady_rates(_read_rows(csv_path), warm_s)


def _single_process_loop(n: int):
    """The core's loop on one mpe2 env, filled with one batch and its update compiled.

    Returns a timer of the loop ((env steps/s, updates/s) over some seconds) and a timer of the update alone.
    """
    from maddpg.agent import build_agent
    from maddpg.envs.mpe import make_env
    from maddpg.local import Loop

    spec = _spec(n, engine="mpe2")
    env = make_env(spec)
    agent = build_agent(spec, env.spec)
    loop = Loop(env, agent, spec.seed)
    while agent.updates < 2:
        loop.step()

    def measure(seconds: float) -> tuple[float, float]:
        steps, updates, start = agent.env_steps, agent.updates, time.perf_counter()
        while time.perf_counter() - start < seconds or agent.updates == updates:
            loop.step()
        elapsed = time.perf_counter() - start
        return (agent.env_steps - steps) / elapsed, (agent.updates - updates) / elapsed

    def update_alone(seconds: float) -> float:
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds or done < 2:
            agent.trainer.learn_once()  # sample, gather and the compiled update, as the learner's trainer runs it
            done += 1
        return done / (time.perf_counter() - start)

    return measure, update_alone


def _case(n: int, rounds: int, loop_s: float, dist_s: float, warm_s: float, work: Path,
          start_limit: float = 120.0) -> list[Result]:
    loop, update_alone = _single_process_loop(n)
    samples: dict[str, list[tuple[float, float]]] = {"loop": [], "dist": []}
    windows: list[float] = []

    def run_loop() -> float:
        samples["loop"].append(loop(loop_s))
        return samples["loop"][-1][0]

    memory: dict[str, float] = {}

    def run_dist() -> float:
        steps, updates, window = _distributed(n, dist_s, warm_s, start_limit, work, memory)
        samples["dist"].append((steps, updates))
        windows.append(window)
        return steps

    interleaved({"loop": run_loop, "dist": run_dist}, rounds)  # A B A B ...
    alone = update_alone(loop_s)
    loop_steps, loop_updates = (statistics.median(x) for x in zip(*samples["loop"]))
    dist_steps, dist_updates = (statistics.median(x) for x in zip(*samples["dist"]))
    case = f"simple_spread N={n}"
    window = statistics.median(windows)
    where = (f"1 learner + 2 explorers x 16 envs (batched engine), rewards.csv over a {window:.0f} s steady-state "
             "window; baseline: single-process loop, 1 mpe2 env, per-step inference")
    return [
        Result(f"{case} distributed", "env_steps_per_s", dist_steps, "steps/s", loop_steps, note=where),
        Result(f"{case} distributed", "updates_per_s", dist_updates, "updates/s", loop_updates,
               note="one all-agent update (batch 1024) per 100 env steps in both"),
        Result(f"{case} single-process loop", "env_steps_per_s", loop_steps, "steps/s",
               note="maddpg.local.Loop on one mpe2 env (the core's loop)"),
        Result(f"{case} single-process loop", "updates_per_s", loop_updates, "updates/s"),
        Result(f"{case} update alone", "updates_per_s", alone, "updates/s",
               note="Trainer.learn_once() back to back in one process (sampling, gather, XLA update on one "
                    "TensorFlow thread): the trainer's ceiling, so the distributed run's env steps/s is at most "
                    "100x this at the original ratio"),
        Result(f"{case} distributed", "learner_peak_rss", memory.get("learner", float("nan")), "MiB",
               note="peak resident memory (VmHWM) of the learner process (replay buffer of 1M transitions "
                    "allocated lazily, TensorFlow, the compiled update)"),
        Result(f"{case} distributed", "explorer_peak_rss", memory.get("explorer", float("nan")), "MiB",
               note="peak resident memory of one explorer (16 env copies, no TensorFlow)"),
    ]


def _shared_batch_case(n: int, dist_s: float, warm_s: float, work: Path, start_limit: float) -> list[Result]:
    """The distributed run with `shared_batch` (one replay batch for all agents) beside the default, A B."""
    rates = {}
    for shared in (False, True):
        rates[shared] = _distributed(n, dist_s, warm_s, start_limit, work, shared_batch=shared)
    case = f"simple_spread N={n} distributed shared_batch"
    return [Result(case, "env_steps_per_s", rates[True][0], "steps/s", rates[False][0],
                   note="--shared-batch (one batch for every agent's update) vs the original's batch per agent"),
            Result(case, "updates_per_s", rates[True][1], "updates/s", rates[False][1])]


def run(quick: bool = False, out: Path | None = None) -> dict:
    from maddpg.algo.learning import configure_threads

    configure_threads(1)
    results = []
    with tempfile.TemporaryDirectory(prefix="maddpg-bench-e2e-") as tmp:
        if quick:
            results += _case(3, rounds=1, loop_s=3.0, dist_s=8.0, warm_s=2.0, work=Path(tmp))
        else:
            results += _case(3, rounds=2, loop_s=6.0, dist_s=15.0, warm_s=3.0, work=Path(tmp))
            # N=20: one update takes about a second and its XLA compilation about a minute (in each process).
            results += _case(20, rounds=1, loop_s=8.0, dist_s=25.0, warm_s=3.0, work=Path(tmp), start_limit=200.0)
            results += _shared_batch_case(20, dist_s=25.0, warm_s=3.0, work=Path(tmp), start_limit=200.0)
    return write("e2e", results, out)
