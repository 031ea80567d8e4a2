"""Request and response models of the control API."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from maddpg.runspec import RunSpec

RunStatus = Literal["running", "stopping", "stopped", "finished", "failed"]
RUN_ID_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"  # a DNS label: also a Kubernetes object name


class RunCreate(RunSpec):
    """A run spec (the same fields as `maddpg train`) plus an optional run id. Strict: `false` is no number."""

    model_config = ConfigDict(strict=True)

    explorers: int = Field(
        1, ge=1, le=64, description="explorer processes; the API launches distributed runs, so at least 1")
    run_id: str | None = Field(
        None, pattern=RUN_ID_PATTERN,
        description="id of the new run (lowercase letters, digits and '-', at most 63); default: generated")

    def spec(self) -> RunSpec:
        return RunSpec.model_validate(self.model_dump(exclude={"run_id"}))


class Progress(BaseModel):
    """How far a run got, from its rewards CSV and checkpoints."""

    env_steps: int = Field(0, description="env steps taken by all explorers")
    episodes: int = Field(0, description="episodes finished")
    updates: int = Field(0, description="all-agent MADDPG updates run")
    mean_reward_last_100: float | None = Field(None, description="mean episode reward (sum over agents), last 100")
    newest_checkpoint: str | None = Field(None, description="where the newest complete checkpoint is")


class RunOut(BaseModel):
    """A run as the API reports it."""

    id: str
    status: RunStatus
    spec: RunSpec
    progress: Progress
    endpoints: dict[str, str] = Field(default_factory=dict, description="addresses of the run's services")
    pids: list[int] = Field(default_factory=list, description="local launcher: learner pid, then explorer pids")
    run_dir: str = Field(description="the run folder (spec, rewards.csv, checkpoints)")
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
    reward: list[float]
    per_agent: dict[str, list[float]] = Field(default_factory=dict, description="agent id -> episode rewards")


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    problems: list[str] = Field(default_factory=list)
