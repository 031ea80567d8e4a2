"""Suite `update`: time of one all-agent MADDPG update (batch 1024) compiled with XLA, beside the same update
run eagerly, for simple_spread N=3 and N=20; the `shared_batch` option (one batch for all agents) beside the
original's batch per agent; and the pooled critic beside the joint one, with either batching. Includes sampling and
gathering the batch from the buffer."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from maddpg.acting.heads import make_heads
from maddpg.algo.learning import configure_threads
from maddpg.bench.harness import Result, interleaved, write
from maddpg.envs.mpe import MPEEnv
from maddpg.runspec import RunSpec
from maddpg.trainer import Trainer
from maddpg.types import Transition


def _filled_trainer(n: int, jit: bool, size: int, shared_batch: bool = False, critic: str = "joint") -> Trainer:
    env = MPEEnv("simple_spread", {"N": n})
    spec = RunSpec(scenario="simple_spread", num_agents=n, replay_size=size, shared_batch=shared_batch,
                   critic=critic)
    trainer = Trainer(spec, env.spec, make_heads(env.spec, spec.resolved_action_dist), jit=jit)
    rng = np.random.default_rng(0)
    dims = env.spec.obs_dims
    acts = [h.action_dim for h in trainer.heads]
    trainer.buffer.add(Transition(
        [rng.normal(size=(size, d)).astype(np.float32) for d in dims],
        [rng.uniform(size=(size, a)).astype(np.float32) for a in acts],
        rng.normal(size=(size, n)).astype(np.float32),
        [rng.normal(size=(size, d)).astype(np.float32) for d in dims],
        np.zeros((size, n), np.float32)))
    env.close()
    return trainer


def _timer(trainer: Trainer, reps: int):
    def once() -> float:
        start = time.perf_counter()
        for _ in range(reps):
            trainer.learn_once()
        return (time.perf_counter() - start) / reps * 1e3
    return once


def run(quick: bool = False, out: Path | None = None) -> dict:
    configure_threads(1)
    results = []
    sizes = [3] if quick else [3, 20]
    for n in sizes:
        fused, eager = _filled_trainer(n, True, 20_000), _filled_trainer(n, False, 20_000)
        compiled = {"fused": fused, "shared": _filled_trainer(n, True, 20_000, shared_batch=True),
                    "pooled": _filled_trainer(n, True, 20_000, critic="pooled"),
                    "pooled_shared": _filled_trainer(n, True, 20_000, shared_batch=True, critic="pooled")}
        eager.learner._update = eager.learner._update_all  # the same Python function, not compiled at all
        for trainer in compiled.values():
            trainer.learn_once()  # compile
        reps = (3 if quick else 20) if n == 3 else (1 if quick else 3)
        timers = {name: _timer(trainer, reps) for name, trainer in compiled.items()}
        med = interleaved({**timers, "eager": _timer(eager, max(1, reps // 4))}, rounds=2 if quick else 3)
        results.append(Result(f"simple_spread N={n} B=1024", "update_ms", med["fused"], "ms", med["eager"],
                              ratio=med["eager"] / med["fused"],
                              note="one update of all agents: XLA-compiled vs eager TensorFlow (ratio = speed-up)"))
        results.append(Result(f"simple_spread N={n} B=1024", "updates_per_s", 1e3 / med["fused"], "updates/s",
                              1e3 / med["eager"]))
        results.append(Result(f"simple_spread N={n} B=1024 shared_batch", "update_ms", med["shared"], "ms",
                              med["fused"], ratio=med["fused"] / med["shared"],
                              note="one batch for all agents vs one per agent (both XLA; ratio = speed-up)"))
        for pooled, joint, batching in (("pooled", "fused", ""), ("pooled_shared", "shared", " shared_batch")):
            results.append(Result(f"simple_spread N={n} B=1024 critic=pooled{batching}", "update_ms", med[pooled],
                                  "ms", med[joint], ratio=med[joint] / med[pooled],
                                  note=f"the pooled critic vs the joint one{batching and ', both with one batch'} "
                                       "(XLA; ratio = speed-up)"))
    results.append(Result("tensorflow threads", "intra_op", tf.config.threading.get_intra_op_parallelism_threads(),
                          "threads"))
    return write("update", results, out)
