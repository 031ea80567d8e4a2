"""Settings of the control API, read once from `MADDPG_API_*` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class ApiSettings(BaseSettings):
    """The API's own configuration (a run's options come in its run spec)."""

    model_config = SettingsConfigDict(env_prefix="MADDPG_API_", env_nested_delimiter="__", extra="ignore")

    runs_dir: Path = Field(Path("runs/api"), description="folder that holds one run folder per run")
    registry: Path | None = Field(
        None, description="SQLite file of the run registry; default RUNS_DIR/registry.sqlite3")
    launcher: Literal["local", "kubernetes"] = Field(
        "local", description="where runs execute: local (subprocesses of the API host) or kubernetes (not built yet)")
    max_explorers: int = Field(8, ge=1, le=64, description="most explorers one run may ask for")
    max_envs_per_explorer: int = Field(
        256, ge=1, le=4096, description="most env copies per explorer one run may ask for")
    token: SecretStr | None = Field(None, description="bearer token required on mutating routes (MADDPG_API_TOKEN)")
    queue: str = Field("local", description="replay queue of launched runs: local or a redis:// URL")
    stop_timeout_s: float = Field(120.0, gt=0, description="seconds a stopping learner gets for its final checkpoint")

    @property
    def registry_path(self) -> Path:
        return self.registry if self.registry is not None else self.runs_dir / "registry.sqlite3"
