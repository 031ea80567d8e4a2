"""Suite `env`: env steps/s of the batched engine against mpe2 stepping the same envs one by one.

One env step = every agent of one env acts once. Both engines step E copies with the same pre-drawn
random actions, interleaved in one run (A B A B ...); plus the memory each env copy holds.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from maddpg.bench.harness import Result, interleaved, rate, write
from maddpg.envs.batched import BatchedMPEEnv, tune_allocator
from maddpg.envs.mpe import MPEEnv

CASES = [  # (case label, scenario, kwargs)
    ("simple_spread N=3", "simple_spread", {"N": 3}),
    ("simple_spread N=20", "simple_spread", {"N": 20}),
    ("simple_tag", "simple_tag", {}),
    ("simple_world_comm", "simple_world_comm", {}),
]
NUM_ENVS = (1, 16, 256, 1024)
QUICK_NUM_ENVS = (1, 256)


def _action_pool(env, size: int, seed: int = 0) -> list[list[np.ndarray]]:
    """Random actions drawn ahead, so that drawing them is not timed."""
    rng = np.random.default_rng(seed)
    pool = []
    for _ in range(size):
        acts = []
        for agent in env.spec.agents:
            if agent.action_kind == "discrete":
                acts.append(rng.integers(0, agent.action_size, env.num_envs))
            else:
                acts.append(rng.random((env.num_envs, agent.action_size), dtype=np.float32))
        pool.append(acts)
    return pool


def _stepper(env, seconds: float):
    """A callable that steps `env` for at least `seconds` and returns env steps per second."""
    pool = _action_pool(env, 16)
    count = [0]

    def one_step() -> int:
        env.step(pool[count[0] % len(pool)])
        count[0] += 1
        return env.num_envs

    for _ in range(1):  # warm up: the first call allocates
        one_step()
    return lambda: rate(one_step, seconds)


def _speed(label: str, scenario: str, kwargs: dict, num_envs: int, seconds: float, rounds: int) -> Result:
    batched = BatchedMPEEnv(scenario, kwargs, num_envs=num_envs)
    baseline = MPEEnv(scenario, kwargs, num_envs=num_envs)
    batched.reset(seed=0)
    baseline.reset(seed=0)
    medians = interleaved({"batched": _stepper(batched, seconds), "mpe2": _stepper(baseline, seconds)}, rounds)
    del batched, baseline
    gc.collect()
    return Result(f"{label} E={num_envs}", "env_steps_per_s", medians["batched"], "env steps/s",
                  baseline=medians["mpe2"],
                  note=f"batched engine vs MPEEnv (mpe2) stepping the same {num_envs} copies one by one; "
                       f"median of {rounds} interleaved rounds")


# Measured in a fresh interpreter, so that one engine's freed memory does not hide the other's.
_MEMORY_PROBE = r"""
import gc, json, os, sys
import numpy as np
engine, scenario, kwargs, n = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4])
from maddpg.envs.batched import BatchedMPEEnv
from maddpg.envs.mpe import MPEEnv
page = os.sysconf("SC_PAGE_SIZE")
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * page
probe = (BatchedMPEEnv if engine == "batched" else MPEEnv)(scenario, kwargs, num_envs=1)  # imports, caches
probe.reset(seed=0)
gc.collect()
before = rss()
env = (BatchedMPEEnv if engine == "batched" else MPEEnv)(scenario, kwargs, num_envs=n)
env.reset(seed=0)
rng = np.random.default_rng(0)
for _ in range(30):
    env.step([rng.integers(0, a.action_size, n) for a in env.spec.agents])
state = env.get_state() if engine == "batched" else None
state_bytes = 0 if state is None else sum(
    a.nbytes for a in [state.pos, state.vel, state.comm, state.steps, *state.extra.values()])
print(json.dumps({"rss": (rss() - before) / n, "state": state_bytes / n}))
"""


def _memory(engine: str, scenario: str, kwargs: dict, n: int) -> dict:
    out = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, engine, scenario, json.dumps(kwargs), str(n)],
                         check=True, capture_output=True, text=True, timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _memory_rows(quick: bool) -> list[Result]:
    rows = []
    n_batched, n_mpe2 = (256, 16) if quick else (1024, 64)
    for label, scenario, kwargs in CASES:
        batched = _memory("batched", scenario, kwargs, n_batched)
        mpe2 = _memory("mpe2", scenario, kwargs, n_mpe2)
        rows.append(Result(f"{label} memory", "bytes_per_env", batched["rss"], "bytes", baseline=mpe2["rss"],
                           note=f"resident memory added per env copy after reset + 30 steps: batched E={n_batched} "
                                f"(state arrays {batched['state']:.0f} B per env; the rest is per-step "
                                f"temporaries shared by all copies) vs mpe2 E={n_mpe2} (each copy holds a "
                                f"700x700 pygame surface)"))
    return rows


def run(quick: bool = False, out: Path | None = None) -> dict:
    """Measures every case; `quick` uses E = 1 and 256 and shorter timings (under a minute)."""
    tune_allocator()  # what BatchedMPEEnv does anyway; explicit here because it is process-wide
    seconds, rounds = (0.25, 2) if quick else (1.0, 3)
    results = []
    for label, scenario, kwargs in CASES:
        for num_envs in QUICK_NUM_ENVS if quick else NUM_ENVS:
            results.append(_speed(label, scenario, kwargs, num_envs, seconds, rounds))
    results += _memory_rows(quick)
    return write("env", results, out, extra={
        "notes": "one env step = every agent of one env acts once; random actions drawn ahead; "
                 "glibc allocator tuned by maddpg.envs.batched.tune_allocator (process-wide)"})
