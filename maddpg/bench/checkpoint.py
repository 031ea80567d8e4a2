"""Suite `checkpoint`: write and restore time of a learner checkpoint (simple_spread N=3 and N=20) in a file
store and in S3 (a real SeaweedFS started here, or moto's server where `weed` cannot run), beside numpy writing
and reading the same arrays to one local file; and what the training loop itself pays per checkpoint."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from maddpg import checkpoint
from maddpg.agent import Agent, build_agent
from maddpg.algo.learning import configure_threads
from maddpg.bench.harness import Result, interleaved, write
from maddpg.envs.mpe import make_env
from maddpg.runspec import RunSpec
from maddpg.storage import FileStore
from maddpg.storage.s3 import S3Store
from maddpg.storage.testing import MotoServer, SeaweedServer

BUCKET = "bench"


def _agent(n: int) -> Agent:
    spec = RunSpec(scenario="simple_spread", num_agents=n, replay_size=1024)
    env = make_env(spec, num_envs=1)
    agent = build_agent(spec, env.spec)
    env.close()
    return agent


def _s3_server(folder: Path):
    """A real SeaweedFS if its binary runs here, else moto's server; and its name for the notes."""
    try:
        server = SeaweedServer(folder)
        server.start()
        return server, "SeaweedFS"
    except (OSError, RuntimeError, TimeoutError):
        server = MotoServer()
        server.start()
        return server, "moto server"


def _ms(fn, reps: int):
    def once() -> float:
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        return (time.perf_counter() - start) / reps * 1e3
    return once


def run(quick: bool = False, out: Path | None = None) -> dict:
    configure_threads(1)
    results, reps, rounds = [], (2 if quick else 5), (2 if quick else 5)
    with tempfile.TemporaryDirectory(prefix="maddpg-bench-ckpt-") as tmp:
        tmp = Path(tmp)
        server, server_name = _s3_server(tmp / "s3")
        try:
            server.make_bucket(BUCKET)
            for n in (3, 20):
                agent = _agent(n)
                arrays, counters = agent.state()
                mb = sum(a.nbytes for a in arrays.values()) / 1e6
                stores = {"file": FileStore(tmp / f"file-{n}"),
                          "s3": S3Store(BUCKET, f"n{n}", endpoint_url=server.endpoint_url,
                                        access_key=server.access_key, secret_key=server.secret_key)}
                plain = tmp / f"plain-{n}.npy.npz"
                count = iter(range(1, 1_000_000))

                def save(store):
                    return lambda: checkpoint.save(store, agent.trainer.spec, agent.env_spec, arrays,
                                                   {**counters, "updates": next(count), "episodes": 0}, keep=3)

                def restore(store):
                    def load():
                        ckpt = checkpoint.Checkpoint(store)  # the newest, as a restarted learner finds it
                        agent.restore(ckpt.arrays, ckpt.counters)
                    return load

                def numpy_write():
                    with open(plain, "wb") as f:
                        np.savez(f, **arrays)

                def numpy_read():
                    with np.load(plain) as data:
                        return {k: data[k] for k in data.files}

                for fn in (save(stores["file"]), save(stores["s3"]), numpy_write, restore(stores["s3"])):
                    fn()  # warm up: first connection, first TF assign
                writes = interleaved({"file": _ms(save(stores["file"]), reps), "s3": _ms(save(stores["s3"]), reps),
                                      "numpy": _ms(numpy_write, reps)}, rounds)
                reads = interleaved({"file": _ms(restore(stores["file"]), reps),
                                     "s3": _ms(restore(stores["s3"]), reps), "numpy": _ms(numpy_read, reps)}, rounds)
                snapshot = interleaved({"state": _ms(agent.state, reps)}, rounds)["state"]
                case = f"simple_spread N={n} ({mb:.1f} MB)"
                for kind, label in (("file", "file store"), ("s3", f"S3 ({server_name})")):
                    results.append(Result(f"{case} {label}", "write_ms", writes[kind], "ms", writes["numpy"],
                                          note="encode, objects, manifest, prune to 3; baseline: np.savez to one "
                                               "local file"))
                    results.append(Result(f"{case} {label}", "restore_ms", reads[kind], "ms", reads["numpy"],
                                          note="list, manifest, objects, SHA-256 check, assign into the agent; "
                                               "baseline: np.load of one local file"))
                results.append(Result(case, "loop_blocked_ms", snapshot, "ms", writes["s3"],
                                      note="what the training loop waits per checkpoint (a snapshot of the "
                                           "arrays; the write runs on the checkpointer thread); baseline: a "
                                           "write to S3 in the loop"))
        finally:
            server.stop()
    return write("checkpoint", results, out, {"s3_server": server_name})
