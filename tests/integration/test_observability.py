"""Metrics, dashboards and logs of running services: a real learner, explorer and API (console script processes),
scraped over HTTP, checked by promtool, scraped by a real Prometheus, and their stdout parsed as JSON lines."""

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from maddpg.launch import free_tcp_port
from maddpg.transport.security import RunKey
from tests.integration.cli import MADDPG

DASHBOARDS = Path(__file__).resolve().parents[2] / "charts" / "dashboards"
LOG_KEYS = {"timestamp", "level", "role", "run_id", "step", "message"}
TINY = ["--scenario", "simple_spread", "--num-episodes", "1000000", "--learning-starts", "200", "--batch-size", "64",
        "--num-units", "16", "--save-rate", "200", "--quiet"]

promtool = shutil.which("promtool")
prometheus = shutil.which("prometheus")
needs_prometheus = pytest.mark.skipif(
    not (promtool and prometheus or os.environ.get("CI")),  # CI installs Debian's prometheus: never skip there
    reason="Debian package prometheus (promtool, prometheus) is not installed")


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except httpx.HTTPError:
            value = None
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


class Services:
    """A learner, one explorer and the API as processes, each with its stdout in a file and /metrics served."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "MADDPG_LOG_FORMAT": "json",
               "MADDPG_API_RUNS_DIR": str(tmp / "api-runs"), "MADDPG_RUN_KEY": RunKey.generate().text}
        env.pop("REDIS_URL", None)
        bind = f"tcp://127.0.0.1:{free_tcp_port()}"
        self.ports = {"learner": free_tcp_port(), "explorer": free_tcp_port(), "api": free_tcp_port()}
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs = {role: tmp / f"{role}.out" for role in self.ports}
        commands = {
            "learner": ["learner", "--bind", bind, "--run-dir", str(tmp / "run"), "--run-id", "obs-test",
                        "--metrics-port", str(self.ports["learner"]), *TINY],
            "explorer": ["explorer", "--learner", bind, "--envs", "4", "--explorer-id", "e0",
                         "--metrics-port", str(self.ports["explorer"])],
            "api": ["api", "--host", "127.0.0.1", "--port", str(self.ports["api"])],
        }
        for role, args in commands.items():
            with open(self.logs[role], "wb") as out:
                self.procs[role] = subprocess.Popen([MADDPG, *args], env=env, stdout=out,
                                                    stderr=subprocess.DEVNULL)

    def url(self, role: str) -> str:
        return f"http://127.0.0.1:{self.ports[role]}/metrics"

    def scrape(self, role: str) -> str:
        return httpx.get(self.url(role), timeout=5).text

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _value(exposition: str, series: str) -> float:
    match = re.search(rf"^{re.escape(series)}(?:{{[^}}]*}})? (\S+)$", exposition, re.M)
    return float(match.group(1)) if match else float("nan")


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    s = Services(tmp_path_factory.mktemp("observability"))
    try:
        # The explorer serves metrics once connected; the learner counts env steps once chunks arrive.
        _wait_for(lambda: _value(s.scrape("learner"), "maddpg_updates_total") > 0, 180, "the learner's first update")
        _wait_for(lambda: "maddpg_env_steps_total" in s.scrape("explorer"), 60, "the explorer's metrics")
        _wait_for(lambda: httpx.get(f"http://127.0.0.1:{s.ports['api']}/runs").status_code == 200, 60, "the API")
        yield s
    finally:
        s.close()


def _series_names(exposition: str) -> set[str]:
    return {line.split("{")[0].split(" ")[0] for line in exposition.splitlines() if line and not line.startswith("#")}


def _dashboard_expressions() -> list[tuple[str, str, str]]:
    found = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel["targets"]:
                found.append((path.name, panel["title"], target["expr"]))
    return found


def test_services_export_the_metrics_a_user_watches(services):
    learner, explorer = services.scrape("learner"), services.scrape("explorer")
    for name in ("maddpg_env_steps_total", "maddpg_episodes_total", "maddpg_updates_total",
                 "maddpg_inference_batch_size_bucket", "maddpg_inference_latency_seconds_bucket",
                 "maddpg_replay_queue_depth", "maddpg_critic_loss", "maddpg_actor_loss",
                 "maddpg_checkpoint_duration_seconds_bucket", "maddpg_checkpoint_failures_total"):
        assert name in _series_names(learner), name
    for name in ("maddpg_env_steps_total", "maddpg_episodes_total", "maddpg_chunks_total",
                 "maddpg_inference_round_trip_seconds_bucket"):
        assert name in _series_names(explorer), name
    # Labels: the run id and the role on every series; losses per agent; nothing unbounded.
    for exposition, role in ((learner, "learner"), (explorer, "explorer")):
        for line in exposition.splitlines():
            if line.startswith("maddpg_"):
                assert 'run_id="obs-test"' in line and f'role="{role}"' in line, line
    assert 'maddpg_critic_loss{agent="agent_0"' in learner
    first = _value(explorer, "maddpg_env_steps_total")
    _wait_for(lambda: _value(services.scrape("explorer"), "maddpg_env_steps_total") > first, 30, "more env steps")


@needs_prometheus
def test_expositions_pass_promtool_check_metrics(services):
    for role in ("learner", "explorer", "api"):
        exposition = services.scrape(role)
        result = subprocess.run([promtool, "check", "metrics"], input=exposition, capture_output=True, text=True)
        assert result.returncode == 0, f"{role}: {result.stdout}{result.stderr}"
        assert not (result.stdout + result.stderr).strip(), f"{role}: {result.stdout}{result.stderr}"


@needs_prometheus
def test_every_dashboard_query_parses_and_names_only_exported_metrics(services, tmp_path):
    expressions = _dashboard_expressions()
    assert {p.name for p in DASHBOARDS.glob("*.json")} >= {"training.json", "inference.json", "replay-queue.json",
                                                           "learner.json", "api.json"}
    # Grafana variables, as Grafana substitutes them, so that promtool parses the PromQL itself.
    rules = [{"record": f"maddpg:check:{i}", "expr": expr.replace("$__rate_interval", "1m").replace("$run_id", ".*")}
             for i, (_, _, expr) in enumerate(expressions)]
    rules_file = tmp_path / "rules.yml"
    rules_file.write_text(json.dumps({"groups": [{"name": "dashboards", "rules": rules}]}))  # JSON is YAML
    result = subprocess.run([promtool, "check", "rules", str(rules_file)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr

    httpx.get(f"http://127.0.0.1:{services.ports['api']}/healthz")  # the API counts requests once it has some
    exported = set().union(*(_series_names(services.scrape(role)) for role in ("learner", "explorer", "api")))
    for dashboard, title, expr in expressions:
        names = set(re.findall(r"\bmaddpg_\w+", expr))
        assert names, f"{dashboard} / {title}: no maddpg metric in {expr}"
        missing = names - exported
        assert not missing, f"{dashboard} / {title}: {sorted(missing)} not exported by any service"


@needs_prometheus
def test_a_real_prometheus_scrapes_rising_env_steps(services, tmp_path):
    port = free_tcp_port()
    config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
              "scrape_configs": [{"job_name": "maddpg", "static_configs": [{"targets": [
                  f"127.0.0.1:{services.ports['learner']}", f"127.0.0.1:{services.ports['explorer']}"]}]}]}
    (tmp_path / "prometheus.yml").write_text(json.dumps(config))
    server = subprocess.Popen([prometheus, f"--config.file={tmp_path / 'prometheus.yml'}",
                               f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    query = f"http://127.0.0.1:{port}/api/v1/query"

    def env_steps() -> float | None:
        body = httpx.get(query, params={"query": 'sum(maddpg_env_steps_total{role="explorer"})'}, timeout=5).json()
        result = body["data"]["result"]
        return float(result[0]["value"][1]) if result else None

    try:
        first = _wait_for(env_steps, 60, "Prometheus to scrape the explorer")
        _wait_for(lambda: (env_steps() or 0) > first, 30, "a rising env step count in Prometheus")
        up = httpx.get(query, params={"query": "up"}, timeout=5).json()["data"]["result"]
        assert len(up) == 2 and all(r["value"][1] == "1" for r in up)  # both services scraped
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_every_stdout_line_is_a_json_log_record(services):
    httpx.get(f"http://127.0.0.1:{services.ports['api']}/runs/nope")  # an access log line and a 404
    time.sleep(0.5)
    for role, path in services.logs.items():
        lines = path.read_text().splitlines()
        assert lines, f"{role} logged nothing"
        for line in lines:
            record = json.loads(line)  # fails on any line that is not JSON
            assert LOG_KEYS <= record.keys(), f"{role}: {line}"
            assert record["role"] == role
        if role != "api":
            assert any(r["run_id"] == "obs-test" for r in map(json.loads, lines)), role
    learner = [json.loads(line) for line in services.logs["learner"].read_text().splitlines()]
    assert any("serving on" in r["message"] for r in learner)
