"""The learning suite's machinery on a tiny budget: a real 1 learner + 2 explorer run, the random baseline, the
JSON of DESIGN.md section 7 with its curves, and the PNG. Rewards are not checked (200 episodes learn nothing);
the real measurement is `maddpg bench learning`."""

import json
import math

import numpy as np
import pytest

from maddpg.bench import learning
from tests.integration.cli import run

TINY = {"batch_size": 32, "num_units": 16, "learning_starts": 256}  # updates start within the 200 episodes


def test_a_tiny_learning_bench_writes_json_curves_and_png(tmp_path):
    out = tmp_path / "learning.json"
    returned = learning.run(out=out, seeds=1, episodes=200, scenarios=["simple_adversary"], overrides=TINY,
                            progress=False)
    doc = json.loads(out.read_text())
    assert doc == json.loads(json.dumps(returned))
    assert doc["suite"] == "learning" and {"cores", "cpu", "versions"} <= set(doc["machine"])
    assert doc["settings"]["episodes"] == {"simple_adversary": 200} and doc["settings"]["overrides"] == TINY
    metrics = {r["metric"]: r for r in doc["results"]}
    assert set(metrics) == {"final_mean_reward", "final_mean_reward adversaries", "final_mean_reward good agents",
                            "wall_s", "env_steps_per_s"}
    for name in ("final_mean_reward", "final_mean_reward adversaries", "final_mean_reward good agents"):
        assert math.isfinite(metrics[name]["value"]) and math.isfinite(metrics[name]["baseline"])
    assert metrics["wall_s"]["value"] > 0 and metrics["env_steps_per_s"]["value"] > 0

    (only,) = doc["runs"]["simple_adversary"]
    assert only["episodes"] == 200 and only["env_steps"] >= 200 * 25 and only["updates"] > 0
    curves = doc["curves"]["simple_adversary"]
    assert set(curves["random"]) == {"sum over agents", "adversaries", "good agents"}
    assert all(math.isfinite(v) for v in curves["random"].values())
    curve = curves["seeds"]["0"]
    points = len(curve["episodes"])
    assert points >= 2 and curve["episodes"][-1] == 200
    assert len(curve["env_steps"]) == len(curve["wall_s"]) == points
    assert np.all(np.diff(curve["env_steps"]) > 0) and np.all(np.diff(curve["wall_s"]) >= 0)
    assert {k: len(v) for k, v in curve["reward"].items()} == {k: points for k in curves["random"]}
    png = tmp_path / "learning_simple_adversary.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_curve_bins_episodes_and_the_final_reward_covers_the_last_1000():
    n = 6400
    data = {"env_steps": 25.0 * np.arange(1, n + 1), "updates": np.arange(n) // 4.0,
            "wall_time_s": 0.01 * np.arange(1, n + 1), "reward": np.zeros(n),
            "reward_adversary_0": np.where(np.arange(n) < n - 1000, -2.0, 1.0), "reward_agent_0": np.full(n, 3.0),
            "reward_agent_1": np.full(n, 1.0)}
    data["reward"] = data["reward_adversary_0"] + data["reward_agent_0"] + data["reward_agent_1"]
    figures, curve = learning.summarize(data, wall_s=70.0, min_bin=32)
    assert figures["final"] == {"sum over agents": 5.0, "adversaries": 1.0, "good agents": 4.0}
    assert figures["env_steps"] == 160_000 and figures["env_steps_per_s"] == 2500.0
    assert len(curve["episodes"]) == learning.BINS and curve["episodes"][-1] == n
    assert curve["reward"]["adversaries"][0] == -2.0 and curve["reward"]["good agents"] == [4.0] * learning.BINS
    _, short = learning.summarize({k: v[:100] for k, v in data.items()}, wall_s=1.0, min_bin=32)
    assert short["episodes"] == [33, 66, 100]  # bins of at least one wave of the explorers' env copies


@pytest.mark.parametrize("args", [["env", "--seeds", "2"], ["learning", "--quick", "--scenarios", "simple"]])
def test_the_cli_refuses_learning_options_elsewhere_and_unknown_scenarios(args, tmp_path):
    result = run("bench", *args, "--out", str(tmp_path / "x.json"), timeout=60)
    assert result.returncode == 2 and "error:" in result.stderr
    assert not (tmp_path / "x.json").exists()
