"""API settings from the environment, and the start-up errors they lead to."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services import cli
from services.api.deps import get_settings
from services.api.launchers import LaunchError
from services.api.main import create_app
from services.api.settings import ApiSettings


def test_settings_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MADDPG_API_RUNS_DIR", str(tmp_path))
    monkeypatch.setenv("MADDPG_API_TOKEN", "t")
    monkeypatch.setenv("MADDPG_API_MAX_EXPLORERS", "3")
    settings = ApiSettings()
    assert settings.runs_dir == tmp_path and settings.token.get_secret_value() == "t"
    assert settings.max_explorers == 3 and settings.registry_path == tmp_path / "registry.sqlite3"
    assert settings.redis_url is None and settings.launcher == "local"
    assert (settings.active_run_cap, settings.max_run_memory_bytes, settings.max_body_bytes) == (4, 4 * 2**30, 65_536)
    monkeypatch.setenv("MADDPG_API_MAX_ACTIVE_RUNS", "2")
    monkeypatch.setenv("MADDPG_API_MAX_RUN_MEMORY", "512Mi")
    monkeypatch.setenv("MADDPG_API_MAX_BODY_BYTES", "4096")
    settings = ApiSettings()
    assert (settings.active_run_cap, settings.max_run_memory_bytes, settings.max_body_bytes) == (2, 2**29, 4096)


def test_the_active_run_cap_defaults_by_launcher(tmp_path):
    assert ApiSettings(runs_dir=tmp_path, launcher="kubernetes", image="maddpg:dev").active_run_cap == 64
    assert ApiSettings(runs_dir=tmp_path, launcher="kubernetes", image="maddpg:dev",
                       max_active_runs=3).active_run_cap == 3


def test_the_helm_chart_variables(monkeypatch, tmp_path):
    """The chart sets exactly these names."""
    values = {"MADDPG_API_LAUNCHER": "kubernetes", "MADDPG_API_NAMESPACE": "training",
              "MADDPG_API_IMAGE": "ghcr.io/org/maddpg:0.1.0", "MADDPG_API_IMAGE_PULL_POLICY": "Always",
              "MADDPG_API_CHECKPOINT_URI": "s3://bucket/runs", "MADDPG_API_S3_ENDPOINT": "http://minio:9000",
              "MADDPG_API_S3_SECRET": "maddpg-s3", "MADDPG_API_RUN_SERVICE_ACCOUNT": "maddpg-run",
              "MADDPG_API_RUNS_DIR": str(tmp_path), "MADDPG_API_TOKEN": "t", "REDIS_URL": "redis://redis:6379/0"}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    s = ApiSettings()
    assert (s.launcher, s.namespace, s.image, s.image_pull_policy) == (
        "kubernetes", "training", "ghcr.io/org/maddpg:0.1.0", "Always")
    assert (s.checkpoint_uri, s.s3_endpoint, s.s3_secret, s.run_service_account) == (
        "s3://bucket/runs", "http://minio:9000", "maddpg-s3", "maddpg-run")
    assert s.runs_dir == tmp_path and s.token.get_secret_value() == "t" and s.redis_url == "redis://redis:6379/0"
    monkeypatch.delenv("REDIS_URL")
    monkeypatch.setenv("MADDPG_API_REDIS_URL", "redis://other:6379/1")
    assert ApiSettings().redis_url == "redis://other:6379/1"


def test_the_namespace_defaults_to_the_pods_own(monkeypatch, tmp_path):
    import services.api.settings as module

    monkeypatch.setattr(module, "NAMESPACE_FILE", tmp_path / "missing")
    assert ApiSettings().namespace == "default"
    (tmp_path / "namespace").write_text("training\n")
    monkeypatch.setattr(module, "NAMESPACE_FILE", tmp_path / "namespace")
    assert ApiSettings().namespace == "training"


@pytest.mark.parametrize("field, value", [
    ("checkpoint_uri", "bucket/runs"), ("s3_endpoint", "minio:9000"), ("namespace", "Bad_NS"),
    ("redis_url", "localhost:6379"), ("image_pull_policy", "Sometimes"), ("stop_timeout_s", 0),
    ("image", "Maddpg Latest"), ("max_active_runs", 0), ("max_run_memory", "0"), ("max_run_memory", "4 GiB"),
    ("max_body_bytes", 10),
])
def test_bad_settings_name_the_field(field, value):
    with pytest.raises(ValidationError, match=field):
        ApiSettings(**{field: value})


def test_kubernetes_needs_an_image(monkeypatch, tmp_path, capsys):
    with pytest.raises(ValidationError, match="MADDPG_API_IMAGE is required"):
        ApiSettings(runs_dir=tmp_path, launcher="kubernetes")
    monkeypatch.setenv("MADDPG_API_LAUNCHER", "kubernetes")
    monkeypatch.setenv("MADDPG_API_RUNS_DIR", str(tmp_path))
    get_settings.cache_clear()
    try:
        assert cli.main(["api", "--port", "1"]) == 2
    finally:
        get_settings.cache_clear()
    printed = capsys.readouterr()
    assert "MADDPG_API_IMAGE is required" in printed.out + printed.err  # a JSON log line


def test_kubernetes_outside_a_cluster_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))
    with pytest.raises(LaunchError, match="finds no cluster.*KUBECONFIG"):
        create_app(ApiSettings(runs_dir=tmp_path, launcher="kubernetes", image="maddpg:dev"))
