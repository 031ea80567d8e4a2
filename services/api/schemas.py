"""Request and response models of the control API."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from maddpg.runspec import RunSpec
from services.api.quantities import CPU_PATTERN, MEMORY_PATTERN, quantity
from services.api.settings import IMAGE_PATTERN

RunStatus = Literal["running", "stopping", "stopped", "finished", "failed"]
RUN_ID_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"  # a DNS label: also a Kubernetes object name


# A reading that may be missing; one that is not a finite number (a diverged run) is missing too: JSON has none.
FiniteOrNone = Annotated[float | None, AfterValidator(lambda v: v if v is None or math.isfinite(v) else None)]


class Quantities(BaseModel):
    """CPU and memory of a container, as Kubernetes quantities above zero (the patterns say so)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    cpu: str = Field(pattern=CPU_PATTERN, description="cores above 0: '2', '0.5' or '500m'")
    memory: str = Field(pattern=MEMORY_PATTERN, description="bytes above 0: '512Mi', '4Gi' or '1G'")


class Resources(BaseModel):
    """Requests (what the scheduler reserves) and limits (the most the container may use) of a pod."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    requests: Quantities
    limits: Quantities

    @model_validator(mode="after")
    def _limits_cover_requests(self) -> Resources:
        for name in ("cpu", "memory"):
            request, limit = getattr(self.requests, name), getattr(self.limits, name)
            if quantity(limit) < quantity(request):
                raise ValueError(f"limits.{name} {limit!r} is below requests.{name} {request!r}; "
                                 f"Kubernetes refuses such a pod: raise the limit or lower the request")
        return self


LEARNER_RESOURCES = Resources(requests=Quantities(cpu="1", memory="2Gi"), limits=Quantities(cpu="2", memory="4Gi"))
EXPLORER_RESOURCES = Resources(requests=Quantities(cpu="500m", memory="512Mi"),
                               limits=Quantities(cpu="1", memory="1Gi"))
_POD_FIELDS = {"image", "learner_resources", "explorer_resources"}


class RunCreate(RunSpec):
    """A run spec (the same fields as `maddpg train`) plus an optional run id and, for the kubernetes
    launcher, the pods' image and resources. Strict: `false` is no number."""

    model_config = ConfigDict(strict=True)

    explorers: int = Field(
        1, ge=1, le=64, description="explorer processes; the API launches distributed runs, so at least 1")
    run_id: str | None = Field(
        None, pattern=RUN_ID_PATTERN,
        description="id of the new run (lowercase letters, digits and '-', at most 63); default: generated")

    image: str | None = Field(
        None, pattern=IMAGE_PATTERN, max_length=255,
        description="kubernetes launcher: image of the run's pods; default: the API's MADDPG_API_IMAGE")
    learner_resources: Resources = Field(
        LEARNER_RESOURCES, description="kubernetes launcher: CPU and memory of the learner pod")
    explorer_resources: Resources = Field(
        EXPLORER_RESOURCES, description="kubernetes launcher: CPU and memory of each explorer pod")

    def spec(self) -> RunSpec:
        return RunSpec.model_validate(self.model_dump(exclude={"run_id"} | _POD_FIELDS))

    def pod_fields_set(self) -> list[str]:
        """The pod fields the request gave (they apply to the kubernetes launcher only)."""
        return sorted(self.model_fields_set & _POD_FIELDS)


class Progress(BaseModel):
    """How far a run got: live from its run folder (local runs), or as of its newest checkpoint (runs whose
    run folder is in a pod: the counters of the checkpoint's manifest, mean reward of the last 100 included)."""

    source: Literal["run_folder", "checkpoint", "none"] = Field(
        "run_folder", description="run_folder: its rewards CSV (live); checkpoint: the newest checkpoint's "
                                  "counters (as of that checkpoint); none: nothing to read")
    env_steps: int = Field(0, description="env steps taken by all explorers")
    episodes: int = Field(0, description="episodes finished")
    updates: int = Field(0, description="all-agent MADDPG updates run")
    mean_reward_last_100: FiniteOrNone = Field(
        None, description="mean episode reward (sum over agents) of the last 100 episodes; null when unknown or "
                          "not a finite number")
    newest_checkpoint: str | None = Field(None, description="where the newest complete checkpoint is")
    note: str | None = Field(None, description="why progress is missing or stale (e.g. the store is unreadable)")


class RunOut(BaseModel):
    """A run as the API reports it."""

    id: str
    status: RunStatus
    spec: RunSpec
    progress: Progress
    endpoints: dict[str, str] = Field(
        default_factory=dict, description="learner: its ZeroMQ address; checkpoints: the run's checkpoint store "
                                          "(kubernetes runs)")
    pids: list[int] = Field(default_factory=list, description="local launcher: learner pid, then explorer pids")
    run_dir: str = Field(description="the run folder on the API's host (spec, rewards.csv, checkpoints); empty "
                                     "for kubernetes runs, whose run folder lives in the learner pod")
    created: datetime
    updated: datetime
    reason: str | None = Field(None, description="why a run failed or stopped abnormally")


class RunPage(BaseModel):
    """One page of runs, newest first."""

    items: list[RunOut]
    total: int = Field(description="runs matching the filter in all")
    limit: int
    offset: int


class Rewards(BaseModel):
    """The episode-reward series of a run, one entry per finished episode."""

    episode: list[int]
    env_steps: list[int]
    reward: list[FiniteOrNone] = Field(description="sum over agents; null where it is not a finite number")
    per_agent: dict[str, list[FiniteOrNone]] = Field(default_factory=dict, description="agent id -> episode rewards")


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    problems: list[str] = Field(default_factory=list)
