"""`maddpg bench inference --quick`: a real server thread and explorer processes over ipc://, JSON of DESIGN.md 7.

The figures are not checked (performance targets are for benchmarks, not tests); only that the suite runs end
to end and writes the documented shape. The e2e suite (about 40 s quick) is left to `make bench-quick`.
"""

import json

from tests.integration.cli import run


def test_bench_inference_quick_writes_the_documented_json(tmp_path):
    out = tmp_path / "inference.json"
    result = run("bench", "inference", "--quick", "--out", str(out), timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "### inference" in result.stdout
    doc = json.loads(out.read_text())
    assert doc["suite"] == "inference"
    assert {"cores", "cpu", "python", "versions"} <= set(doc["machine"])
    assert doc["results"]
    for row in doc["results"]:
        assert {"case", "metric", "value", "unit", "baseline", "ratio"} <= set(row)
        assert isinstance(row["value"], float) and row["value"] > 0
        if row["baseline"] is not None:
            assert row["ratio"] > 0
    metrics = {(r["case"], r["metric"]) for r in doc["results"]}
    for k in (1, 2, 4, 8):
        case = f"simple_spread N=3, {k} explorers x 16 envs"
        assert {(case, "actions_per_s"), (case, "rtt_p50_ms"), (case, "rtt_p99_ms")} <= metrics
    assert {r["case"] for r in doc["results"] if r["metric"] == "forward_us"} == {
        "simple_spread N=3 actors, batch 1", "simple_spread N=3 actors, batch 512"}
    assert "server_errors" not in doc  # every request was served


def test_e2e_rates_come_from_the_steady_state_of_rewards_csv(tmp_path):
    from maddpg.bench.e2e import _read_rows, steady_rates

    path = tmp_path / "rewards.csv"
    lines = ["episode,env_steps,updates,wall_time_s,length,reward"]
    lines += [f"{k},{100 * k},0,{0.1 * k:.3f},25,-1" for k in range(1, 4)]  # before updates: start-up
    lines += [f"{k},{100 * k},{k - 3},{10 + 0.5 * k:.3f},25,-1" for k in range(4, 40)]  # 200 steps/s, 2 updates/s
    path.write_text("\n".join(lines) + "\n39,39")  # the last line is still being written
    rows = _read_rows(path)
    assert rows.shape == (36 + 3, 3)
    steps, updates, seconds = steady_rates(rows, warm_s=2.0)
    assert abs(steps - 200) < 1e-6 and abs(updates - 2) < 1e-6 and 15 < seconds < 16
