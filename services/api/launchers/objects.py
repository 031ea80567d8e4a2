"""The Kubernetes objects of one run, as plain dicts (what the API server takes and kubernetes-validate checks):
a learner Job, a Secret with the run's key, a ClusterIP Service for the learner's ZeroMQ port, a NetworkPolicy
that opens that port to the run's explorers only, and an explorer Job of K pods. The Secret, the Service, the
NetworkPolicy and the explorer Job are owned by the learner Job, so deleting it removes the whole run."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from maddpg.runspec import RunSpec
from maddpg.transport.security import ENV_KEY_FILE
from services.api.schemas import Resources
from services.api.settings import ApiSettings

ZMQ_PORT, METRICS_PORT = 5555, 9100
RUN_DIR = "/data/run"  # the learner's run folder, an emptyDir: checkpoints that must last go to the store
CHECKPOINT_MOUNT = "/checkpoints"  # where the checkpoint claim is: RUN_ID/ in a learner pod, all of it in the API's
USER_ID = 10001  # the image's non-root user
KEY_DIR, KEY_ITEM = "/var/run/secrets/maddpg", "run-key"  # where the pods find the run's key: KEY_DIR/KEY_ITEM
MANAGED_BY = "maddpg-api"
RUN_ID_LABEL = "maddpg.io/run-id"
USER_ERROR_EXIT_CODE = 2  # a learner exits so on a user error (a bad spec): retrying cannot help
EXPLORER_RETRIES = 2  # failed explorer pods allowed per explorer (evictions aside) before the explorer Job fails
PROMETHEUS_LABELS = {"app.kubernetes.io/name": "prometheus"}  # the Prometheus Operator's labels on its pods
_MAX_NAME = 63  # Job names become pod labels (job-name), whose values are at most 63 characters


@dataclass(frozen=True)
class ClusterConfig:
    """Where and how runs' pods are made (from the API settings).

    Args:
      namespace: of every object. image, image_pull_policy: of the pods (a run may name its own image).
      checkpoint_uri: base URI of the runs' checkpoints in S3 (a run's go to BASE/RUN_ID).
      checkpoint_pvc: or a PersistentVolumeClaim for them: a learner mounts its own RUN_ID folder of it at
        `checkpoint_mount`/RUN_ID (subPath), its checkpoint URI file://`checkpoint_mount`/RUN_ID. Without either,
        runs are refused: checkpoints in a pod die with it.
      s3_endpoint: AWS_ENDPOINT_URL of the learner. s3_secret: Secret with the learner's S3 credentials.
      service_account: of the pods (None: the namespace's default).
      image_pull_secrets: names of the Secrets the kubelet pulls the pods' image with.
      redis_url: REDIS_URL of the pods (the learner's replay queue); None: chunks travel over ZeroMQ.
      redis_password_secret, redis_password_key: the Secret (and its key) holding the Redis password: the pods
        read it from there (never a plain env value), into `redis_url`'s password.
      stop_timeout_s: the learner pod's termination grace period (its final checkpoint).
      learner_backoff_limit: learner pod failures retried (evictions and exit code 2 aside).
      job_ttl_s: seconds an ended Job (and its pods' logs) stays before Kubernetes deletes it.
      start_deadline_s: seconds a run's pod may stay unable to start (Pending, image pull errors, unschedulable,
        crash loop) before the run fails.
      metrics_namespace_labels, metrics_pod_labels: where Prometheus runs: the NetworkPolicy of a learner opens
        its metrics port to those pods in those namespaces ({} namespace labels: any namespace).
    """

    namespace: str
    image: str
    image_pull_policy: str = "IfNotPresent"
    checkpoint_uri: str | None = None
    checkpoint_pvc: str | None = None
    checkpoint_mount: str = CHECKPOINT_MOUNT
    s3_endpoint: str | None = None
    s3_secret: str | None = None
    service_account: str | None = None
    image_pull_secrets: tuple[str, ...] = ()
    redis_url: str | None = None
    redis_password_secret: str | None = None
    redis_password_key: str = "redis-password"
    stop_timeout_s: float = 120.0
    learner_backoff_limit: int = 3
    job_ttl_s: int = 86_400
    start_deadline_s: float = 600.0
    metrics_namespace_labels: dict[str, str] = field(default_factory=dict)
    metrics_pod_labels: dict[str, str] = field(default_factory=lambda: dict(PROMETHEUS_LABELS))

    @classmethod
    def from_settings(cls, settings: ApiSettings) -> ClusterConfig:
        assert settings.image, "ApiSettings checks that the kubernetes launcher has an image"
        return cls(settings.namespace, settings.image, settings.image_pull_policy, settings.checkpoint_uri,
                   settings.checkpoint_pvc, CHECKPOINT_MOUNT, settings.s3_endpoint, settings.s3_secret,
                   settings.run_service_account, tuple(settings.image_pull_secrets), settings.redis_url,
                   settings.redis_password_secret, settings.redis_password_key, settings.stop_timeout_s,
                   settings.learner_backoff_limit, settings.job_ttl_s, settings.start_deadline_s,
                   dict(settings.metrics_namespace_labels), dict(settings.metrics_pod_labels))

    def start_problem(self) -> str | None:
        """Why no run may start with this configuration (the setting to change is named), or None."""
        if self.checkpoint_uri and self.checkpoint_pvc:
            return ("both MADDPG_API_CHECKPOINT_URI and MADDPG_API_CHECKPOINT_PVC are set: choose one checkpoint "
                    "store for the runs (Helm: s3.enabled or checkpoints.pvc.enabled)")
        if not self.checkpoint_pvc and not (self.checkpoint_uri or "").startswith("s3://"):
            found = f" ({self.checkpoint_uri} is in the learner pod)" if self.checkpoint_uri else ""
            return (f"the kubernetes launcher needs a checkpoint store that outlives pods{found}: set "
                    f"MADDPG_API_CHECKPOINT_URI=s3://BUCKET/PREFIX or MADDPG_API_CHECKPOINT_PVC=CLAIM "
                    f"(Helm: s3.enabled and s3.bucket, or checkpoints.pvc.enabled)")
        if self.redis_url and urlsplit(self.redis_url).password and not self.redis_password_secret:
            return ("REDIS_URL holds a password, which would be a plain env value of every run pod: set "
                    "MADDPG_API_REDIS_PASSWORD_SECRET (and MADDPG_API_REDIS_PASSWORD_KEY) to the Secret that holds "
                    "it (Helm: redis.auth)")
        return None

    def run_checkpoints(self, run_id: str) -> str | None:
        """Where a run's checkpoints go: BASE/RUN_ID, or its folder of the checkpoint claim."""
        if self.checkpoint_pvc:
            return f"file://{self.checkpoint_mount.rstrip('/')}/{run_id}"
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


def run_selector() -> str:
    """A label selector for the Jobs and pods of every run this API made."""
    return f"app.kubernetes.io/managed-by={MANAGED_BY}"


def owner_reference(name: str, uid: str) -> dict:
    """An owner reference to the created learner Job (its uid comes from the API server)."""
    return {"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": uid}


def _env(**values: str | None) -> list[dict]:
    return [{"name": name, "value": value} for name, value in values.items() if value is not None]


def _redis_env(config: ClusterConfig) -> list[dict]:
    """REDIS_URL, its password (if any) read from the Secret and put in by Kubernetes' $(VAR) expansion, which
    only sees variables listed before it: so these come first."""
    if not config.redis_url:
        return []
    if not config.redis_password_secret:
        return _env(REDIS_URL=config.redis_url)
    url = urlsplit(config.redis_url)
    user = url.netloc.rpartition("@")[0].partition(":")[0] if "@" in url.netloc else ""
    netloc = f"{user}:$(REDIS_PASSWORD)@{url.netloc.rpartition('@')[2]}"
    return [{"name": "REDIS_PASSWORD", "valueFrom": {"secretKeyRef": {"name": config.redis_password_secret,
                                                                      "key": config.redis_password_key}}},
            {"name": "REDIS_URL", "value": urlunsplit(url._replace(netloc=netloc))}]


def _container(role: str, image: str, config: ClusterConfig, args: list[str], env: list[dict],
               resources: Resources, ports: list[dict]) -> dict:
    return {
        "name": role, "image": image, "imagePullPolicy": config.image_pull_policy, "args": args,
        "env": [*_redis_env(config), *env, {"name": ENV_KEY_FILE, "value": f"{KEY_DIR}/{KEY_ITEM}"}],
        "ports": ports, "resources": resources.model_dump(),
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"},
                         {"name": "run-key", "mountPath": KEY_DIR, "readOnly": True}],
    }


def _pod(run_id: str, role: str, container: dict, config: ClusterConfig, grace_s: int | None = None,
         volumes: tuple[dict, ...] = ()) -> dict:
    spec = {
        # Never: a failed pod is replaced by a new one (the Job's podFailurePolicy needs it, and the failed pod
        # keeps its logs until the Job's TTL).
        "restartPolicy": "Never", "automountServiceAccountToken": False,  # runs never call the API
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
    if config.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": name} for name in config.image_pull_secrets]
    return {"metadata": {"labels": labels(run_id, role)}, "spec": spec}


def _metadata(name: str, run_id: str, component: str, config: ClusterConfig, owner: dict | None) -> dict:
    meta = {"name": name, "namespace": config.namespace, "labels": labels(run_id, component)}
    if owner is not None:
        meta["ownerReferences"] = [owner]
    return meta


def _ignore_disruptions() -> dict:
    """A podFailurePolicy rule: pods evicted, preempted or drained from their node (the DisruptionTarget
    condition) are replaced without counting as failures."""
    return {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}


def learner_job(run_id: str, spec: RunSpec, config: ClusterConfig, resources: Resources,
                image: str | None = None) -> dict:
    """The learner's Job: one pod at a time. A crashed pod is replaced (`learner_backoff_limit` times) and the
    new one resumes from the newest checkpoint in the run's store; a pod disrupted by the cluster is replaced
    without counting; exit code 2 (a user error) fails the Job at once.

    A deleted learner pod gets SIGTERM and `stop_timeout_s` to write its final checkpoint.
    """
    env = _env(MADDPG_RUN_ID=run_id, MADDPG_RUN_SPEC=spec.model_dump_json(),
               MADDPG_LEARNER_BIND=f"tcp://0.0.0.0:{ZMQ_PORT}", MADDPG_CHECKPOINT_URI=config.run_checkpoints(run_id),
               AWS_ENDPOINT_URL=config.s3_endpoint, MADDPG_METRICS_PORT=str(METRICS_PORT), MADDPG_LOG_FORMAT="json",
               OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", TF_CPP_MIN_LOG_LEVEL="2")
    container = _container("learner", image or config.image, config, ["learner", "--quiet", "--run-dir", RUN_DIR],
                           env, resources, [{"name": "zmq", "containerPort": ZMQ_PORT, "protocol": "TCP"},
                                            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"}])
    container["volumeMounts"].append({"name": "data", "mountPath": "/data"})
    volumes = [{"name": "data", "emptyDir": {}}]
    if config.checkpoint_pvc:  # the run's own folder of the claim: a learner sees no other run's checkpoints
        container["volumeMounts"].append({"name": "checkpoints", "subPath": run_id,
                                          "mountPath": f"{config.checkpoint_mount.rstrip('/')}/{run_id}"})
        volumes.append({"name": "checkpoints", "persistentVolumeClaim": {"claimName": config.checkpoint_pvc}})
    if config.s3_secret:  # optional: a missing Secret fails the learner's first store check, with a clear log
        container["envFrom"] = [{"secretRef": {"name": config.s3_secret, "optional": True}}]
    pod = _pod(run_id, "learner", container, config, grace_s=math.ceil(config.stop_timeout_s), volumes=tuple(volumes))
    # With a podFailurePolicy the Job makes a new pod only once the old one has terminated (podReplacementPolicy
    # Failed): two learners never write one checkpoint store. onPodConditions: [] is no condition (the API
    # server checks its length); Kubernetes 1.25's schema requires the field.
    failure_policy = {"rules": [
        {"action": "FailJob", "onExitCodes": {"containerName": "learner", "operator": "In",
                                              "values": [USER_ERROR_EXIT_CODE]}, "onPodConditions": []},
        _ignore_disruptions()]}
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": _metadata(RunNames.of(run_id).learner, run_id, "learner", config, None),
            "spec": {"backoffLimit": config.learner_backoff_limit, "podFailurePolicy": failure_policy,
                     "completions": 1, "parallelism": 1, "ttlSecondsAfterFinished": config.job_ttl_s,
                     "template": pod}}


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


def learner_network_policy(run_id: str, config: ClusterConfig, owner: dict) -> dict:
    """Who may connect to the learner pod: the run's own explorers to its ZeroMQ port, Prometheus to its metrics
    port; nothing else (ingress only: the learner still reaches S3, Redis and DNS)."""
    namespaces = {"matchLabels": dict(config.metrics_namespace_labels)} if config.metrics_namespace_labels else {}
    prometheus = {"namespaceSelector": namespaces, "podSelector": {"matchLabels": dict(config.metrics_pod_labels)}}
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": _metadata(RunNames.of(run_id).learner, run_id, "learner", config, owner),
            "spec": {"podSelector": {"matchLabels": {RUN_ID_LABEL: run_id, "app.kubernetes.io/component": "learner"}},
                     "policyTypes": ["Ingress"],
                     "ingress": [
                         {"from": [{"podSelector": {"matchLabels": {RUN_ID_LABEL: run_id,
                                                                    "app.kubernetes.io/component": "explorer"}}}],
                          "ports": [{"port": ZMQ_PORT, "protocol": "TCP"}]},
                         {"from": [prometheus], "ports": [{"port": METRICS_PORT, "protocol": "TCP"}]}]}}


def explorer_job(run_id: str, spec: RunSpec, config: ClusterConfig, resources: Resources, owner: dict,
                 image: str | None = None) -> dict:
    """The explorers' Job: `spec.explorers` pods at once, each named by its pod; a failed one is replaced.

    An explorer waits for a learner that is not up yet or restarting (10 minutes by default), so a learner
    restart costs no explorer; one that gives up, or crashes, is replaced, `EXPLORER_RETRIES` times per
    explorer (evicted pods aside) before the Job fails, and with it the run.
    """
    names = RunNames.of(run_id)
    env = [*_env(MADDPG_LEARNER_ADDRESS=f"tcp://{names.learner}:{ZMQ_PORT}", MADDPG_ENVS=str(spec.envs_per_explorer),
                 MADDPG_METRICS_PORT=str(METRICS_PORT), MADDPG_LOG_FORMAT="json", OPENBLAS_NUM_THREADS="1",
                 OMP_NUM_THREADS="1"),
           {"name": "MADDPG_EXPLORER_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]
    container = _container("explorer", image or config.image, config, ["explorer"], env, resources,
                           [{"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"}])
    pod = _pod(run_id, "explorer", container, config)
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": _metadata(names.explorers, run_id, "explorer", config, owner),
            "spec": {"backoffLimit": EXPLORER_RETRIES * spec.explorers,
                     "podFailurePolicy": {"rules": [_ignore_disruptions()]},
                     "completions": spec.explorers, "parallelism": spec.explorers,
                     "ttlSecondsAfterFinished": config.job_ttl_s, "template": pod}}
