"""The Kubernetes objects of a run: valid against the Kubernetes schemas (kubernetes-validate, strict, the oldest
and newest version we support), with the labels, owners, environment, resources and security they need."""

from __future__ import annotations

import json

import kubernetes_validate
import pytest

from maddpg.runspec import RunSpec
from maddpg.transport.security import RunKey
from services.api.launchers.objects import (RUN_DIR, ClusterConfig, RunNames, explorer_job, labels, learner_job,
                                            learner_service, owner_reference, run_key_secret)
from services.api.schemas import Quantities, Resources

VERSIONS = ["1.25", kubernetes_validate.latest_version()]  # the oldest the chart supports, the newest known
CONFIG = ClusterConfig("training", "ghcr.io/org/maddpg:0.1.0", "Always", checkpoint_uri="s3://bucket/runs/",
                       s3_endpoint="http://minio:9000", s3_secret="maddpg-s3", service_account="maddpg-run",
                       redis_url="redis://redis:6379/0", stop_timeout_s=90.5)
SPEC = RunSpec(scenario="simple_spread", num_agents=3, explorers=3, envs_per_explorer=64)
LEARNER = Resources(requests=Quantities(cpu="1500m", memory="3Gi"), limits=Quantities(cpu="2", memory="6Gi"))
EXPLORER = Resources(requests=Quantities(cpu="250m", memory="256Mi"), limits=Quantities(cpu="1", memory="1Gi"))
OWNER = owner_reference("maddpg-r1-learner", "0b6b9f3c-8f5e-4a51-9a52-2b5c7a1d4e00")
KEY = RunKey.generate().text


def _objects(run_id: str = "r1", config: ClusterConfig = CONFIG) -> dict[str, dict]:
    return {"learner": learner_job(run_id, SPEC, config, LEARNER),
            "key": run_key_secret(run_id, KEY, config, OWNER),
            "service": learner_service(run_id, config, OWNER),
            "explorers": explorer_job(run_id, SPEC, config, EXPLORER, OWNER, image="registry.local:5000/maddpg:dev")}


def _env(container: dict) -> dict[str, object]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("config", [CONFIG, ClusterConfig("default", "maddpg:dev")], ids=["full", "minimal"])
def test_every_object_is_valid(version, config):
    for name, obj in _objects(config=config).items():
        kubernetes_validate.validate(obj, version, strict=True)


def test_a_wrong_field_would_be_caught():
    """The validation is not vacuous: strict mode refuses a misspelt field."""
    job = learner_job("r1", SPEC, CONFIG, LEARNER)
    job["spec"]["template"]["spec"]["containers"][0]["resource"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, VERSIONS[-1], strict=True)


def test_labels_names_and_owners():
    objects = _objects()
    assert objects["learner"]["metadata"]["name"] == objects["service"]["metadata"]["name"] == "maddpg-r1-learner"
    assert objects["explorers"]["metadata"]["name"] == "maddpg-r1-explorers"
    assert objects["key"]["metadata"]["name"] == "maddpg-r1-run-key"
    for component, obj in [("learner", objects["learner"]), ("learner", objects["service"]),
                           ("learner", objects["key"]), ("explorer", objects["explorers"])]:
        assert obj["metadata"]["namespace"] == "training"
        assert obj["metadata"]["labels"] == {
            "app.kubernetes.io/name": "maddpg", "app.kubernetes.io/part-of": "maddpg",
            "app.kubernetes.io/managed-by": "maddpg-api", "app.kubernetes.io/component": component,
            "app.kubernetes.io/instance": "r1", "maddpg.io/run-id": "r1"}
        if obj["kind"] == "Job":
            assert obj["spec"]["template"]["metadata"]["labels"] == obj["metadata"]["labels"]
    assert "ownerReferences" not in objects["learner"]["metadata"]
    for obj in (objects["service"], objects["key"], objects["explorers"]):
        assert obj["metadata"]["ownerReferences"] == [{"apiVersion": "batch/v1", "kind": "Job",
                                                       "name": "maddpg-r1-learner", "uid": OWNER["uid"]}]
    # The Service selects the learner pod by its template's labels.
    pod_labels = objects["learner"]["spec"]["template"]["metadata"]["labels"]
    assert objects["service"]["spec"]["selector"].items() <= pod_labels.items()
    assert objects["service"]["spec"]["ports"] == [{"name": "zmq", "port": 5555, "targetPort": "zmq",
                                                    "protocol": "TCP"}]


def test_long_run_ids_give_names_of_at_most_63_characters():
    long_ids = ["a" * 63, "a" * 62 + "b", "x" * 40 + "-" + "y" * 22]
    names = [RunNames.of(run_id) for run_id in long_ids]
    for n in names:
        assert len(n.learner) <= 63 and len(n.explorers) <= 63 and len(n.key) <= 63
        assert n.learner.removesuffix("-learner") == n.explorers.removesuffix("-explorers") == n.key.removesuffix(
            "-run-key")
    assert len({n.learner for n in names}) == 3  # a cut id plus a hash: still unique
    assert RunNames.of("short").learner == "maddpg-short-learner"
    assert labels("a" * 63, "learner")["maddpg.io/run-id"] == "a" * 63  # label values may be 63 long


def test_learner_pod():
    job = learner_job("r1", SPEC, CONFIG, LEARNER)
    assert job["spec"]["backoffLimit"] == 0 and job["spec"]["completions"] == job["spec"]["parallelism"] == 1
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["terminationGracePeriodSeconds"] == 91  # the stop timeout
    assert pod["serviceAccountName"] == "maddpg-run" and pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    assert container["image"] == "ghcr.io/org/maddpg:0.1.0" and container["imagePullPolicy"] == "Always"
    assert container["args"] == ["learner", "--quiet", "--run-dir", RUN_DIR]
    env = _env(container)
    assert env["MADDPG_RUN_ID"] == "r1" and RunSpec.model_validate(json.loads(env["MADDPG_RUN_SPEC"])) == SPEC
    assert env["MADDPG_LEARNER_BIND"] == "tcp://0.0.0.0:5555" and env["REDIS_URL"] == "redis://redis:6379/0"
    assert env["MADDPG_CHECKPOINT_URI"] == "s3://bucket/runs/r1" and env["AWS_ENDPOINT_URL"] == "http://minio:9000"
    assert env["MADDPG_METRICS_PORT"] == "9100" and env["MADDPG_LOG_FORMAT"] == "json"
    assert container["envFrom"] == [{"secretRef": {"name": "maddpg-s3", "optional": True}}]
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"zmq": 5555, "metrics": 9100}
    assert container["resources"] == {"requests": {"cpu": "1500m", "memory": "3Gi"},
                                      "limits": {"cpu": "2", "memory": "6Gi"}}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert RUN_DIR.startswith("/data/") and volumes[mounts["/data"]] == {"name": "data", "emptyDir": {}}
    assert volumes[mounts["/tmp"]]["emptyDir"] == {}  # the root filesystem is read-only


def test_explorer_pods():
    job = explorer_job("r1", SPEC, CONFIG, EXPLORER, OWNER)
    assert job["spec"]["parallelism"] == job["spec"]["completions"] == 3
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == ["explorer"] and "envFrom" not in container  # only the learner talks to S3
    env = _env(container)
    assert env["MADDPG_LEARNER_ADDRESS"] == "tcp://maddpg-r1-learner:5555" and env["MADDPG_ENVS"] == "64"
    assert env["REDIS_URL"] == "redis://redis:6379/0" and env["MADDPG_METRICS_PORT"] == "9100"
    assert env["MADDPG_LOG_FORMAT"] == "json"
    assert env["MADDPG_EXPLORER_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert container["resources"] == EXPLORER.model_dump()
    assert explorer_job("r1", SPEC, CONFIG, EXPLORER, OWNER, image="other:1")["spec"]["template"]["spec"][
        "containers"][0]["image"] == "other:1"


def test_optional_settings_leave_no_trace():
    job = learner_job("r1", SPEC, ClusterConfig("default", "maddpg:dev"), LEARNER)
    pod = job["spec"]["template"]["spec"]
    env = _env(pod["containers"][0])
    assert not {"REDIS_URL", "MADDPG_CHECKPOINT_URI", "AWS_ENDPOINT_URL"} & env.keys()
    assert "envFrom" not in pod["containers"][0] and "serviceAccountName" not in pod


@pytest.mark.parametrize("kind", ["learner", "explorers"])
def test_pods_run_as_non_root(kind):
    pod = _objects()[kind]["spec"]["template"]["spec"]
    assert pod["securityContext"] == {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                                      "fsGroup": 10001, "seccompProfile": {"type": "RuntimeDefault"}}
    for container in pod["containers"]:
        assert container["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                                "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}}


def test_the_run_key_is_an_immutable_opaque_secret(tmp_path):
    secret = run_key_secret("r1", KEY, CONFIG, OWNER)
    assert secret["type"] == "Opaque" and secret["immutable"] is True
    assert secret["stringData"] == {"run-key": KEY} and "data" not in secret
    (tmp_path / "run-key").write_text(secret["stringData"]["run-key"])  # as the pods see it
    assert RunKey.load({"MADDPG_RUN_KEY_FILE": str(tmp_path / "run-key")}).text == KEY


@pytest.mark.parametrize("kind", ["learner", "explorers"])
def test_pods_read_the_run_key_from_a_read_only_file(kind):
    """A file from the Secret, not an env var (`kubectl describe` shows env vars); mode 0400, made readable to
    the pod's user by fsGroup (the kubelet gives secret files to that group, with group read)."""
    pod = _objects()[kind]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    (mount,) = [m for m in container["volumeMounts"] if "secret" in volumes[m["name"]]]
    assert mount["readOnly"] is True
    assert volumes[mount["name"]]["secret"] == {"secretName": "maddpg-r1-run-key", "defaultMode": 0o400}
    env = _env(container)
    assert env["MADDPG_RUN_KEY_FILE"] == f"{mount['mountPath']}/run-key" and "MADDPG_RUN_KEY" not in env
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsGroup"] == 10001


def test_learner_and_explorers_share_one_secret():
    objects = _objects()

    def secret_of(job: dict) -> tuple:
        """(Secret, mount path, MADDPG_RUN_KEY_FILE) of a Job's pods."""
        pod = job["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        secrets = {v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
        ((name, path),) = [(secrets[m["name"]], m["mountPath"]) for m in container["volumeMounts"]
                           if m["name"] in secrets]
        return name, path, _env(container)["MADDPG_RUN_KEY_FILE"]

    assert secret_of(objects["learner"]) == secret_of(objects["explorers"])
    assert secret_of(objects["learner"])[0] == objects["key"]["metadata"]["name"]
