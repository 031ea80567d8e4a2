"""The kubernetes launcher's real client code against the kmock API emulator: objects made, ends reported,
pods replaced without ending a run, pods that cannot start, stops, resuming, reconciling after an API restart,
readiness, and the API over HTTP with this launcher.

kmock has no Job controller, no kubelet and no garbage collector: tests set a Job's status and make its pods as
the controller and the kubelet would, and check owner references where a real cluster would delete dependents
by them.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import replace
from datetime import datetime, timedelta, timezone

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
from tests.integration.kube_emulator import JOBS, NETWORK_POLICIES, PODS, SECRETS, SERVICES, KubeEmulator, job_pod

NS = "training"
CLUSTER = ClusterConfig(NS, "ghcr.io/org/maddpg:0.1.0", checkpoint_uri="s3://bucket/runs",
                        redis_url="redis://redis:6379/0", stop_timeout_s=60)
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
    assert launched.endpoints == {"learner": f"tcp://maddpg-r1-learner.{NS}.svc:5555",
                                  "checkpoints": "s3://bucket/runs/r1"}

    jobs, services = _of_run(emulator.live(JOBS, NS), "r1"), _of_run(emulator.live(SERVICES, NS), "r1")
    policies = _of_run(emulator.live(NETWORK_POLICIES, NS), "r1")
    assert sorted(jobs) == ["maddpg-r1-explorers", "maddpg-r1-learner"] and sorted(services) == ["maddpg-r1-learner"]
    assert sorted(policies) == ["maddpg-r1-learner"]
    learner, explorers = jobs["maddpg-r1-learner"], jobs["maddpg-r1-explorers"]
    owner = {"apiVersion": "batch/v1", "kind": "Job", "name": "maddpg-r1-learner", "uid": learner["metadata"]["uid"]}
    assert services["maddpg-r1-learner"]["metadata"]["ownerReferences"] == [owner]
    assert policies["maddpg-r1-learner"]["metadata"]["ownerReferences"] == [owner]
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
    creates = [path.rsplit("/", 1)[1] for path, _ in emulator.requests("POST")[:5]]
    assert creates == ["jobs", "secrets", "services", "networkpolicies", "jobs"]


def test_a_failed_create_is_a_launch_error_and_leaves_nothing_of_its_own(emulator, launcher, tmp_path):
    batch, core, _ = emulator.clients()
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
    assert not _of_run(emulator.live(SECRETS, NS), "r1") and not _of_run(emulator.live(NETWORK_POLICIES, NS), "r1")
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
    assert "failed 4 times (MADDPG_API_LEARNER_BACKOFF_LIMIT=3)" in reason
    assert f"kubectl logs -n {NS} job/maddpg-broken-learner" in reason
    status, reason = ends.wait_for("gone")
    assert status == "failed" and "vanished" in reason
    # An ended run keeps its learner Job (for its logs); its explorers, Service and key are removed.
    for run_id in ("done", "broken"):
        assert list(_of_run(emulator.live(JOBS, NS), run_id)) == [f"maddpg-{run_id}-learner"]
        assert not _of_run(emulator.live(SERVICES, NS), run_id) and _key_of(emulator, run_id) is None
        assert not _of_run(emulator.live(NETWORK_POLICIES, NS), run_id)
    time.sleep(0.5)
    assert "busy" not in {end[0] for end in ends.seen} and len(_of_run(emulator.live(JOBS, NS), "busy")) == 2
    assert _key_of(emulator, "busy")


def _container(name: str, state: dict, ready: bool = False) -> dict:
    """A container status as the kubelet reports it (the fields the client requires, and `state`)."""
    return {"name": name, "state": state, "ready": ready, "restartCount": 0, "image": "maddpg", "imageID": ""}


def _pod_env(pod: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}


def test_a_failed_or_evicted_learner_pod_is_replaced_and_the_run_goes_on(emulator, launcher, ends, tmp_path):
    """The Job controller replaces a crashed pod (counted against backoffLimit) and an evicted one (not counted);
    the new pod resumes from the same checkpoint store under the same run id. Only a Failed condition ends the
    run: exit code 2 (a user error) gets one at once, by the Job's podFailurePolicy."""
    launcher.start("r1", SPEC, tmp_path)
    job = emulator.live(JOBS, NS)["maddpg-r1-learner"]
    assert job["spec"]["podFailurePolicy"]["rules"][0]["onExitCodes"]["values"] == [2]
    core = emulator.clients()[1]
    crashed = job_pod(job, "maddpg-r1-learner-aaaaa", {"phase": "Failed", "containerStatuses": [_container(
        "learner", {"terminated": {"exitCode": 137, "reason": "OOMKilled"}})]})
    evicted = job_pod(job, "maddpg-r1-learner-bbbbb", {"phase": "Failed", "reason": "Evicted", "conditions": [
        {"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI"}]})
    for pod in (crashed, evicted):
        core.create_namespaced_pod(NS, pod)
    emulator.patch(JOBS, NS, "maddpg-r1-learner", {"status": {"failed": 1, "active": 1}})  # no condition: retried
    replacement = job_pod(job, "maddpg-r1-learner-ccccc", {"phase": "Running", "containerStatuses": [_container(
        "learner", {"running": {"startedAt": "2025-01-01T00:00:00Z"}}, ready=True)]})
    core.create_namespaced_pod(NS, replacement)

    time.sleep(0.6)  # several polls
    assert ends.seen == [] and len(_of_run(emulator.live(JOBS, NS), "r1")) == 2 and _key_of(emulator, "r1")
    pods = _of_run(emulator.live(PODS, NS), "r1")
    envs = [_pod_env(pods[name]) for name in sorted(pods)]
    assert {(env["MADDPG_RUN_ID"], env["MADDPG_CHECKPOINT_URI"]) for env in envs} == {("r1", "s3://bucket/runs/r1")}

    emulator.patch(JOBS, NS, "maddpg-r1-learner", {"status": {"failed": 2, "active": 0, "conditions": [
        {"type": "FailureTarget", "status": "True", "reason": "PodFailurePolicy"},
        {"type": "Failed", "status": "True", "reason": "PodFailurePolicy",
         "message": f"Container learner for pod {NS}/maddpg-r1-learner-ccccc failed with exit code 2 matching "
                    f"FailJob rule at index 0"}]}})
    status, reason = ends.wait_for("r1")
    assert status == "failed" and "exited with code 2, a user error" in reason and "exit code 2 matching" in reason


def _pending(job: dict, name: str, age_s: float, **status) -> dict:
    return job_pod(job, name, {"phase": "Pending", **status},
                   created=datetime.now(timezone.utc) - timedelta(seconds=age_s))


def test_pods_that_cannot_start_fail_their_run_after_the_deadline(emulator, ends, tmp_path):
    launcher = KubernetesLauncher(ends, replace(CLUSTER, start_deadline_s=30), *emulator.clients(), poll_s=0.1)
    try:
        for run_id in ("pull", "sched", "config", "young", "fine"):
            launcher.start(run_id, SPEC, tmp_path)
        jobs, core = emulator.live(JOBS, NS), emulator.clients()[1]
        waiting = {"waiting": {"reason": "ImagePullBackOff",
                               "message": 'Back-off pulling image "ghcr.io/org/maddpg:0.1.0"'}}
        core.create_namespaced_pod(NS, _pending(jobs["maddpg-pull-learner"], "maddpg-pull-learner-x", 120,
                                                containerStatuses=[_container("learner", waiting)]))
        unschedulable = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                         "message": "0/3 nodes are available: 3 Insufficient cpu."}
        core.create_namespaced_pod(NS, _pending(jobs["maddpg-sched-explorers"], "maddpg-sched-explorers-x", 300,
                                                conditions=[unschedulable]))
        config_error = {"waiting": {"reason": "CreateContainerConfigError",
                                    "message": 'secret "maddpg-redis" not found'}}
        core.create_namespaced_pod(NS, _pending(jobs["maddpg-config-learner"], "maddpg-config-learner-x", 31,
                                                containerStatuses=[_container("learner", config_error)]))
        core.create_namespaced_pod(NS, _pending(jobs["maddpg-young-learner"], "maddpg-young-learner-x", 5,
                                                containerStatuses=[_container("learner", waiting)]))
        core.create_namespaced_pod(NS, _pending(jobs["maddpg-fine-learner"], "maddpg-fine-learner-x", 600,
                                                containerStatuses=[_container("learner", waiting)]) | {
            "status": {"phase": "Running", "containerStatuses": [_container("learner", {"running": {}}, True)]}})

        status, reason = ends.wait_for("pull")
        assert status == "failed" and "learner pod maddpg-pull-learner-x has not started in 30 s" in reason
        assert "MADDPG_API_START_DEADLINE_S" in reason and 'ImagePullBackOff: Back-off pulling image' in reason
        assert f"kubectl describe pod -n {NS} maddpg-pull-learner-x" in reason
        status, reason = ends.wait_for("sched")
        assert status == "failed" and "explorer pod" in reason and "Unschedulable: 0/3 nodes" in reason
        assert ends.wait_for("config")[1].endswith(
            "CreateContainerConfigError: secret \"maddpg-redis\" not found "
            f"(kubectl describe pod -n {NS} maddpg-config-learner-x)")
        # Nothing of them is left waiting for ever, the learner Job included.
        for run_id in ("pull", "sched", "config"):
            assert not _of_run(emulator.live(JOBS, NS), run_id) and _key_of(emulator, run_id) is None
        time.sleep(0.3)
        assert {end[0] for end in ends.seen} == {"pull", "sched", "config"}  # young and fine go on
    finally:
        launcher.close()


def test_a_crash_looping_pod_fails_its_run_once_stuck_for_the_deadline(emulator, ends, tmp_path):
    launcher = KubernetesLauncher(ends, replace(CLUSTER, start_deadline_s=0.5), *emulator.clients(), poll_s=0.1)
    try:
        launcher.start("loop", SPEC, tmp_path)
        job = emulator.live(JOBS, NS)["maddpg-loop-explorers"]
        crash = {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 5m0s restarting failed container"}}
        emulator.clients()[1].create_namespaced_pod(NS, job_pod(job, "maddpg-loop-explorers-x", {
            "phase": "Running", "containerStatuses": [_container("explorer", crash)]},
            created=datetime.now(timezone.utc) - timedelta(hours=1)))  # running for long: stuck since first seen
        started = time.monotonic()
        status, reason = ends.wait_for("loop")
        assert time.monotonic() - started >= 0.4
        assert status == "failed" and "CrashLoopBackOff: back-off 5m0s" in reason
    finally:
        launcher.close()


def test_a_failed_explorer_job_fails_the_run(emulator, launcher, ends, tmp_path):
    launcher.start("r1", SPEC, tmp_path)
    emulator.patch(JOBS, NS, "maddpg-r1-explorers", {"status": {"failed": 4, "conditions": [
        {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
         "message": "Job has reached the specified backoff limit"}]}})
    status, reason = ends.wait_for("r1")
    assert status == "failed" and reason.startswith("the explorer Job failed: Job has reached the specified backoff")
    assert not _of_run(emulator.live(JOBS, NS), "r1")  # the learner would wait for explorers for ever


@pytest.mark.parametrize("cluster, names", [
    (ClusterConfig(NS, "maddpg:dev"), ["MADDPG_API_CHECKPOINT_URI=s3://", "MADDPG_API_CHECKPOINT_PVC"]),
    (ClusterConfig(NS, "maddpg:dev", checkpoint_uri="file:///data/ckpt"), ["file:///data/ckpt is in the learner pod"]),
    (ClusterConfig(NS, "maddpg:dev", checkpoint_uri="s3://b/p", checkpoint_pvc="c"), ["choose one"]),
    (ClusterConfig(NS, "maddpg:dev", checkpoint_pvc="c", redis_url="redis://:hunter2@redis:6379/0"),
     ["MADDPG_API_REDIS_PASSWORD_SECRET"]),
], ids=["no-store", "file-store", "two-stores", "plain-redis-password"])
def test_a_run_that_would_lose_its_checkpoints_or_leak_a_password_is_refused(emulator, ends, tmp_path, cluster,
                                                                             names):
    launcher = KubernetesLauncher(ends, cluster, *emulator.clients(), poll_s=0.1)
    try:
        with pytest.raises(LaunchError) as refused:
            launcher.start("r1", SPEC, tmp_path)
        with pytest.raises(LaunchError):
            launcher.resume(_record("r1", "failed"), SPEC)
    finally:
        launcher.close()
    for name in names:
        assert name in str(refused.value)
    assert emulator.requests("POST") == [] and emulator.requests("DELETE") == []


def test_resume_recreates_an_ended_run_under_its_id_and_checkpoints(emulator, launcher, ends, tmp_path):
    launcher.start("r1", SPEC, tmp_path)
    old_uid, old_key = emulator.live(JOBS, NS)["maddpg-r1-learner"]["metadata"]["uid"], _key_of(emulator, "r1")
    emulator.patch(JOBS, NS, "maddpg-r1-learner", {"status": {"conditions": [
        {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "backoff"}]}})
    assert ends.wait_for("r1")[0] == "failed"
    assert list(_of_run(emulator.live(JOBS, NS), "r1")) == ["maddpg-r1-learner"]  # kept for its logs

    launched = launcher.resume(_record("r1", "failed"), SPEC, PodOptions(image="maddpg:fix"))
    assert launched.endpoints == {"learner": f"tcp://maddpg-r1-learner.{NS}.svc:5555",
                                  "checkpoints": "s3://bucket/runs/r1"}
    deletes = dict(emulator.requests("DELETE"))
    assert deletes[f"/apis/batch/v1/namespaces/{NS}/jobs/maddpg-r1-learner"] == {"propagationPolicy": "Background"}
    jobs = _of_run(emulator.live(JOBS, NS), "r1")
    learner = jobs["maddpg-r1-learner"]
    assert sorted(jobs) == ["maddpg-r1-explorers", "maddpg-r1-learner"] and learner["metadata"]["uid"] != old_uid
    assert _pod_env(learner["spec"]["template"])["MADDPG_CHECKPOINT_URI"] == "s3://bucket/runs/r1"
    assert learner["spec"]["template"]["spec"]["containers"][0]["image"] == "maddpg:fix"
    assert _key_of(emulator, "r1") not in (None, old_key)  # all pods are new: a new key
    assert _of_run(emulator.live(SERVICES, NS), "r1") and _of_run(emulator.live(NETWORK_POLICIES, NS), "r1")

    time.sleep(0.3)
    assert len(ends.seen) == 1  # watched again, running
    with pytest.raises(LaunchError, match="run r1 is still running"):
        launcher.resume(_record("r1", "failed"), SPEC)
    emulator.patch(JOBS, NS, "maddpg-r1-learner", {"status": {"conditions": [{"type": "Complete", "status": "True"}]}})
    _wait_until(lambda: len(ends.seen) == 2)
    assert ends.seen[1] == ("r1", "finished", None)


def test_resume_refuses_a_run_whose_learner_job_is_still_active(emulator, ends, tmp_path):
    first = KubernetesLauncher(ends, CLUSTER, *emulator.clients(), poll_s=0.1)
    first.start("r1", SPEC, tmp_path)
    first.close()  # a new API process, which has not adopted it (the registry says failed: an old mistake)
    second = KubernetesLauncher(ends, CLUSTER, *emulator.clients(), poll_s=0.1)
    try:
        with pytest.raises(LaunchError, match="its learner Job maddpg-r1-learner is still active"):
            second.resume(_record("r1", "failed"), SPEC)
        emulator.patch(JOBS, NS, "maddpg-r1-learner", {"metadata": {"finalizers": ["maddpg.io/test"]}})
        emulator.clients()[0].delete_namespaced_job("maddpg-r1-learner", NS)  # a stop, waiting for the pod
        with pytest.raises(LaunchError, match="still being deleted"):
            second.resume(_record("r1", "stopped"), SPEC)
        assert emulator.requests("DELETE") == [(f"/apis/batch/v1/namespaces/{NS}/jobs/maddpg-r1-learner", {})]
    finally:
        second.close()


def test_resume_never_deletes_a_job_of_the_same_name_that_is_not_the_runs(emulator, launcher, tmp_path):
    squatter = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "maddpg-r1-learner", "namespace": NS},
                "status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    emulator.clients()[0].create_namespaced_job(NS, squatter)
    with pytest.raises(LaunchError, match="not its learner Job"):
        launcher.resume(_record("r1", "failed"), SPEC)
    assert emulator.requests("DELETE") == [] and "maddpg-r1-learner" in emulator.live(JOBS, NS)


def test_resume_of_a_stopped_run_whose_objects_are_gone_is_a_start(emulator, launcher, ends, tmp_path):
    launcher.start("r1", SPEC, tmp_path)
    launcher.stop(_record("r1", "stopping"))
    assert ends.wait_for("r1") == ("stopped", None)
    launcher.resume(_record("r1", "stopped"), SPEC)
    assert len(_of_run(emulator.live(JOBS, NS), "r1")) == 2 and _key_of(emulator, "r1")


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


def test_a_role_without_the_pods_rule_is_named_and_ends_are_still_reported(emulator, launcher, ends, tmp_path):
    """An API upgraded before its Role: no start deadline, but readiness says why, and runs still end."""
    emulator.run(lambda: emulator.handler["list v1/pods"] << kmock.KubernetesError(
        status=403, reason="Forbidden", message='pods is forbidden: User "system:serviceaccount:x:api" '
                                                'cannot list resource "pods"'))
    assert "cannot list pods in namespace training: not allowed" in launcher.problem()
    launcher.start("r1", SPEC, tmp_path)
    emulator.patch(JOBS, NS, "maddpg-r1-learner", {"status": {"conditions": [{"type": "Complete", "status": "True"}]}})
    assert ends.wait_for("r1") == ("finished", None)


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
    """Checkpoints on a claim: the learner pod's folder of it is the API's CHECKPOINT_MOUNT/RUN_ID (here a folder
    of this host, standing in for the claim the API pod mounts)."""
    checkpoints = f"file://{tmp_path}/checkpoints"
    settings = ApiSettings(runs_dir=tmp_path / "api", launcher="kubernetes", image="ghcr.io/org/maddpg:0.1.0",
                           namespace=NS)
    registry = SqliteRegistry(settings.registry_path)

    def on_exit(run_id, status, reason):
        registry.update(run_id, only_from=ACTIVE, status=status, reason=reason)

    cluster = replace(ClusterConfig.from_settings(settings), checkpoint_pvc="maddpg-checkpoints",
                      checkpoint_mount=f"{tmp_path}/checkpoints")
    launcher = KubernetesLauncher(on_exit, cluster, *emulator.clients(), poll_s=0.1)
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
            # The learner stores its rewards CSV (rows up to the checkpoint's episode) in each checkpoint.
            csv = ("episode,env_steps,updates,wall_time_s,length,reward,reward_agent_0,source,chunk\r\n"
                   + "".join(f"{i},{25 * i},0,{i}.5,25,{-30 + i},{-30 + i},ex-{i % 3}/r,{i}\r\n" for i in range(1, 21)))
            where = checkpoint.save(f"{checkpoints}/web", RunSpec(scenario="simple"), env_spec, {},
                                    {"env_steps": 500, "updates": 5, "episodes": 20}, rewards_csv=csv.encode())
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
            rewards = http.get("/runs/web/rewards").json()
            assert rewards["episode"] == list(range(1, 21)) and rewards["env_steps"] == list(range(25, 501, 25))
            assert rewards["reward"] == rewards["per_agent"]["agent_0"] == [float(-30 + i) for i in range(1, 21)]
            emulator.stop()
            ready = http.get("/readyz")
            assert ready.status_code == 503 and "Kubernetes API is unreachable" in ready.json()["problems"][0]
    finally:
        server.stop()
        registry.close()
