"""Settings of the control API, read once from `MADDPG_API_*` environment variables (and REDIS_URL,
MADDPG_LOG_FORMAT)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.api.quantities import MEMORY_PATTERN, quantity

# Where a pod finds its own namespace (the service account's mounted token folder).
NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
_DNS_LABEL = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
_DNS_SUBDOMAIN = r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$"
# An image reference: [host[:port]/]path[:tag][@sha256:digest].
IMAGE_PATTERN = (r"^[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]{1,5})?(/[a-z0-9]+([._-][a-z0-9]+)*)*"
                 r"(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[a-f0-9]{64})?$")


def in_cluster_namespace() -> str:
    """The namespace of the pod this runs in, or "default" outside a cluster."""
    try:
        return NAMESPACE_FILE.read_text().strip() or "default"
    except OSError:
        return "default"


class ApiSettings(BaseSettings):
    """The API's own configuration (a run's options come in its run spec)."""

    model_config = SettingsConfigDict(env_prefix="MADDPG_API_", env_nested_delimiter="__", extra="ignore",
                                      populate_by_name=True)

    # Serving (`maddpg api` flags win over these).
    host: str = Field("127.0.0.1", min_length=1, max_length=253, json_schema_extra={"flag": "--host"},
                      description="address to listen on")
    port: int = Field(8000, ge=1, le=65_535, json_schema_extra={"flag": "--port"}, description="port to listen on")
    log_format: Literal["json", "text"] = Field(
        "json", validation_alias=AliasChoices("MADDPG_LOG_FORMAT", "log_format"),
        json_schema_extra={"flag": "--log-format"},
        description="json: one JSON object per line on stdout (for kubectl logs); text: for a terminal")

    runs_dir: Path = Field(Path("runs/api"), description="folder that holds one run folder per run")
    registry: Path | None = Field(
        None, description="SQLite file of the run registry (without a Redis URL); default RUNS_DIR/registry.sqlite3")
    launcher: Literal["local", "kubernetes"] = Field(
        "local", description="where runs execute: local (subprocesses of the API host) or kubernetes (Jobs)")
    max_explorers: int = Field(8, ge=1, le=64, description="most explorers one run may ask for")
    max_envs_per_explorer: int = Field(
        256, ge=1, le=4096, description="most env copies per explorer one run may ask for")
    max_active_runs: int | None = Field(
        None, ge=1, le=10_000, description="most runs running or stopping at once (more are refused with 429); "
                                           "default: 4 with the local launcher, 64 with kubernetes")
    max_run_memory: str = Field(
        "4Gi", pattern=MEMORY_PATTERN,
        description="most memory one run's learner may need by the API's estimate (replay buffer, update, networks); "
                    "a larger run is refused with 422 naming the field to lower. kubernetes: the learner pod's memory "
                    "limit too, when lower")
    max_body_bytes: int = Field(
        65_536, ge=1024, le=16 * 2**20, description="largest request body taken; a larger one is refused with 413")
    token: SecretStr | None = Field(None, description="bearer token required on mutating routes (MADDPG_API_TOKEN)")
    redis_url: str | None = Field(
        None, validation_alias=AliasChoices("REDIS_URL", "MADDPG_API_REDIS_URL"), pattern=r"^rediss?://",
        description="Redis (REDIS_URL): holds the run registry and the runs' replay queues; unset: SQLite registry "
                    "and in-process queues")
    stop_timeout_s: float = Field(
        120.0, gt=0, le=86_400, description="seconds a stopping learner gets for its final checkpoint")
    # The kubernetes launcher.
    namespace: str = Field(default_factory=in_cluster_namespace, pattern=_DNS_LABEL,
                           description="namespace of the runs' Jobs; default: the API pod's own, else 'default'")
    image: str | None = Field(None, pattern=IMAGE_PATTERN, max_length=255,
                              description="image of the runs' pods (required with launcher=kubernetes)")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        "IfNotPresent", description="pull policy of the runs' pods")
    checkpoint_uri: str | None = Field(
        None, pattern=r"^(s3|file)://.", description="base URI of the runs' checkpoints (s3://bucket/prefix); a "
                                                     "run's go to BASE/RUN_ID, where the API reads its progress")
    s3_endpoint: str | None = Field(
        None, pattern=r"^https?://", description="S3-compatible endpoint, given to the pods as AWS_ENDPOINT_URL")
    s3_secret: str | None = Field(
        None, pattern=_DNS_SUBDOMAIN,
        description="Secret with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY for the pods (envFrom, optional)")
    run_service_account: str | None = Field(
        None, pattern=_DNS_SUBDOMAIN, description="service account of the runs' pods; default: the namespace's")
    checkpoint_pvc: str | None = Field(
        None, pattern=_DNS_SUBDOMAIN,
        description="PersistentVolumeClaim for runs' checkpoints, a folder per run; only one of this and "
                    "CHECKPOINT_URI (kubernetes runs need one: checkpoints in a pod die with it)")
    image_pull_secrets: list[str] = Field(
        default_factory=list, description="Secrets the kubelet pulls the run pods' image with (JSON list)")
    learner_backoff_limit: int = Field(
        3, ge=0, le=100, description="learner pod failures retried (evictions and exit code 2 aside)")
    start_deadline_s: float = Field(
        600.0, gt=0, le=86_400, description="seconds a run's pod may be unable to start before the run fails")
    job_ttl_s: int = Field(86_400, ge=0, description="ttlSecondsAfterFinished of runs' Jobs (keeps logs readable)")
    redis_password_secret: str | None = Field(
        None, pattern=_DNS_SUBDOMAIN,
        description="Secret holding the Redis password, for run pods (required when REDIS_URL has one)")
    redis_password_key: str = Field("redis-password", max_length=253, description="key of the password in it")
    metrics_namespace_labels: dict[str, str] = Field(
        default_factory=dict, description="Prometheus's namespace labels for each run's NetworkPolicy ({}: any)")
    metrics_pod_labels: dict[str, str] = Field(
        default_factory=lambda: {"app.kubernetes.io/name": "prometheus"},
        description="Prometheus pod labels for each run's NetworkPolicy")

    @model_validator(mode="after")
    def _kubernetes_needs_an_image(self) -> ApiSettings:
        if self.launcher == "kubernetes" and not self.image:
            raise ValueError("MADDPG_API_IMAGE is required with MADDPG_API_LAUNCHER=kubernetes: the image of the "
                             "runs' learner and explorer pods, e.g. ghcr.io/ORG/maddpg:0.1.0")
        return self

    @property
    def active_run_cap(self) -> int:
        """max_active_runs, or the launcher's default: local runs share this host's cores."""
        if self.max_active_runs is not None:
            return self.max_active_runs
        return 64 if self.launcher == "kubernetes" else 4

    @property
    def max_run_memory_bytes(self) -> int:
        return int(quantity(self.max_run_memory))

    @property
    def registry_path(self) -> Path:
        return self.registry if self.registry is not None else self.runs_dir / "registry.sqlite3"
