"""Suite `checkpoint`: write and restore time of a learner checkpoint (simple_spread N=3 and N=20) in a file
store and in S3 (a real SeaweedFS started here when `weed` runs, see `maddpg.bench.s3_server`; without it the S3
rows are left out and the JSON's `s3_server` says why), beside numpy writing and reading the same arrays to one
local file; and what the training loop itself pays per checkpoint."""

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
from maddpg.bench.s3_server import SeaweedServer

BUCKET = "bench"


def _agent(n: int) -> Agent:
    spec = RunSpec(scenario="simple_spread", num_agents=n, replay_size=1024)
    env = make_env(spec, num_envs=1)
    agent = build_agent(spec, env.spec)
    env.close()
    return agent


def _s3_server(folder: Path) -> tuple[SeaweedServer | None, str]:
    """A SeaweedFS started in `folder` with a bucket, or None where `weed` is missing or cannot run; and what the
    JSON records as the S3 server (its name, or why there is none)."""
    try:
        server = SeaweedServer(folder)
        server.start()
    except (OSError, RuntimeError, TimeoutError) as e:
        return None, f"none, S3 rows left out: {e}"
    try:
        server.make_bucket(BUCKET)
    except BaseException:
        server.stop()
        raise
    return server, "SeaweedFS"


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
            for n in (3, 20):
                results += _case(n, tmp, server, server_name, reps, rounds)
        finally:
            if server is not None:
                server.stop()
    return write("checkpoint", results, out, {"s3_server": server_name})


def _case(n: int, tmp: Path, server: SeaweedServer | None, server_name: str, reps: int, rounds: int) -> list[Result]:
    """The rows of simple_spread with `n` agents: each store's write and restore, and the loop's own cost."""
    agent = _agent(n)
    arrays, counters = agent.state()
    mb = sum(a.nbytes for a in arrays.values()) / 1e6
    stores = {"file": FileStore(tmp / f"file-{n}")}
    if server is not None:
        stores["s3"] = S3Store(BUCKET, f"n{n}", endpoint_url=server.endpoint_url, access_key=server.access_key,
                               secret_key=server.secret_key)
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

    for store in stores.values():
        save(store)()  # warm up: first connection, first TF assign
        restore(store)()
    numpy_write()
    writes = interleaved({**{k: _ms(save(s), reps) for k, s in stores.items()}, "numpy": _ms(numpy_write, reps)},
                         rounds)
    reads = interleaved({**{k: _ms(restore(s), reps) for k, s in stores.items()}, "numpy": _ms(numpy_read, reps)},
                        rounds)
    snapshot = interleaved({"state": _ms(agent.state, reps)}, rounds)["state"]
    case = f"simple_spread N={n} ({mb:.1f} MB)"
    rows = []
    for kind in stores:
        label = "file store" if kind == "file" else f"S3 ({server_name})"
        rows.append(Result(f"{case} {label}", "write_ms", writes[kind], "ms", writes["numpy"],
                           note="encode, objects, manifest, prune to 3; baseline: np.savez to one local file"))
        rows.append(Result(f"{case} {label}", "restore_ms", reads[kind], "ms", reads["numpy"],
                           note="list, manifest, objects, SHA-256 check, assign into the agent; baseline: np.load "
                                "of one local file"))
    slowest = "s3" if "s3" in stores else "file"
    rows.append(Result(case, "loop_blocked_ms", snapshot, "ms", writes[slowest],
                       note="what the training loop waits per checkpoint (a snapshot of the arrays; the write runs "
                            f"on the checkpointer thread); baseline: a write to the {slowest} store in the loop"))
    return rows
