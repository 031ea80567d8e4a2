"""Health, readiness and metrics."""

from __future__ import annotations


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
