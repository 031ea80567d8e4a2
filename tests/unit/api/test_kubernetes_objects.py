"""The Kubernetes objects of a run: valid against the Kubernetes schemas (kubernetes-validate, strict, the oldest
and newest version we support), with the labels, owners, environment, resources, security, failure policies and
network policy they need; and the configuration they come from."""

from __future__ import annotations

import json

import kubernetes_validate
import pytest

from maddpg.runspec import RunSpec
from maddpg.transport.security import RunKey
from services.api.launchers.objects import (RUN_DIR, ClusterConfig, RunNames, explorer_job, labels,
                                            learner_job, learner_network_policy, learner_service, owner_reference,
                                            run_key_secret)
from services.api.schemas import Quantities, Resources
from services.api.settings import ApiSettings

VERSIONS = ["1.25", kubernetes_validate.latest_version()]  # the oldest the chart supports, the newest known
CONFIG = ClusterConfig("training", "ghcr.io/org/maddpg:0.1.0", "Always", checkpoint_uri="s3://bucket/runs/",
                       s3_endpoint="http://minio:9000", s3_secret="maddpg-s3", service_account="maddpg-run",
                       image_pull_secrets=("regcred", "mirror"), redis_url="redis://:pw@redis:6379/0",
                       redis_password_secret="maddpg-redis", redis_password_key="password", stop_timeout_s=90.5,
                       learner_backoff_limit=5, job_ttl_s=3600, metrics_namespace_labels={"team": "obs"})
PVC = ClusterConfig("training", "maddpg:dev", checkpoint_pvc="maddpg-checkpoints", redis_url="redis://redis:6379/0")
SPEC = RunSpec(scenario="simple_spread", num_agents=3, explorers=3, envs_per_explorer=64)
LEARNER = Resources(requests=Quantities(cpu="1500m", memory="3Gi"), limits=Quantities(cpu="2", memory="6Gi"))
EXPLORER = Resources(requests=Quantities(cpu="250m", memory="256Mi"), limits=Quantities(cpu="1", memory="1Gi"))
OWNER = owner_reference("maddpg-r1-learner", "0b6b9f3c-8f5e-4a51-9a52-2b5c7a1d4e00")
KEY = RunKey.generate().text


def _objects(run_id: str = "r1", config: ClusterConfig = CONFIG) -> dict[str, dict]:
    return {"learner": learner_job(run_id, SPEC, config, LEARNER),
            "key": run_key_secret(run_id, KEY, config, OWNER),
            "service": learner_service(run_id, config, OWNER),
            "netpol": learner_network_policy(run_id, config, OWNER),
            "explorers": explorer_job(run_id, SPEC, config, EXPLORER, OWNER, image="registry.local:5000/maddpg:dev")}


def _env(container: dict) -> dict[str, object]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("config", [CONFIG, ClusterConfig("default", "maddpg:dev"), PVC],
                         ids=["full", "minimal", "pvc"])
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
    assert objects["netpol"]["metadata"]["name"] == "maddpg-r1-learner"
    for component, obj in [("learner", objects["learner"]), ("learner", objects["service"]),
                           ("learner", objects["key"]), ("learner", objects["netpol"]),
                           ("explorer", objects["explorers"])]:
        assert obj["metadata"]["namespace"] == "training"
        assert obj["metadata"]["labels"] == {
            "app.kubernetes.io/name": "maddpg", "app.kubernetes.io/part-of": "maddpg",
            "app.kubernetes.io/managed-by": "maddpg-api", "app.kubernetes.io/component": component,
            "app.kubernetes.io/instance": "r1", "maddpg.io/run-id": "r1"}
        if obj["kind"] == "Job":
            assert obj["spec"]["template"]["metadata"]["labels"] == obj["metadata"]["labels"]
    assert "ownerReferences" not in objects["learner"]["metadata"]
    for obj in (objects["service"], objects["key"], objects["netpol"], objects["explorers"]):
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
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 1
    assert job["spec"]["ttlSecondsAfterFinished"] == 3600
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["terminationGracePeriodSeconds"] == 91  # the stop timeout
    assert pod["serviceAccountName"] == "maddpg-run" and pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    assert container["image"] == "ghcr.io/org/maddpg:0.1.0" and container["imagePullPolicy"] == "Always"
    assert container["args"] == ["learner", "--quiet", "--run-dir", RUN_DIR]
    env = _env(container)
    assert env["MADDPG_RUN_ID"] == "r1" and RunSpec.model_validate(json.loads(env["MADDPG_RUN_SPEC"])) == SPEC
    assert env["MADDPG_LEARNER_BIND"] == "tcp://0.0.0.0:5555"
    assert env["REDIS_URL"] == "redis://:$(REDIS_PASSWORD)@redis:6379/0"
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
    assert env["REDIS_URL"] == "redis://:$(REDIS_PASSWORD)@redis:6379/0" and env["MADDPG_METRICS_PORT"] == "9100"
    assert env["MADDPG_LOG_FORMAT"] == "json"
    assert env["MADDPG_EXPLORER_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert container["resources"] == EXPLORER.model_dump()
    assert job["spec"]["ttlSecondsAfterFinished"] == 3600
    assert explorer_job("r1", SPEC, CONFIG, EXPLORER, OWNER, image="other:1")["spec"]["template"]["spec"][
        "containers"][0]["image"] == "other:1"


def test_optional_settings_leave_no_trace():
    job = learner_job("r1", SPEC, ClusterConfig("default", "maddpg:dev"), LEARNER)
    pod = job["spec"]["template"]["spec"]
    env = _env(pod["containers"][0])
    assert not {"REDIS_URL", "REDIS_PASSWORD", "MADDPG_CHECKPOINT_URI", "AWS_ENDPOINT_URL"} & env.keys()
    assert "envFrom" not in pod["containers"][0] and "serviceAccountName" not in pod
    assert "imagePullSecrets" not in pod and not [v for v in pod["volumes"] if "persistentVolumeClaim" in v]


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
    assert RunKey.load(file=tmp_path / "run-key").text == KEY


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


def _containers_env(job: dict) -> list[dict]:
    return job["spec"]["template"]["spec"]["containers"][0]["env"]


def test_a_crashed_learner_pod_is_retried_an_evicted_one_not_counted_and_exit_2_fails_at_once():
    spec = learner_job("r1", SPEC, CONFIG, LEARNER)["spec"]
    assert spec["backoffLimit"] == 5 and spec["template"]["spec"]["restartPolicy"] == "Never"  # podFailurePolicy
    assert spec["podFailurePolicy"] == {"rules": [
        {"action": "FailJob", "onExitCodes": {"containerName": "learner", "operator": "In", "values": [2]},
         "onPodConditions": []},
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}]}
    assert learner_job("r1", SPEC, ClusterConfig("d", "maddpg:dev"), LEARNER)["spec"]["backoffLimit"] == 3


def test_explorers_are_replaced_a_few_times_each_and_evictions_are_not_counted():
    spec = explorer_job("r1", SPEC, CONFIG, EXPLORER, OWNER)["spec"]
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    assert spec["backoffLimit"] == 2 * SPEC.explorers
    assert spec["podFailurePolicy"] == {"rules": [
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}]}


def test_a_claim_holds_checkpoints_each_learner_seeing_only_its_own_folder():
    job = learner_job("r1", SPEC, PVC, LEARNER)
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "checkpoints"]
    assert mount == {"name": "checkpoints", "subPath": "r1", "mountPath": "/checkpoints/r1"}
    assert {"name": "checkpoints", "persistentVolumeClaim": {"claimName": "maddpg-checkpoints"}} in pod["volumes"]
    env = _env(container)
    assert env["MADDPG_CHECKPOINT_URI"] == "file:///checkpoints/r1" == PVC.run_checkpoints("r1")
    assert "AWS_ENDPOINT_URL" not in env and "envFrom" not in container
    assert CONFIG.run_checkpoints("r1") == "s3://bucket/runs/r1"
    explorers = explorer_job("r1", SPEC, PVC, EXPLORER, OWNER)["spec"]["template"]["spec"]
    assert not [v for v in explorers["volumes"] if "persistentVolumeClaim" in v]  # only the learner writes them


@pytest.mark.parametrize("config, setting", [
    (ClusterConfig("d", "i"), "MADDPG_API_CHECKPOINT_PVC=CLAIM"),
    (ClusterConfig("d", "i", checkpoint_uri="file:///data/c"), "MADDPG_API_CHECKPOINT_URI=s3://BUCKET/PREFIX"),
    (ClusterConfig("d", "i", checkpoint_uri="s3://b", checkpoint_pvc="c"), "choose one"),
    (ClusterConfig("d", "i", checkpoint_uri="s3://b", redis_url="redis://u:pw@r:6379"),
     "MADDPG_API_REDIS_PASSWORD_SECRET"),
])
def test_configurations_that_would_lose_checkpoints_or_show_a_password_are_refused(config, setting):
    assert setting in config.start_problem()


def test_good_configurations_are_accepted():
    for config in (CONFIG, PVC, ClusterConfig("d", "i", checkpoint_uri="s3://b", redis_url="redis://r:6379/0")):
        assert config.start_problem() is None


def test_the_redis_password_comes_from_its_secret_never_as_a_plain_value():
    for job in (learner_job("r1", SPEC, CONFIG, LEARNER), explorer_job("r1", SPEC, CONFIG, EXPLORER, OWNER)):
        env = _containers_env(job)
        names = [e["name"] for e in env]
        # $(VAR) expansion sees only the variables listed before: the password first.
        assert names.index("REDIS_PASSWORD") < names.index("REDIS_URL")
        assert env[names.index("REDIS_PASSWORD")] == {"name": "REDIS_PASSWORD", "valueFrom": {"secretKeyRef": {
            "name": "maddpg-redis", "key": "password"}}}
        assert "pw" not in json.dumps(job).replace("password", "")
    user = ClusterConfig("d", "i", redis_url="rediss://maddpg:s3cr%40t@redis.example:6380/2?ssl_cert_reqs=none",
                         redis_password_secret="r")
    env = _env(learner_job("r1", SPEC, user, LEARNER)["spec"]["template"]["spec"]["containers"][0])
    assert env["REDIS_URL"] == "rediss://maddpg:$(REDIS_PASSWORD)@redis.example:6380/2?ssl_cert_reqs=none"


@pytest.mark.parametrize("kind", ["learner", "explorers"])
def test_pods_pull_their_image_with_the_pull_secrets(kind):
    pod = _objects()[kind]["spec"]["template"]["spec"]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}, {"name": "mirror"}]


def _selects(selector: dict, pod_labels: dict) -> bool:
    return selector["matchLabels"].items() <= pod_labels.items()


def test_the_learner_port_is_open_to_its_own_explorers_and_metrics_to_prometheus_only():
    objects, other = _objects(), _objects("r2")
    policy = objects["netpol"]["spec"]
    learner_pod = objects["learner"]["spec"]["template"]["metadata"]["labels"]
    explorer_pod = objects["explorers"]["spec"]["template"]["metadata"]["labels"]
    assert _selects(policy["podSelector"], learner_pod) and not _selects(policy["podSelector"], explorer_pod)
    assert not _selects(policy["podSelector"], other["learner"]["spec"]["template"]["metadata"]["labels"])
    assert policy["policyTypes"] == ["Ingress"]
    zmq, metrics = policy["ingress"]
    assert zmq["ports"] == [{"port": 5555, "protocol": "TCP"}] and len(zmq["from"]) == 1
    (peer,) = zmq["from"]
    assert set(peer) == {"podSelector"} and _selects(peer["podSelector"], explorer_pod)  # this namespace only
    assert not _selects(peer["podSelector"], other["explorers"]["spec"]["template"]["metadata"]["labels"])
    assert not _selects(peer["podSelector"], learner_pod)
    assert metrics["ports"] == [{"port": 9100, "protocol": "TCP"}]
    assert metrics["from"] == [{"namespaceSelector": {"matchLabels": {"team": "obs"}},
                                "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}]
    any_namespace = learner_network_policy("r1", ClusterConfig("d", "i"), OWNER)["spec"]["ingress"][1]["from"]
    assert any_namespace == [{"namespaceSelector": {}, "podSelector": {"matchLabels": {
        "app.kubernetes.io/name": "prometheus"}}}]


def test_the_configuration_comes_from_the_settings():
    settings = ApiSettings(launcher="kubernetes", image="maddpg:dev", namespace="ml", checkpoint_uri="s3://b/p",
                           redis_url="redis://redis:6379/0", stop_timeout_s=30)
    config = ClusterConfig.from_settings(settings)
    assert config.checkpoint_uri == "s3://b/p" and config.stop_timeout_s == 30 and config.namespace == "ml"
    assert config.checkpoint_pvc is None and config.image_pull_secrets == ()
    assert config.start_deadline_s == 600.0 and config.job_ttl_s == 86_400
    given = {"checkpoint_pvc": "c", "image_pull_secrets": ["regcred"], "learner_backoff_limit": 1, "job_ttl_s": 60,
             "start_deadline_s": 90.0, "redis_password_secret": "r", "redis_password_key": "k",
             "metrics_namespace_labels": {"a": "b"}, "metrics_pod_labels": {"c": "d"}}
    config = ClusterConfig.from_settings(settings.model_copy(update={"checkpoint_uri": None, **given}))
    assert (config.checkpoint_pvc, config.image_pull_secrets, config.learner_backoff_limit, config.job_ttl_s,
            config.start_deadline_s, config.redis_password_secret, config.redis_password_key,
            config.metrics_namespace_labels, config.metrics_pod_labels) == (
        "c", ("regcred",), 1, 60, 90.0, "r", "k", {"a": "b"}, {"c": "d"})