"""Suite `api` (`maddpg bench api`): latency of the control API through `maddpg api` (uvicorn, one process) on a
free port and an httpx client, with 1,000 runs in its registry, SQLite and Redis (a real redis-server):
p50/p99 of GET /runs?limit=100 and GET /runs/{id}, and requests/s of a POST /runs that validation rejects (no
process is started). Baseline in the same run, on the same server: GET /healthz. The runs have ended, each
with a run folder of 200 episodes; the API reads an ended run's progress once (the warm-up) and keeps it, so
the listing measures the registry, reconciling and the JSON of 100 runs.

It lives with the API because the library never imports a service (DESIGN.md section 2); maddpg.bench
registers it by module name.
"""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

from maddpg.bench.harness import Result, write
from maddpg.bench.queue import start_redis
from maddpg.launch import console_script
from maddpg.runfolder import REWARDS
from services.api.redis_registry import RedisRegistry
from services.api.registry import RunRecord, SqliteRegistry

RUNS, EPISODES = 1000, 200  # runs in the registry; rows in each run's rewards CSV
SPEC = {"scenario": "simple_spread", "num_agents": 3, "explorers": 2, "envs_per_explorer": 16}
REJECTED = {"scenario": "no_such_scenario", "explorers": 1}  # 422: validation fails before anything starts


def _seed(registry, runs_dir: Path) -> None:
    """RUNS ended runs (no live processes to reconcile), each with a run folder holding a rewards CSV."""
    for k in range(RUNS):
        run_dir = runs_dir / f"run-{k:04d}"
        if not run_dir.exists():
            run_dir.mkdir(parents=True)
            rows = "".join(f"{e},{25 * e},{e // 4},{0.1 * e:.1f},25,{-30 + e / 10:.2f},{-30 + e / 10:.2f}\n"
                           for e in range(1, EPISODES + 1))
            (run_dir / REWARDS).write_text(
                "episode,env_steps,updates,wall_time_s,length,reward,reward_agent_0\n" + rows)
        registry.add(RunRecord(id=run_dir.name, status=("finished", "stopped", "failed")[k % 3], spec=SPEC,
                               run_dir=str(run_dir), reason="learner exited with 1" if k % 3 == 2 else None))
    registry.close()


class _Server:
    """`maddpg api` on a free port with the given environment, and a keep-alive client for it."""

    def __init__(self, env: dict[str, str]):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.proc = subprocess.Popen([console_script(), "api", "--host", "127.0.0.1", "--port", str(port)],
                                     env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
        deadline = time.monotonic() + 60
        while True:
            try:
                if self.client.get("/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"maddpg api did not become ready (exit code {self.proc.returncode})")
            time.sleep(0.2)

    def timed(self, method: str, path: str, count: int, **kwargs) -> tuple[list[float], float]:
        """Sends `count` requests one after another; returns each one's seconds and the requests per second."""
        samples, start = [], time.perf_counter()
        for _ in range(count):
            t0 = time.perf_counter()
            self.client.request(method, path, **kwargs).read()
            samples.append(time.perf_counter() - t0)
        return samples, count / (time.perf_counter() - start)

    def close(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)


def _percentile(samples: list[float], q: float) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[q - 1] * 1e3  # ms


def run(quick: bool = False, out: Path | None = None) -> dict:
    rounds, n_list, n_small = (2, 25, 150) if quick else (5, 100, 600)
    folder = Path(tempfile.mkdtemp(prefix="maddpg-bench-api-"))
    redis_proc, url = start_redis(str(folder))
    servers: dict[str, _Server] = {}
    try:
        _seed(SqliteRegistry(folder / "sqlite" / "registry.sqlite3"), folder / "runs")
        _seed(RedisRegistry(url), folder / "runs")
        servers["SQLite"] = _Server({"MADDPG_API_RUNS_DIR": str(folder / "sqlite")})
        servers["Redis"] = _Server({"MADDPG_API_RUNS_DIR": str(folder / "redis"), "REDIS_URL": url})
        cases = {}
        for name, server in servers.items():
            cases[f"healthz {name}"] = (server, "GET", "/healthz", n_small, {})
            cases[f"list {name}"] = (server, "GET", "/runs", n_list, {"params": {"limit": 100}})
            cases[f"get {name}"] = (server, "GET", "/runs/run-0500", n_small, {})
        cases["post SQLite"] = (servers["SQLite"], "POST", "/runs", n_small, {"json": REJECTED})
        for server, method, path, _, kwargs in cases.values():  # warm-up: imports, caches, connections
            server.timed(method, path, 5, **kwargs)
        samples = {key: [] for key in cases}
        rates = {key: [] for key in cases}
        for _ in range(rounds):  # interleaved: every case once per round
            for key, (server, method, path, count, kwargs) in cases.items():
                took, rate = server.timed(method, path, count, **kwargs)
                samples[key] += took
                rates[key].append(rate)
    finally:
        for server in servers.values():
            server.close()
        redis_proc.terminate()
        redis_proc.wait(10)
        shutil.rmtree(folder, ignore_errors=True)

    results = []
    note = "baseline: GET /healthz on the same server; one client, one request at a time"
    for name in servers:
        base = samples[f"healthz {name}"]
        for key, case in ((f"list {name}", f"GET /runs?limit=100 ({RUNS:,} runs, {name})"),
                          (f"get {name}", f"GET /runs/{{id}} ({RUNS:,} runs, {name})")):
            for q in (50, 99):
                results.append(Result(case, f"p{q}_ms", _percentile(samples[key], q), "ms",
                                      _percentile(base, q), note=note))
    results.append(Result("POST /runs rejected by validation (422, SQLite)", "requests_per_s",
                          statistics.median(rates["post SQLite"]), "requests/s",
                          statistics.median(rates["healthz SQLite"]), note=note))
    return write("api", results, out, {"server": "maddpg api (uvicorn, 1 process, JSON access log)",
                                       "runs_in_registry": RUNS, "rewards_rows_per_run": EPISODES})
