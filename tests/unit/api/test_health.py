"""Health, readiness, metrics and start-up errors."""

from __future__ import annotations

import pytest

from services.api.launchers import LaunchError
from services.api.main import create_app
from services.api.settings import ApiSettings


def test_healthz_and_readyz(client, launcher, registry):
    assert client.get("/healthz").json()["status"] == "ok"
    assert client.get("/readyz").status_code == 200
    launcher.broken = "kube API unreachable"
    body = client.get("/readyz")
    assert body.status_code == 503 and "kube API unreachable" in body.json()["problems"][0]
    launcher.broken = None
    registry.close()
    assert client.get("/readyz").status_code == 503


def test_metrics_use_route_templates(client):
    client.get("/runs/some-id")
    client.get("/runs/other-id")
    client.get("/no/such/path")
    text = client.get("/metrics").text
    assert 'maddpg_api_requests_total{method="GET",route="/runs/{run_id}",status="404"} 2.0' in text
    assert 'route="unmatched"' in text and "some-id" not in text
    assert "maddpg_api_request_duration_seconds_bucket" in text


def test_kubernetes_launcher_is_a_clear_error_at_start_up(tmp_path):
    with pytest.raises(LaunchError, match="not built yet"):
        create_app(ApiSettings(runs_dir=tmp_path, launcher="kubernetes"))


def test_settings_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MADDPG_API_RUNS_DIR", str(tmp_path))
    monkeypatch.setenv("MADDPG_API_TOKEN", "t")
    monkeypatch.setenv("MADDPG_API_MAX_EXPLORERS", "3")
    settings = ApiSettings()
    assert settings.runs_dir == tmp_path and settings.token.get_secret_value() == "t"
    assert settings.max_explorers == 3 and settings.registry_path == tmp_path / "registry.sqlite3"
