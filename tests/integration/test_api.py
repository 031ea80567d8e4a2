"""The control API as a user meets it: `maddpg api` (real uvicorn) on a free port, a real HTTP client, a tiny
run started through the local launcher, watched, stopped gracefully, with no process left behind; a run that
outlives a killed API, adopted by the next one, stopped and resumed from its checkpoint."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from maddpg.launch import free_tcp_port
from tests.integration.cli import MADDPG

TOKEN = "test-token"
TINY = {"scenario": "simple", "num_episodes": 100_000, "explorers": 1, "envs_per_explorer": 2,
        "learning_starts": 100, "batch_size": 32, "num_units": 16, "update_every": 10, "save_rate": 100_000}


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


class _Api:
    """`maddpg api` on a free port with a runs folder, and an httpx client for it."""

    def __init__(self, tmp_path: Path, runs_dir: Path):
        port = free_tcp_port()
        env = {**os.environ, "MADDPG_API_RUNS_DIR": str(runs_dir), "MADDPG_API_TOKEN": TOKEN,
               "TF_CPP_MIN_LOG_LEVEL": "2"}
        self.log_path = tmp_path / f"api-{port}.log"
        self._log = open(self.log_path, "wb")
        self.server = subprocess.Popen([MADDPG, "api", "--host", "127.0.0.1", "--port", str(port)], env=env,
                                       stdout=self._log, stderr=subprocess.STDOUT)
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
        _wait_for(self._ready, 60, "the API to answer /readyz")

    def _ready(self) -> bool:
        try:
            return self.client.get("/readyz").status_code == 200
        except httpx.TransportError:
            assert self.server.poll() is None, self.log_path.read_text()
            return False

    def close(self, sig: int = signal.SIGINT) -> None:
        self.client.close()
        if self.server.poll() is None:
            self.server.send_signal(sig)
        try:
            self.server.wait(timeout=90)
        except subprocess.TimeoutExpired:
            self.server.kill()
            self.server.wait()
        self._log.close()


@pytest.fixture
def api(tmp_path):
    server = _Api(tmp_path, tmp_path / "runs")
    try:
        yield server.client, tmp_path
    finally:
        server.close()


def test_start_watch_stop_a_run_through_the_local_launcher(api):
    client, tmp_path = api
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert client.post("/runs", json=TINY).status_code == 401
    huge = client.post("/runs", content=b"[" + b"1," * 5_000_000 + b"1]",
                       headers={**auth, "content-type": "application/json"})
    assert huge.status_code == 413  # 10 MB: refused by its Content-Length, unread

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
    # The run's processes serve their Prometheus metrics at the endpoints the API reports.
    learner_metrics = httpx.get(run["endpoints"]["learner_metrics"], timeout=5).text
    assert 'maddpg_episodes_total{role="learner",run_id="tiny"}' in learner_metrics
    assert "maddpg_env_steps_total" in httpx.get(run["endpoints"]["explorer-0_metrics"], timeout=5).text
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


def _checkpoint_episodes(checkpoint: str) -> int:
    return json.loads((Path(checkpoint) / "manifest.json").read_text())["counters"]["episodes"]


def test_a_restarted_api_adopts_a_live_run_and_resumes_a_stopped_one(tmp_path):
    """An API killed with SIGKILL leaves its local runs going; the next one adopts the live learner (same pid and
    process identity), stops it, and resumes it from its final checkpoint under the same id."""
    auth = {"Authorization": f"Bearer {TOKEN}"}
    first = _Api(tmp_path, tmp_path / "runs")
    try:
        short = first.client.post("/runs", json={**TINY, "num_episodes": 20, "run_id": "short"}, headers=auth)
        long = first.client.post("/runs", json={**TINY, "run_id": "long"}, headers=auth)
        assert short.status_code == 201 and long.status_code == 201, (short.text, long.text)
        done = _wait_for(lambda: (b := first.client.get("/runs/short").json())["status"] != "running" and b, 120,
                         "the short run to end")
        assert done["status"] == "finished", done
        assert done["progress"]["episodes"] == 20 and done["progress"]["newest_checkpoint"]
        assert first.client.post("/runs/short/stop", headers=auth).status_code == 409
        assert first.client.post("/runs/short/resume", headers=auth).status_code == 409  # finished
        _wait_for(lambda: first.client.get("/runs/long").json()["progress"]["episodes"] > 0, 60, "long's episodes")
        learner, address = long.json()["pids"][0], long.json()["endpoints"]["learner"]
    finally:
        first.close(signal.SIGKILL)
    assert learner in _processes_mentioning(address)  # the run outlived the API

    second, addresses = _Api(tmp_path, tmp_path / "runs"), [address]
    try:
        client = second.client
        adopted = client.get("/runs/long").json()
        assert adopted["status"] == "running" and adopted["pids"][0] == learner, adopted
        seen = adopted["progress"]["episodes"]
        _wait_for(lambda: client.get("/runs/long").json()["progress"]["episodes"] > seen, 60, "more episodes")
        assert client.post("/runs/long/resume", headers=auth).status_code == 409  # running

        assert client.post("/runs/long/stop", headers=auth).status_code == 202
        stopped = _wait_for(lambda: (b := client.get("/runs/long").json())["status"] == "stopped" and b, 90,
                            "the adopted run to stop")
        _wait_for(lambda: not _processes_mentioning(address), 30, "the adopted learner and explorer to exit")
        before = _checkpoint_episodes(stopped["progress"]["newest_checkpoint"])
        assert before == stopped["progress"]["episodes"] > seen

        resumed = client.post("/runs/long/resume", headers=auth)
        assert resumed.status_code == 202, resumed.text
        run = resumed.json()
        addresses.append(run["endpoints"]["learner"])
        assert run["status"] == "running" and run["pids"][0] != learner and run["reason"] is None
        _wait_for(lambda: client.get("/runs/long").json()["progress"]["episodes"] > before + 5, 120,
                  "the resumed run's episodes")
        episodes = client.get("/runs/long/rewards").json()["episode"]
        assert episodes == list(range(1, len(episodes) + 1))  # counted on from the checkpoint, none twice

        assert client.post("/runs/long/stop", headers=auth).status_code == 202
        final = _wait_for(lambda: (b := client.get("/runs/long").json())["status"] == "stopped" and b, 90,
                          "the resumed run to stop")
        assert _checkpoint_episodes(final["progress"]["newest_checkpoint"]) > before + 5
        _wait_for(lambda: not _processes_mentioning(run["endpoints"]["learner"]), 30, "the resumed run to exit")
    finally:
        second.close()
        for pid in {pid for text in addresses for pid in _processes_mentioning(text)}:  # only if it failed
            os.kill(pid, signal.SIGKILL)
