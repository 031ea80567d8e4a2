"""The Kubernetes objects of one run, as plain dicts (what the API server takes and kubernetes-validate checks):
a learner Job, a Secret with the run's key, a ClusterIP Service for the learner's ZeroMQ port, and an explorer
Job of K pods. The Secret, the Service and the explorer Job are owned by the learner Job, so deleting it removes
the whole run."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

from maddpg.runspec import RunSpec
from maddpg.transport.security import ENV_KEY_FILE
from services.api.schemas import Resources
from services.api.settings import ApiSettings

ZMQ_PORT, METRICS_PORT = 5555, 9100
RUN_DIR = "/data/run"  # the learner's run folder, an emptyDir: checkpoints that must last go to the store
USER_ID = 10001  # the image's non-root user
KEY_DIR, KEY_ITEM = "/var/run/secrets/maddpg", "run-key"  # where the pods find the run's key: KEY_DIR/KEY_ITEM
MANAGED_BY = "maddpg-api"
RUN_ID_LABEL = "maddpg.io/run-id"
_MAX_NAME = 63  # Job names become pod labels (job-name), whose values are at most 63 characters


@dataclass(frozen=True)
class ClusterConfig:
    """Where and how runs' pods are made (from the API settings).

    Args:
      namespace: of every object. image, image_pull_policy: of the pods (a run may name its own image).
      checkpoint_uri: base URI of the runs' checkpoints (a run's go to BASE/RUN_ID); None: the pod's folder.
      s3_endpoint: AWS_ENDPOINT_URL of the learner. s3_secret: Secret with the learner's S3 credentials.
      service_account: of the pods (None: the namespace's default).
      redis_url: REDIS_URL of the pods (the learner's replay queue); None: chunks travel over ZeroMQ.
      stop_timeout_s: the learner pod's termination grace period (its final checkpoint).
    """

    namespace: str
    image: str
    image_pull_policy: str = "IfNotPresent"
    checkpoint_uri: str | None = None
    s3_endpoint: str | None = None
    s3_secret: str | None = None
    service_account: str | None = None
    redis_url: str | None = None
    stop_timeout_s: float = 120.0

    @classmethod
    def from_settings(cls, settings: ApiSettings) -> ClusterConfig:
        assert settings.image, "ApiSettings checks that the kubernetes launcher has an image"
        return cls(settings.namespace, settings.image, settings.image_pull_policy, settings.checkpoint_uri,
                   settings.s3_endpoint, settings.s3_secret, settings.run_service_account, settings.redis_url,
                   settings.stop_timeout_s)

    def run_checkpoints(self, run_id: str) -> str | None:
        """Where a run's checkpoints go: BASE/RUN_ID."""
        return f"{self.checkpoint_uri.rstrip('/')}/{run_id}" if self.checkpoint_uri else None


@dataclass(frozen=True)
class RunNames:
    """Names of a run's objects; the Service shares the learner Job's name."""

    learner: str
    explorers: str
    key: str

    @classmethod
    def of(cls, run_id: str) -> RunNames:
        room = _MAX_NAME - len("maddpg--explorers")
        base = run_id
        if len(run_id) > room:  # keep the names unique: a cut id plus a hash of the whole
            digest = hashlib.sha256(run_id.encode()).hexdigest()[:6]
            base = f"{run_id[:room - 7].rstrip('-')}-{digest}"
        return cls(f"maddpg-{base}-learner", f"maddpg-{base}-explorers", f"maddpg-{base}-run-key")


def labels(run_id: str, component: str) -> dict[str, str]:
    """The labels of every object and pod of a run."""
    return {"app.kubernetes.io/name": "maddpg", "app.kubernetes.io/part-of": "maddpg",
            "app.kubernetes.io/managed-by": MANAGED_BY, "app.kubernetes.io/component": component,
            "app.kubernetes.io/instance": run_id, RUN_ID_LABEL: run_id}


def learner_selector() -> str:
    """A label selector for the learner Jobs this API made."""
    return f"app.kubernetes.io/managed-by={MANAGED_BY},app.kubernetes.io/component=learner"


def owner_reference(name: str, uid: str) -> dict:
    """An owner reference to the created learner Job (its uid comes from the API server)."""
    return {"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": uid}


def _env(**values: str | None) -> list[dict]:
    return [{"name": name, "value": value} for name, value in values.items() if value is not None]


def _container(role: str, image: str, config: ClusterConfig, args: list[str], env: list[dict],
               resources: Resources, ports: list[dict]) -> dict:
    return {
        "name": role, "image": image, "imagePullPolicy": config.image_pull_policy, "args": args,
        "env": [*env, {"name": ENV_KEY_FILE, "value": f"{KEY_DIR}/{KEY_ITEM}"}],
        "ports": ports, "resources": resources.model_dump(),
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"},
                         {"name": "run-key", "mountPath": KEY_DIR, "readOnly": True}],
    }


def _pod(run_id: str, role: str, container: dict, config: ClusterConfig, restart_policy: str,
         grace_s: int | None = None, volumes: tuple[dict, ...] = ()) -> dict:
    spec = {
        "restartPolicy": restart_policy, "automountServiceAccountToken": False,  # runs never call the API
        "securityContext": {"runAsNonRoot": True, "runAsUser": USER_ID, "runAsGroup": USER_ID, "fsGroup": USER_ID,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
        # The root filesystem is read-only. The key file would be root's with mode 0400: fsGroup makes the
        # kubelet give it to the pod's group with group read (0440), so uid 10001 reads it and no other user does.
        "volumes": [{"name": "tmp", "emptyDir": {}},
                    {"name": "run-key", "secret": {"secretName": RunNames.of(run_id).key, "defaultMode": 0o400}},
                    *volumes],
    }
    if grace_s is not None:
        spec["terminationGracePeriodSeconds"] = grace_s
    if config.service_account:
        spec["serviceAccountName"] = config.service_account
    return {"metadata": {"labels": labels(run_id, role)}, "spec": spec}


def _metadata(name: str, run_id: str, component: str, config: ClusterConfig, owner: dict | None) -> dict:
    meta = {"name": name, "namespace": config.namespace, "labels": labels(run_id, component)}
    if owner is not None:
        meta["ownerReferences"] = [owner]
    return meta


def learner_job(run_id: str, spec: RunSpec, config: ClusterConfig, resources: Resources,
                image: str | None = None) -> dict:
    """The learner's Job: one pod, never restarted (a crash fails the run; its checkpoints stay in the store).

    A deleted learner pod gets SIGTERM and `stop_timeout_s` to write its final checkpoint.
    """
    env = _env(MADDPG_RUN_ID=run_id, MADDPG_RUN_SPEC=spec.model_dump_json(),
               MADDPG_LEARNER_BIND=f"tcp://0.0.0.0:{ZMQ_PORT}", REDIS_URL=config.redis_url,
               MADDPG_CHECKPOINT_URI=config.run_checkpoints(run_id), AWS_ENDPOINT_URL=config.s3_endpoint,
               MADDPG_METRICS_PORT=str(METRICS_PORT), MADDPG_LOG_FORMAT="json", OPENBLAS_NUM_THREADS="1",
               OMP_NUM_THREADS="1", TF_CPP_MIN_LOG_LEVEL="2")
    container = _container("learner", image or config.image, config, ["learner", "--quiet", "--run-dir", RUN_DIR],
                           env, resources, [{"name": "zmq", "containerPort": ZMQ_PORT, "protocol": "TCP"},
                                            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"}])
    container["volumeMounts"].append({"name": "data", "mountPath": "/data"})
    if config.s3_secret:  # optional: a missing Secret fails the learner's first store check, with a clear log
        container["envFrom"] = [{"secretRef": {"name": config.s3_secret, "optional": True}}]
    pod = _pod(run_id, "learner", container, config, "Never", grace_s=math.ceil(config.stop_timeout_s),
               volumes=({"name": "data", "emptyDir": {}},))
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": _metadata(RunNames.of(run_id).learner, run_id, "learner", config, None),
            "spec": {"backoffLimit": 0, "completions": 1, "parallelism": 1, "template": pod}}


def run_key_secret(run_id: str, key_text: str, config: ClusterConfig, owner: dict) -> dict:
    """The run's key (`RunKey.text`) for the learner and explorer pods, which mount it as a file: a Secret and
    not an env var, which `kubectl describe` would show. Immutable: a run keeps its key to the end."""
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "immutable": True,
            "metadata": _metadata(RunNames.of(run_id).key, run_id, "learner", config, owner),
            "stringData": {KEY_ITEM: key_text}}


def learner_service(run_id: str, config: ClusterConfig, owner: dict) -> dict:
    """The learner's ZeroMQ port as a ClusterIP Service (explorers connect to tcp://NAME:5555)."""
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": _metadata(RunNames.of(run_id).learner, run_id, "learner", config, owner),
            "spec": {"type": "ClusterIP",
                     "selector": {RUN_ID_LABEL: run_id, "app.kubernetes.io/component": "learner"},
                     "ports": [{"name": "zmq", "port": ZMQ_PORT, "targetPort": "zmq", "protocol": "TCP"}]}}


def explorer_job(run_id: str, spec: RunSpec, config: ClusterConfig, resources: Resources, owner: dict,
                 image: str | None = None) -> dict:
    """The explorers' Job: `spec.explorers` pods at once, each named by its pod; a failed one is restarted."""
    names = RunNames.of(run_id)
    env = [*_env(MADDPG_LEARNER_ADDRESS=f"tcp://{names.learner}:{ZMQ_PORT}", MADDPG_ENVS=str(spec.envs_per_explorer),
                 REDIS_URL=config.redis_url, MADDPG_METRICS_PORT=str(METRICS_PORT), MADDPG_LOG_FORMAT="json",
                 OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1"),
           {"name": "MADDPG_EXPLORER_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]
    container = _container("explorer", image or config.image, config, ["explorer"], env, resources,
                           [{"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"}])
    pod = _pod(run_id, "explorer", container, config, "OnFailure")
    # An explorer gives up on a learner that is not up yet (image pull, start) and is restarted: allow that
    # a few times per explorer before the Job counts as failed.
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": _metadata(names.explorers, run_id, "explorer", config, owner),
            "spec": {"backoffLimit": 6 * spec.explorers, "completions": spec.explorers,
                     "parallelism": spec.explorers, "template": pod}}
