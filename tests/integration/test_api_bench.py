"""`maddpg bench api --quick`: real `maddpg api` servers (SQLite and Redis registries holding 1,000 runs) timed
through HTTP. Only the documented shape is checked: performance targets live in benchmarks, not tests."""

import json

from tests.integration.cli import run


def test_bench_api_quick_times_every_case_beside_healthz(tmp_path):
    out = tmp_path / "api.json"
    result = run("bench", "api", "--quick", "--out", str(out), timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    doc = json.loads(out.read_text())
    assert doc["suite"] == "api" and doc["results"]
    rows = {(r["case"], r["metric"]): r for r in doc["results"]}
    for registry in ("SQLite", "Redis"):
        for case in (f"GET /runs?limit=100 (1,000 runs, {registry})", f"GET /runs/{{id}} (1,000 runs, {registry})"):
            for metric in ("p50_ms", "p99_ms"):
                row = rows[(case, metric)]
                assert row["value"] > 0 and row["baseline"] > 0, row  # beside GET /healthz of the same server
            assert rows[(case, "p99_ms")]["value"] >= rows[(case, "p50_ms")]["value"]
    assert rows[("POST /runs rejected by validation (422, SQLite)", "requests_per_s")]["value"] > 0
