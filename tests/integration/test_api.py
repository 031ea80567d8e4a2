"""The control API as a user meets it: `maddpg api` (real uvicorn) on a free port, a real HTTP client, a tiny
run started through the local launcher, watched, stopped gracefully, with no process left behind."""

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.integration.cli import MADDPG

TOKEN = "test-token"
TINY = {"scenario": "simple", "num_episodes": 100_000, "explorers": 1, "envs_per_explorer": 2,
        "learning_starts": 100, "batch_size": 32, "num_units": 16, "update_every": 10, "save_rate": 100_000}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _processes_mentioning(text: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue
            if text in cmdline and state != "Z":
                pids.append(int(proc.name))
    return pids


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture
def api(tmp_path):
    port = _free_port()
    env = {**os.environ, "MADDPG_API_RUNS_DIR": str(tmp_path / "runs"), "MADDPG_API_TOKEN": TOKEN,
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    log = open(tmp_path / "api.log", "wb")
    server = subprocess.Popen([MADDPG, "api", "--host", "127.0.0.1", "--port", str(port)], env=env,
                              stdout=log, stderr=subprocess.STDOUT)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)

    def ready():
        try:
            return client.get("/readyz").status_code == 200
        except httpx.TransportError:
            assert server.poll() is None, (tmp_path / "api.log").read_text()
            return False

    try:
        _wait_for(ready, 60, "the API to answer /readyz")
        yield client, tmp_path
    finally:
        client.close()
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=90)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def test_start_watch_stop_a_run_through_the_local_launcher(api):
    client, tmp_path = api
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert client.post("/runs", json=TINY).status_code == 401

    created = client.post("/runs", json={**TINY, "run_id": "tiny"}, headers=auth)
    assert created.status_code == 201, created.text
    run = created.json()
    assert run["id"] == "tiny" and run["status"] == "running" and run["endpoints"]["learner"].startswith("tcp://")
    assert len(run["pids"]) == 2
    address = run["endpoints"]["learner"]

    def episodes():
        body = client.get("/runs/tiny").json()
        assert body["status"] == "running", body
        return body["progress"]["episodes"]

    first = _wait_for(episodes, 120, "the first episodes")
    _wait_for(lambda: episodes() > first + 5, 60, "more episodes")
    assert client.get("/runs", params={"status": "running"}).json()["total"] == 1

    stopped = client.post("/runs/tiny/stop", headers=auth)
    assert stopped.status_code == 202 and stopped.json()["status"] in ("stopping", "stopped")
    assert client.post("/runs/tiny/stop", headers=auth).status_code == 202  # idempotent
    final = _wait_for(lambda: (b := client.get("/runs/tiny").json())["status"] == "stopped" and b, 90,
                      "the run to stop")
    assert final["reason"] is None
    checkpoint = final["progress"]["newest_checkpoint"]
    assert checkpoint and (Path(checkpoint) / "manifest.json").is_file()  # the final checkpoint: save_rate is huge
    assert Path(checkpoint).parent == tmp_path / "runs" / "tiny" / "checkpoints"
    rewards = client.get("/runs/tiny/rewards").json()
    assert len(rewards["reward"]) == final["progress"]["episodes"] and "agent_0" in rewards["per_agent"]

    _wait_for(lambda: not _processes_mentioning(address), 30, "the learner and explorer to exit")
    for pid in final["pids"]:
        assert not Path(f"/proc/{pid}").exists() or pid not in _processes_mentioning("maddpg")
    metrics = client.get("/metrics").text
    assert 'maddpg_api_requests_total{method="POST",route="/runs/{run_id}/stop",status="202"}' in metrics
