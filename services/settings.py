"""Settings of `maddpg train`, `maddpg learner` and `maddpg explorer`: one typed object, read once in `main`.

Each setting has one environment variable and, where a user gives it per run, one flag; both are named on its
field, so the flags' help, the error messages and the tests come from here. A flag given wins over the
variable. The names are those the Kubernetes launcher (services/api/launchers/objects.py) and the local
launcher (maddpg/launch.py) set: `MADDPG_<SECTION>_<FIELD>` for new ones, and the established short names
(`REDIS_URL`, `MADDPG_RUN_KEY`, `MADDPG_ENVS`, ...) kept as they were. The API has its own `ApiSettings`.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, Json, SecretStr
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict


def _address(*schemes: str, plain: str | None = None):
    """A validator: the value is `plain` or starts with one of `schemes` followed by something."""
    def check(value: str | None) -> str | None:
        if value is None or value == plain or any(value.startswith(s) and len(value) > len(s) for s in schemes):
            return value
        expected = " or ".join([repr(plain)] * (plain is not None) + [f"{s}..." for s in schemes])
        raise ValueError(f"expected {expected}, not {value!r}")
    return AfterValidator(check)


ZMQ_ADDRESS = _address("tcp://", "ipc://")


def setting(default: Any = None, *, env: str, flag: str | None = None, description: str, **constraints) -> Any:
    """A field read from environment variable `env` (and, if named, set by command-line `flag`)."""
    extra = {"env": env, **({"flag": flag} if flag else {})}
    if callable(default):
        return Field(default_factory=default, description=description, json_schema_extra=extra, **constraints)
    return Field(default, description=description, json_schema_extra=extra, **constraints)


def names(field: FieldInfo) -> tuple[str, str | None]:
    """(environment variable, flag or None) of a field made by `setting`."""
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    return str(extra["env"]), extra.get("flag")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LearnerSettings(_Section):
    """The learner's serving side."""

    bind: Annotated[str, ZMQ_ADDRESS] = setting("tcp://0.0.0.0:5555", env="MADDPG_LEARNER_BIND", flag="--bind",
                                                description="ZeroMQ address to serve explorers on")
    run_id: str | None = setting(None, env="MADDPG_RUN_ID", flag="--run-id", max_length=128,
                                 description="names the run's Redis stream; a restarted learner must reuse it "
                                             "(default: the run folder's name)")
    max_batch: int = setting(1024, env="MADDPG_LEARNER_MAX_BATCH", flag="--max-batch", ge=1, le=65_536,
                             description="most envs per inference batch")
    max_wait_ms: float = setting(0.5, env="MADDPG_LEARNER_MAX_WAIT_MS", flag="--max-wait-ms", ge=0, le=1000,
                                 description="how long to wait for more requests before serving a batch (ms)")


class ExplorerSettings(_Section):
    """Where an explorer connects and how much it steps."""

    learner: Annotated[str | None, ZMQ_ADDRESS] = setting(
        None, env="MADDPG_LEARNER_ADDRESS", flag="--learner",
        description="the learner's address, e.g. tcp://learner:5555 (required)")
    envs: int = setting(16, env="MADDPG_ENVS", flag="--envs", ge=1, le=4096, description="env copies to step")
    id: str = setting(lambda: f"{socket.gethostname()}-{os.getpid()}", env="MADDPG_EXPLORER_ID",
                      flag="--explorer-id", min_length=1, max_length=256,
                      description="a stable name for this explorer (default: HOST-PID)")
    seed: int | None = setting(None, env="MADDPG_EXPLORER_SEED", flag="--seed", ge=0, le=2**31 - 1,
                               description="env seed (default: derived from the run seed and the id)")
    request_timeout_s: float = setting(30.0, env="MADDPG_EXPLORER_REQUEST_TIMEOUT_S", flag="--request-timeout",
                                       gt=0, le=3600,
                                       description="seconds without a reply before reconnecting and resending")
    give_up_after_s: float = setting(
        600.0, env="MADDPG_EXPLORER_GIVE_UP_AFTER_S", flag="--give-up-after", gt=0, le=86_400,
        description="seconds without any answer from the learner before exiting with an error; long enough for "
                    "a learner pod to be replaced and compile")


class TransportSettings(_Section):
    """The run's key: only peers holding it talk to its learner (CurveZMQ) or write its Redis stream."""

    run_key: SecretStr | None = setting(None, env="MADDPG_RUN_KEY",
                                        description="the run's key, 64 hex characters (wins over a key file set "
                                                    "in the environment)")
    run_key_file: Path | None = setting(None, env="MADDPG_RUN_KEY_FILE", flag="--run-key-file",
                                        description="a file holding the run's key (the flag wins over "
                                                    "MADDPG_RUN_KEY, the variable does not)")


class ReplaySettings(_Section):
    """The replay queue between explorers and the learner."""

    queue: Annotated[str, _address("redis://", "rediss://", plain="local")] = setting(
        "local", env="REDIS_URL", flag="--queue", max_length=4096,
        description="local (chunks over ZeroMQ into the learner's memory) or redis://HOST:PORT/DB (Redis Streams); "
                    "an explorer writes to the Redis its learner names unless this names one")

    @property
    def redis_url(self) -> str | None:
        return None if self.queue == "local" else self.queue


class StorageSettings(_Section):
    """Where checkpoints go."""

    checkpoint_uri: str | None = setting(None, env="MADDPG_CHECKPOINT_URI", min_length=1, max_length=4096,
                                         description="checkpoint store: s3://bucket/prefix, file:///path or a "
                                                     "folder (default: the run folder's checkpoints/); S3 "
                                                     "endpoint and keys come from AWS_* variables")


class ServiceSettings(BaseSettings):
    """Everything the training roles read from their environment, validated at once."""

    model_config = SettingsConfigDict(extra="forbid", frozen=True)

    log_format: Literal["json", "text"] = setting(
        "json", env="MADDPG_LOG_FORMAT", flag="--log-format",
        description="json: one JSON object per line on stdout (timestamp, level, role, run_id, step, message; for "
                    "kubectl logs); text: for a terminal")
    metrics_port: int | None = setting(None, env="MADDPG_METRICS_PORT", flag="--metrics-port", ge=0, le=65_535,
                                       description="serve Prometheus metrics at http://0.0.0.0:PORT/metrics (0: a "
                                                   "free port, logged at start; default: no metrics server)")
    run_spec: Json[dict[str, Any]] | None = setting(
        None, env="MADDPG_RUN_SPEC", description="a run spec as JSON text (how Kubernetes pods get it); --spec FILE "
                                                 "and spec flags win over it")
    learner: LearnerSettings = Field(default_factory=LearnerSettings, description="the learner")
    explorer: ExplorerSettings = Field(default_factory=ExplorerSettings, description="an explorer")
    transport: TransportSettings = Field(default_factory=TransportSettings, description="the run's key")
    replay: ReplaySettings = Field(default_factory=ReplaySettings, description="the replay queue")
    storage: StorageSettings = Field(default_factory=StorageSettings, description="checkpoints")

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   **_: PydanticBaseSettingsSource) -> tuple[PydanticBaseSettingsSource, ...]:
        """Flags (init arguments) over each field's one variable; no .env files or other names."""
        return init_settings, NamedEnvSource(settings_cls)

    @classmethod
    def fields(cls) -> list[tuple[str | None, str, FieldInfo]]:
        """(section or None for a top-level one, name, field) of every setting."""
        out: list[tuple[str | None, str, FieldInfo]] = []
        for name, field in cls.model_fields.items():
            if isinstance(field.annotation, type) and issubclass(field.annotation, _Section):
                out += [(name, sub, info) for sub, info in field.annotation.model_fields.items()]
            else:
                out.append((None, name, field))
        return out


class NamedEnvSource(PydanticBaseSettingsSource):
    """Reads every setting from the one environment variable its field names; an empty variable is unset."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ reads the sections whole

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for section, name, field in self.settings_cls.fields():
            value = os.environ.get(names(field)[0])
            if value:
                (values.setdefault(section, {}) if section else values)[name] = value
        return values
