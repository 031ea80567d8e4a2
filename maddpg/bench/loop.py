"""Suite `loop`: env steps/s of the single-process training loop on simple_spread N=3 at the original update
schedule (one all-agent update of batch 1024 per 100 env steps), beside mpe2 stepped with random actions."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from maddpg.agent import build_agent
from maddpg.algo.learning import configure_threads
from maddpg.bench.harness import Result, interleaved, write
from maddpg.envs.mpe import make_env
from maddpg.local import Loop
from maddpg.runspec import RunSpec


def run(quick: bool = False, out: Path | None = None) -> dict:
    configure_threads(1)
    # Updates start once the buffer holds one batch instead of 25,600 transitions: the steady state of the
    # original schedule (its cost per update does not depend on how full the buffer is) without the wait.
    spec = RunSpec(scenario="simple_spread", num_agents=3, learning_starts=1024, engine="mpe2")
    loops = {}
    for engine in ("mpe2", "batched"):
        env = make_env(spec, engine=engine)
        agent = build_agent(spec, env.spec)
        loops[engine] = Loop(env, agent, spec.seed)
        while agent.updates < 2:  # fill one batch and compile the update
            loops[engine].step()
    raw = make_env(spec)
    raw.reset(seed=1)
    rng = np.random.default_rng(0)
    seconds = 1.5 if quick else 6.0

    def training_loop(loop: Loop):
        agent = loop.agent

        def measure() -> float:
            steps, updates, start = agent.env_steps, agent.updates, time.perf_counter()
            while time.perf_counter() - start < seconds or agent.updates == updates:
                loop.step()
            return (agent.env_steps - steps) / (time.perf_counter() - start)
        return measure

    def mpe2_random() -> float:
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            raw.step([rng.integers(0, 5, 1) for _ in range(3)])
            count += 1
        return count / (time.perf_counter() - start)

    medians = interleaved({"loop": training_loop(loops["mpe2"]), "loop_batched": training_loop(loops["batched"]),
                           "mpe2": mpe2_random}, rounds=2 if quick else 3)
    results = [
        Result("simple_spread N=3 E=1 engine=mpe2", "env_steps_per_s", medians["loop"], "steps/s", medians["mpe2"],
               note="training loop (act, step, store, 1 update/100 steps) vs mpe2 alone with random actions"),
        Result("simple_spread N=3 E=1 engine=batched", "env_steps_per_s", medians["loop_batched"], "steps/s",
               medians["mpe2"], note="the same loop on the batched engine with one env copy"),
        Result("simple_spread N=3 E=1 engine=mpe2", "updates_per_s", medians["loop"] / spec.update_every,
               "updates/s", note="at the original ratio of one update per 100 env steps"),
    ]
    return write("loop", results, out)
