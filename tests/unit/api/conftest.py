"""Fixtures for the API's TestClient tests: an app on a temporary registry with a small in-memory launcher.

The launcher here is a fake for the routes' own logic; tests/integration/test_api.py drives the real one.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from services.api.launchers import Launched, LaunchError, PodOptions
from services.api.main import create_app
from services.api.registry import Registry, RunRecord
from services.api.settings import ApiSettings


class FakeLauncher:
    """Records starts, resumes (with their pod options) and stops; `alive` is whatever the test set; a resume
    raises LaunchError when `refuse` is set."""

    def __init__(self):
        self.started: list[str] = []
        self.resumed: list[tuple[str, PodOptions]] = []
        self.stopped: list[str] = []
        self.dead: set[str] = set()
        self.broken: str | None = None
        self.refuse: str | None = None

    def start(self, run_id: str, spec, run_dir: Path, pods: PodOptions = PodOptions()) -> Launched:
        self.started.append(run_id)
        return Launched([10_000 + len(self.started)], {"learner": "tcp://127.0.0.1:1"}, str(run_dir))

    def resume(self, record: RunRecord, spec, pods: PodOptions = PodOptions()) -> Launched:
        if self.refuse:
            raise LaunchError(self.refuse)
        self.resumed.append((record.id, pods))
        self.dead.discard(record.id)
        return Launched([20_000 + len(self.resumed)], {"learner": "tcp://127.0.0.1:2"}, record.run_dir)

    def stop(self, record: RunRecord) -> None:
        self.stopped.append(record.id)

    def alive(self, record: RunRecord) -> bool:
        return record.id not in self.dead

    def problem(self) -> str | None:
        return self.broken

    def close(self) -> None:
        pass


@pytest.fixture
def settings(tmp_path) -> ApiSettings:
    return ApiSettings(runs_dir=tmp_path / "runs", max_explorers=4, max_envs_per_explorer=32, max_active_runs=8)


@pytest.fixture
def launcher() -> FakeLauncher:
    return FakeLauncher()


@pytest.fixture
def client(settings, launcher):
    app = create_app(settings, launcher=launcher)
    with TestClient(app) as c:
        yield c
    app.state.registry.close()


@pytest.fixture
def registry(client) -> Registry:
    return client.app.state.registry
