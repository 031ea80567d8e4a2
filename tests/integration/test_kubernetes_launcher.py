"""The kubernetes launcher's real client code against the kmock API emulator: objects made, ends reported,
stops, reconciling after an API restart, readiness, and the API over HTTP with this launcher.

kmock has no Job controller and no garbage collector: tests set a Job's status as the controller would, and
check owner references where a real cluster would delete dependents by them.
"""

from __future__ import annotations

import re
import threading
import time

import httpx
import kmock
import pytest
import uvicorn

from maddpg import checkpoint
from maddpg.envs.spaces import AgentSpec, EnvSpec
from maddpg.launch import free_tcp_port
from maddpg.runspec import RunSpec
from services.api.launchers import LaunchError, PodOptions, reconcile
from services.api.launchers.kubernetes import KubernetesLauncher
from services.api.launchers.objects import ClusterConfig
from services.api.main import create_app
from services.api.registry import ACTIVE, RunRecord, SqliteRegistry
from services.api.schemas import Quantities, Resources
from services.api.settings import ApiSettings
from tests.integration.kube_emulator import JOBS, SECRETS, SERVICES, KubeEmulator

NS = "training"
CLUSTER = ClusterConfig(NS, "ghcr.io/org/maddpg:0.1.0", redis_url="redis://redis:6379/0", stop_timeout_s=60)
SPEC = RunSpec(scenario="simple", explorers=2, envs_per_explorer=4)


@pytest.fixture
def emulator():
    server = KubeEmulator().start()
    yield server
    server.stop()


class Ends:
    """The launcher's on_exit callback: records (run_id, status, reason) as they come."""

    def __init__(self):
        self.seen: list[tuple] = []

    def __call__(self, run_id: str, status: str, reason: str | None) -> None:
        self.seen.append((run_id, status, reason))

    def wait_for(self, run_id: str, timeout: float = 10.0) -> tuple:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for end in self.seen:
                if end[0] == run_id:
                    return end[1:]
            time.sleep(0.05)
        raise AssertionError(f"no end reported for {run_id}: {self.seen}")


def _wait_until(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.05)
    raise AssertionError("timed out")


@pytest.fixture
def ends():
    return Ends()


@pytest.fixture
def launcher(emulator, ends):
    made = KubernetesLauncher(ends, CLUSTER, *emulator.clients(), poll_s=0.1, timeout_s=5)
    yield made
    made.close()


def _of_run(objects: dict[str, dict], run_id: str) -> dict[str, dict]:
    """kmock ignores label selectors: filter by the run's label here."""
    return {name: o for name, o in objects.items() if o["metadata"]["labels"].get("maddpg.io/run-id") == run_id}


def _key_of(emulator, run_id: str) -> str | None:
    """The run's key as its Secret holds it (kmock keeps stringData as sent), or None without a Secret."""
    secret = _of_run(emulator.live(SECRETS, NS), run_id).get(f"maddpg-{run_id}-run-key")
    return secret and secret["stringData"]["run-key"]


def _record(run_id: str, status: str = "running") -> RunRecord:
    return RunRecord(id=run_id, status=status, spec=SPEC.model_dump(mode="json"), run_dir="")


def test_a_run_is_a_learner_job_its_service_and_an_explorer_job(emulator, launcher, tmp_path):
    resources = Resources(requests=Quantities(cpu="250m", memory="256Mi"), limits=Quantities(cpu="1", memory="1Gi"))
    launched = launcher.start("r1", SPEC, tmp_path, PodOptions(image="maddpg:dev", explorer=resources))
    launcher.start("r2", SPEC, tmp_path)
    assert launched.pids == [] and launched.run_dir == ""
    assert launched.endpoints == {"learner": f"tcp://maddpg-r1-learner.{NS}.svc:5555"}  # no checkpoint store set

    jobs, services = _of_run(emulator.live(JOBS, NS), "r1"), _of_run(emulator.live(SERVICES, NS), "r1")
    assert sorted(jobs) == ["maddpg-r1-explorers", "maddpg-r1-learner"] and sorted(services) == ["maddpg-r1-learner"]
    learner, explorers = jobs["maddpg-r1-learner"], jobs["maddpg-r1-explorers"]
    owner = {"apiVersion": "batch/v1", "kind": "Job", "name": "maddpg-r1-learner", "uid": learner["metadata"]["uid"]}
    assert services["maddpg-r1-learner"]["metadata"]["ownerReferences"] == [owner]
    assert explorers["metadata"]["ownerReferences"] == [owner]
    (container,) = explorers["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "maddpg:dev" and container["resources"] == resources.model_dump()
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MADDPG_LEARNER_ADDRESS"] == "tcp://maddpg-r1-learner:5555" and env["REDIS_URL"] == CLUSTER.redis_url
    assert explorers["spec"]["parallelism"] == 2
    assert len(_of_run(emulator.live(JOBS, NS), "r2")) == 2


def test_each_run_gets_a_secret_with_a_new_key_owned_by_its_learner_job(emulator, launcher, tmp_path):
    launcher.start("r1", SPEC, tmp_path)
    launcher.start("r2", SPEC, tmp_path)
    (secret,) = _of_run(emulator.live(SECRETS, NS), "r1").values()
    learner = emulator.live(JOBS, NS)["maddpg-r1-learner"]
    assert secret["metadata"]["name"] == "maddpg-r1-run-key" and secret["type"] == "Opaque"
    assert secret["metadata"]["ownerReferences"] == [{"apiVersion": "batch/v1", "kind": "Job",
                                                      "name": "maddpg-r1-learner", "uid": learner["metadata"]["uid"]}]
    assert re.fullmatch("[0-9a-f]{64}", _key_of(emulator, "r1")) and _key_of(emulator, "r2") != _key_of(emulator, "r1")
    for job in _of_run(emulator.live(JOBS, NS), "r1").values():
        volumes = job["spec"]["template"]["spec"]["volumes"]
        assert {"name": "run-key", "secret": {"secretName": "maddpg-r1-run-key", "defaultMode": 0o400}} in volumes
    # The learner Job first, so that the Secret is created with its owner (no PATCH, no Secret without one).
    creates = [path.rsplit("/", 1)[1] for path, _ in emulator.requests("POST")[:4]]
    assert creates == ["jobs", "secrets", "services", "jobs"]


def test_a_failed_create_is_a_launch_error_and_leaves_nothing_of_its_own(emulator, launcher, tmp_path):
    batch, core = emulator.clients()
    squatter = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "maddpg-r1-learner", "namespace": NS},
                "spec": {"ports": [{"port": 80}]}}
    core.create_namespaced_service(NS, squatter)
    with pytest.raises(LaunchError, match="cannot create the learner's Service: .*409"):
        launcher.start("r1", SPEC, tmp_path)
    assert "maddpg-r1-learner" not in emulator.live(JOBS, NS)
    assert "ownerReferences" not in emulator.live(SERVICES, NS)["maddpg-r1-learner"]["metadata"]  # not ours: kept
    # The Secret, made before the Service failed, goes with its owner, the learner Job (deleted in the foreground):
    # kmock has no garbage collector to show that.
    deletes = dict(emulator.requests("DELETE"))
    assert deletes[f"/apis/batch/v1/namespaces/{NS}/jobs/maddpg-r1-learner"] == {"propagationPolicy": "Foreground"}
    (owner,) = emulator.live(SECRETS, NS)["maddpg-r1-run-key"]["metadata"]["ownerReferences"]
    assert owner["name"] == "maddpg-r1-learner"


def test_a_failed_learner_job_leaves_no_secret(emulator, launcher, tmp_path):
    squatter = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "maddpg-r1-learner", "namespace": NS}}
    emulator.clients()[0].create_namespaced_job(NS, squatter)
    with pytest.raises(LaunchError, match="cannot create the learner Job: .*409"):
        launcher.start("r1", SPEC, tmp_path)
    assert not emulator.live(SECRETS, NS) and not emulator.live(SERVICES, NS)
    assert "ownerReferences" not in emulator.live(JOBS, NS)["maddpg-r1-learner"]["metadata"]  # not ours: kept


def test_a_refused_secret_removes_the_learner_job_and_names_the_missing_rule(emulator, launcher, tmp_path):
    emulator.run(lambda: emulator.handler["create v1/secrets"] << kmock.KubernetesError(
        status=403, reason="Forbidden", message='secrets is forbidden: User "system:serviceaccount:x:api" '
                                                'cannot create resource "secrets"'))
    with pytest.raises(LaunchError, match="cannot create the run's key Secret in namespace training: not allowed.*"
                                          "RBAC_RULES"):
        launcher.start("r1", SPEC, tmp_path)
    assert not _of_run(emulator.live(JOBS, NS), "r1") and not emulator.live(SERVICES, NS)


def test_a_secret_of_the_same_name_is_not_ours_and_kept(emulator, launcher, tmp_path):
    squatter = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "maddpg-r1-run-key", "namespace": NS},
                "stringData": {"run-key": "theirs"}}
    emulator.clients()[1].create_namespaced_secret(NS, squatter)
    with pytest.raises(LaunchError, match="cannot create the run's key Secret: .*409"):
        launcher.start("r1", SPEC, tmp_path)
    assert not _of_run(emulator.live(JOBS, NS), "r1")
    assert emulator.live(SECRETS, NS)["maddpg-r1-run-key"]["stringData"] == {"run-key": "theirs"}


def test_stop_deletes_the_objects_and_reports_stopped(emulator, launcher, ends, tmp_path):
    launcher.start("r1", SPEC, tmp_path)
    launcher.stop(_record("r1", "stopping"))
    assert ends.wait_for("r1") == ("stopped", None)
    assert not _of_run(emulator.live(JOBS, NS), "r1") and not _of_run(emulator.live(SERVICES, NS), "r1")
    assert not _of_run(emulator.live(SECRETS, NS), "r1")
    # The learner Job goes in the foreground (it lasts until its pod is gone: the final checkpoint written),
    # and kmock, without a garbage collector, needs the others deleted by name, as the launcher does anyway.
    deletes = dict(emulator.requests("DELETE"))
    assert deletes[f"/apis/batch/v1/namespaces/{NS}/jobs/maddpg-r1-learner"] == {"propagationPolicy": "Foreground"}
    assert f"/api/v1/namespaces/{NS}/services/maddpg-r1-learner" in deletes
    assert f"/api/v1/namespaces/{NS}/secrets/maddpg-r1-run-key" in deletes
    launcher.stop(_record("r1", "stopping"))  # idempotent: everything is gone already
    assert ends.seen == [("r1", "stopped", None)]


def test_the_ends_of_runs_are_reported(emulator, launcher, ends, tmp_path):
    for run_id in ("done", "broken", "gone", "busy"):
        launcher.start(run_id, SPEC, tmp_path)
    emulator.patch(JOBS, NS, "maddpg-done-learner",
                   {"status": {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}})
    emulator.patch(JOBS, NS, "maddpg-broken-learner", {"status": {"failed": 1, "conditions": [
        {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
         "message": "Job has reached the specified backoff limit"}]}})
    emulator.clients()[0].delete_namespaced_job("maddpg-gone-learner", NS)  # by hand, behind the API's back

    assert ends.wait_for("done") == ("finished", None)
    status, reason = ends.wait_for("broken")
    assert status == "failed" and "Job has reached the specified backoff limit" in reason
    assert f"kubectl logs -n {NS} job/maddpg-broken-learner" in reason
    status, reason = ends.wait_for("gone")
    assert status == "failed" and "vanished" in reason
    # An ended run keeps its learner Job (for its logs); its explorers, Service and key are removed.
    for run_id in ("done", "broken"):
        assert list(_of_run(emulator.live(JOBS, NS), run_id)) == [f"maddpg-{run_id}-learner"]
        assert not _of_run(emulator.live(SERVICES, NS), run_id) and _key_of(emulator, run_id) is None
    time.sleep(0.5)
    assert "busy" not in {end[0] for end in ends.seen} and len(_of_run(emulator.live(JOBS, NS), "busy")) == 2
    assert _key_of(emulator, "busy")


def test_a_restarted_api_adopts_live_runs_and_fails_vanished_ones(emulator, ends, tmp_path):
    first = KubernetesLauncher(ends, CLUSTER, *emulator.clients(), poll_s=0.1)
    for run_id in ("alive", "vanished", "halfway"):
        first.start(run_id, SPEC, tmp_path)
    first.close()  # the API dies; runs go on in the cluster
    emulator.clients()[0].delete_namespaced_job("maddpg-vanished-learner", NS)
    key = _key_of(emulator, "alive")

    registry = SqliteRegistry(tmp_path / "registry.sqlite3")
    for record in (_record("alive"), _record("vanished"), _record("halfway", "stopping")):
        registry.add(record)  # "halfway": stopped by an API that died before deleting anything

    def on_exit(run_id, status, reason):
        registry.update(run_id, only_from=ACTIVE, status=status, reason=reason)

    second = KubernetesLauncher(on_exit, CLUSTER, *emulator.clients(), poll_s=0.1)
    try:
        assert reconcile(registry, second) == ["vanished"]
        assert "the API restarted" in registry.get("vanished").reason
        assert _wait_until(lambda: registry.get("halfway").status == "stopped")
        assert not _of_run(emulator.live(JOBS, NS), "halfway") and _key_of(emulator, "halfway") is None
        assert _key_of(emulator, "alive") == key  # an adopted run keeps its key: its pods have it
        emulator.patch(JOBS, NS, "maddpg-alive-learner", {"status": {"conditions": [
            {"type": "Complete", "status": "True"}]}})
        assert _wait_until(lambda: registry.get("alive").status == "finished")
        assert _key_of(emulator, "alive") is None
    finally:
        second.close()
        registry.close()


def test_problem_names_an_unreachable_or_forbidden_api(emulator, launcher):
    assert launcher.problem() is None
    emulator.run(lambda: emulator.handler["list batch/v1/jobs"] << kmock.KubernetesError(
        status=403, reason="Forbidden", message='jobs.batch is forbidden: User "system:serviceaccount:x:api" '
                                                'cannot list resource "jobs"'))
    problem = launcher.problem()
    assert "not allowed" in problem and "cannot list resource" in problem and "RBAC_RULES" in problem
    emulator.stop()
    assert "unreachable" in launcher.problem()


class _Uvicorn:
    """A FastAPI app served by uvicorn on a free port from a thread of this process."""

    def __init__(self, app):
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_tcp_port(), log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        _wait_until(lambda: self.server.started)
        self.url = f"http://127.0.0.1:{self.server.config.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def test_the_api_over_http_with_the_kubernetes_launcher(emulator, tmp_path):
    checkpoints = f"file://{tmp_path}/checkpoints"
    settings = ApiSettings(runs_dir=tmp_path / "api", launcher="kubernetes", image="ghcr.io/org/maddpg:0.1.0",
                           namespace=NS, checkpoint_uri=checkpoints)
    registry = SqliteRegistry(settings.registry_path)

    def on_exit(run_id, status, reason):
        registry.update(run_id, only_from=ACTIVE, status=status, reason=reason)

    launcher = KubernetesLauncher(on_exit, ClusterConfig.from_settings(settings), *emulator.clients(), poll_s=0.1)
    server = _Uvicorn(create_app(settings, registry=registry, launcher=launcher))
    try:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            assert http.get("/readyz").json()["status"] == "ok"
            created = http.post("/runs", json={"scenario": "simple", "explorers": 3, "run_id": "web",
                                               "num_episodes": 40, "save_rate": 20, "image": "maddpg:pr-7"})
            assert created.status_code == 201, created.text
            run = created.json()
            assert run["status"] == "running" and run["run_dir"] == "" and run["pids"] == []
            assert run["endpoints"] == {"learner": f"tcp://maddpg-web-learner.{NS}.svc:5555",
                                        "checkpoints": f"{checkpoints}/web"}
            jobs = _of_run(emulator.live(JOBS, NS), "web")
            assert jobs["maddpg-web-explorers"]["spec"]["completions"] == 3
            learner = jobs["maddpg-web-learner"]["spec"]["template"]["spec"]["containers"][0]
            assert learner["image"] == "maddpg:pr-7" and learner["resources"]["limits"] == {"cpu": "2",
                                                                                           "memory": "4Gi"}
            env = {e["name"]: e.get("value") for e in learner["env"]}
            assert env["MADDPG_CHECKPOINT_URI"] == f"{checkpoints}/web"

            # Progress comes from the newest checkpoint in the run's store, as the learner pod writes it.
            progress = http.get("/runs/web").json()["progress"]
            assert progress["source"] == "checkpoint" and "no complete checkpoint" in progress["note"]
            env_spec = EnvSpec("simple", (AgentSpec("agent_0", 4, "discrete", 5, (5,)),))
            where = checkpoint.save(f"{checkpoints}/web", RunSpec(scenario="simple"), env_spec, {},
                                    {"env_steps": 500, "updates": 5, "episodes": 20})
            listed = http.get("/runs").json()["items"][0]["progress"]  # listing reads no store: the cached read
            assert listed["note"] and listed["episodes"] == 0
            # A real API server keeps a Job deleted in the foreground until its pod has ended; kmock does so for a
            # Job with a finalizer, which stands in for the learner pod here.
            emulator.patch(JOBS, NS, "maddpg-web-learner", {"metadata": {"finalizers": ["maddpg.io/test"]}})
            stopped = http.post("/runs/web/stop")
            assert stopped.status_code == 202 and stopped.json()["status"] == "stopping"
            (learner_job,) = _of_run(emulator.live(JOBS, NS), "web").values()
            assert learner_job["metadata"]["deletionTimestamp"] and not _of_run(emulator.live(SERVICES, NS), "web")
            assert not _of_run(emulator.live(SECRETS, NS), "web")
            time.sleep(0.3)
            assert http.get("/runs/web").json()["status"] == "stopping"  # while the learner pod writes its checkpoint
            emulator.clients()[0].patch_namespaced_job("maddpg-web-learner", NS, {"metadata": {"finalizers": []}})
            final = _wait_until(lambda: (b := http.get("/runs/web").json())["status"] == "stopped" and b)
            assert not _of_run(emulator.live(JOBS, NS), "web")
            assert final["progress"] == {"source": "checkpoint", "env_steps": 500, "episodes": 20, "updates": 5,
                                         "mean_reward_last_100": None, "newest_checkpoint": str(where),
                                         "note": None}
            assert http.get("/runs/web/rewards").json() == {"episode": [], "env_steps": [], "reward": [],
                                                            "per_agent": {}}
            emulator.stop()
            ready = http.get("/readyz")
            assert ready.status_code == 503 and "Kubernetes API is unreachable" in ready.json()["problems"][0]
    finally:
        server.stop()
        registry.close()
