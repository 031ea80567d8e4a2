"""Suite `inference`: actions/s and round-trip latency of the learner's inference server (SEED RL batching over
ZeroMQ ipc://) for K explorer processes x E envs on simple_spread N=3, beside the same actor called one env at
a time in-process; plus the numpy actors beside one tf.function call of the same actors (DESIGN.md section 7).

The server runs in a thread of this process with an Actor holding the agent's actor weights, as the
learner does. The explorers are separate processes (`python -m maddpg.bench.inference --client ...`) that
import no TensorFlow; each sends random observations and waits for the actions, as fast as it can, for a
fixed time, and reports its round-trip times.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np

from maddpg.transport.security import RunKey

# (explorers, envs per explorer): the 1-8 x 16, plus two rows at batch >= 256.
CONFIGS = [(1, 16), (2, 16), (4, 16), (8, 16), (1, 256), (4, 256)]


# ---------------------------------------------------------------- explorer side (no TensorFlow)
def _client_main(address: str, name: str, obs_dims: list[int], key: RunKey) -> int:
    """One benchmark explorer: obeys JSON commands on stdin, answers one JSON line each on stdout.

    Commands: {"cmd": "connect", "envs": E} (hello and warm-up), {"cmd": "go", "seconds": s} (round trips as
    fast as possible for s seconds), {"cmd": "quit"}.
    """
    from maddpg.transport.client import InferenceClient

    rng = np.random.default_rng(zlib.crc32(name.encode()))
    n = len(obs_dims)
    client, pool, reward, done = None, [], None, None
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "quit":
            break
        if cmd["cmd"] == "connect":
            e = int(cmd["envs"])
            if client is not None:
                client.close()
            client = InferenceClient(address, f"{name}-E{e}", e, key=key, request_timeout=10.0,
                                     give_up_after=30.0)
            client.connect()
            pool = [[rng.standard_normal((e, d), dtype=np.float32) for d in obs_dims] for _ in range(8)]
            reward, done = np.zeros((e, n), np.float32), np.zeros(e, bool)
            for k in range(50):  # warm-up
                client.infer(pool[k % 8], reward, done)
            answer = {"ready": True}
        else:
            lat, k = [], 0
            start = time.perf_counter()
            end = start + float(cmd["seconds"])
            t1 = start
            while t1 < end:
                t0 = time.perf_counter()
                client.infer(pool[k % 8], reward, done)
                t1 = time.perf_counter()
                lat.append(t1 - t0)
                k += 1
            answer = {"rounds": k, "seconds": t1 - start, "lat_us": [round(x * 1e6, 1) for x in lat]}
        answer["tensorflow_imported"] = "tensorflow" in sys.modules
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()
    if client is not None:
        client.close()
    return 0


class _Explorers:
    """K benchmark explorer processes driven over their stdin/stdout."""

    def __init__(self, count: int, address: str, obs_dims: list[int], key):
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MADDPG_RUN_KEY": key.text}
        dims = ",".join(map(str, obs_dims))
        self.procs = [subprocess.Popen(
            [sys.executable, "-m", "maddpg.bench.inference", "--client", address, f"bench-{k}", dims],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1, env=env) for k in range(count)]

    def call(self, count: int, cmd: dict) -> list[dict]:
        """Sends `cmd` to the first `count` explorers at once and returns their answers."""
        for p in self.procs[:count]:
            p.stdin.write(json.dumps(cmd) + "\n")
            p.stdin.flush()
        answers = []
        for p in self.procs[:count]:
            line = p.stdout.readline()
            if not line:
                raise RuntimeError(f"benchmark explorer {p.pid} exited with {p.wait()}")
            answer = json.loads(line)
            assert not answer["tensorflow_imported"], "an explorer must not import TensorFlow"
            answers.append(answer)
        return answers

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                try:
                    p.stdin.write('{"cmd": "quit"}\n')
                    p.stdin.close()
                except (BrokenPipeError, OSError):
                    pass
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            p.stdout.close()


# ---------------------------------------------------------------- learner side
def _agent():
    from maddpg.agent import build_agent
    from maddpg.envs.mpe import make_env
    from maddpg.runspec import RunSpec

    spec = RunSpec(scenario="simple_spread", num_agents=3, replay_size=10_000)
    env = make_env(spec, num_envs=1)
    env.close()
    return spec, env.spec, build_agent(spec, env.spec)


def _actor(agent, seed: int):
    """An Actor of the agent's actors with its own generator (the server thread gets its own), past warm-up."""
    from maddpg.acting.actor import Actor
    from maddpg.acting.policy import NumpyPolicy

    spec = agent.trainer.spec
    policy = NumpyPolicy(agent.trainer.heads, agent.trainer.actor_weights())
    return Actor.for_run(spec.model_copy(update={"warmup_steps": 0}), policy, np.random.default_rng(seed))


def _start_server(address: str, spec, env_spec, agent, key):
    from maddpg.transport.server import InferenceServer

    # The learner's defaults, CurveZMQ as in every run.
    server = InferenceServer(address, env_spec, spec.to_json(), _actor(agent, 1), key=key)
    stop = threading.Event()
    thread = threading.Thread(target=server.serve, args=(stop,), daemon=True, name="inference")
    thread.start()
    return server, stop, thread


def _per_env_rate(actor, obs: list[np.ndarray], seconds: float) -> float:
    """Agent actions/s of the actor called one env at a time in-process (the baseline)."""
    n, rows = len(obs), obs[0].shape[0]
    done, start, k = 0, time.perf_counter(), 0
    going_on = [("baseline", np.zeros(1, bool))]
    while time.perf_counter() - start < seconds:
        i = k % rows
        actor.act([o[i:i + 1] for o in obs], going_on)
        done += n
        k += 1
    return done / (time.perf_counter() - start)


def _batched_rate(actor, obs: list[np.ndarray], seconds: float) -> float:
    """Agent actions/s of the actor called on the whole batch in-process (no sockets: the server's ceiling)."""
    n, b = len(obs), obs[0].shape[0]
    done, start = 0, time.perf_counter()
    going_on = [("ceiling", np.zeros(b, bool))]
    while time.perf_counter() - start < seconds:
        actor.act(obs, going_on)
        done += n * b
    return done / (time.perf_counter() - start)


def _measure_config(explorers: _Explorers, server, actor, obs_dims, k: int, e: int, rounds: int,
                    seconds: float, base_seconds: float):
    from maddpg.bench.harness import Result

    n = len(obs_dims)
    explorers.call(k, {"cmd": "connect", "envs": e})
    rng = np.random.default_rng(k * 1000 + e)
    single = [rng.standard_normal((64, d), dtype=np.float32) for d in obs_dims]
    rates, bases, p50s, p99s, batches = [], [], [], [], []
    for _ in range(rounds):  # A B A B: the in-process baseline, then the server
        bases.append(_per_env_rate(actor, single, base_seconds))
        envs0, batches0 = server.stats.envs_served, server.stats.batches
        answers = explorers.call(k, {"cmd": "go", "seconds": seconds})
        rates.append(sum(a["rounds"] * e / a["seconds"] for a in answers) * n)
        lat = np.concatenate([np.asarray(a["lat_us"]) for a in answers]) / 1e3
        p50s.append(float(np.percentile(lat, 50)))
        p99s.append(float(np.percentile(lat, 99)))
        batches.append((server.stats.envs_served - envs0) / max(1, server.stats.batches - batches0))
    full = [rng.standard_normal((k * e, d), dtype=np.float32) for d in obs_dims]
    ceiling = _batched_rate(actor, full, base_seconds)
    case = f"simple_spread N=3, {k} explorers x {e} envs"
    rate, base, batch = statistics.median(rates), statistics.median(bases), statistics.median(batches)
    return [
        Result(case, "actions_per_s", rate, "agent actions/s", base,
               note=f"= {rate / n:,.0f} env steps/s served; mean server batch {batch:.0f} envs; baseline: "
                    f"the same numpy actors called one env at a time in-process; in-process at batch {k * e} "
                    f"without sockets: {ceiling:,.0f} actions/s"),
        Result(case, "rtt_p50_ms", statistics.median(p50s), "ms", note="explorer round trip, median over "
               "requests (target <= 0.3 ms per batch)"),
        Result(case, "rtt_p99_ms", statistics.median(p99s), "ms", note="explorer round trip, 99th percentile"),
    ]


def _tf_vs_numpy(agent, obs_dims, rounds: int, seconds: float):
    """One forward pass of all N actors: numpy (what the server uses) vs one tf.function call."""
    import tensorflow as tf

    from maddpg.bench.harness import Result, interleaved

    actors = agent.trainer.learner.actors
    policy = _actor(agent, 3).policy
    signature = [tf.TensorSpec([None, d], tf.float32) for d in obs_dims]

    @tf.function(input_signature=signature)
    def tf_forward(*obs):
        return [actor(o) for actor, o in zip(actors, obs)]

    results = []
    rng = np.random.default_rng(4)
    for b in (1, 512):
        obs = [rng.standard_normal((b, d), dtype=np.float32) for d in obs_dims]
        got = [t.numpy() for t in tf_forward(*obs)]
        for a, w in zip(got, policy.params(obs)):
            np.testing.assert_allclose(a, w, rtol=1e-4, atol=1e-4)  # the same actors

        def timer(fn):
            def once() -> float:
                calls, start = 0, time.perf_counter()
                while time.perf_counter() - start < seconds:
                    fn()
                    calls += 1
                return (time.perf_counter() - start) / calls * 1e6
            return once

        med = interleaved({"numpy": timer(lambda o=obs: policy.params(o)),
                           "tf": timer(lambda o=obs: [t.numpy() for t in tf_forward(*o)])}, rounds)
        results.append(Result(
            f"simple_spread N=3 actors, batch {b}", "forward_us", med["numpy"], "us", med["tf"],
            ratio=med["tf"] / med["numpy"],
            note="all 3 actors' forward pass: numpy (served by the learner) vs one tf.function call of the same "
                 "actors, numpy in and out (ratio = speed-up of numpy)"))
    return results


def run(quick: bool = False, out: Path | None = None) -> dict:
    from maddpg.algo.learning import configure_threads
    from maddpg.bench.harness import write

    configure_threads(1)
    spec, env_spec, agent = _agent()
    obs_dims = list(env_spec.obs_dims)
    rounds, seconds, base_seconds = (2, 0.5, 0.25) if quick else (3, 2.0, 0.75)
    address = f"ipc:///tmp/maddpg-bench-inference-{os.getpid()}"
    key = RunKey.generate()
    server, stop, thread = _start_server(address, spec, env_spec, agent, key)
    explorers = _Explorers(max(k for k, _ in CONFIGS), address, obs_dims, key)
    actor = _actor(agent, 5)
    results = []
    try:
        for k, e in CONFIGS:
            results += _measure_config(explorers, server, actor, obs_dims, k, e, rounds, seconds, base_seconds)
    finally:
        explorers.close()
        stop.set()
        thread.join(timeout=5)
        Path(address.removeprefix("ipc://")).unlink(missing_ok=True)
    results += _tf_vs_numpy(agent, obs_dims, rounds, 0.3 if quick else 1.0)
    errors = dict(server.stats.errors)
    return write("inference", results, out, extra={"server_errors": errors} if errors else None)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="benchmark explorer process of the inference suite")
    parser.add_argument("--client", nargs=3, metavar=("ADDRESS", "NAME", "OBS_DIMS"), required=True)
    ns = parser.parse_args()
    address_, name_, dims_ = ns.client
    key_ = RunKey.from_text(os.environ["MADDPG_RUN_KEY"])  # set by _Explorers: the server's key
    sys.exit(_client_main(address_, name_, [int(d) for d in dims_.split(",")], key_))
