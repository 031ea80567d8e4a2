"""Suite `learning`: proof that it learns. MADDPG with the original hyperparameters trains on simple_spread
(N=3), simple_adversary, simple_tag and simple_speaker_listener through the distributed system (1 learner + 2
explorer processes, batched engine), and its episode reward is set beside a uniformly random policy's on the
same env and seeds (DESIGN.md section 7).

Every figure comes from the run folders' rewards.csv: the episode reward summed over agents (mpe2's rewards, as
openai/maddpg logs them) and, where a scenario has adversaries, summed over each team, against env steps and
the learner's wall clock. The JSON holds the harness's rows, every run's figures (`runs`) and the binned curves
(`curves`); one PNG per scenario (learning_SCENARIO.png) goes beside it. The JSON is rewritten after every run,
so an interrupted bench keeps the runs that finished.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from maddpg.acting.heads import make_heads, to_env, uniform
from maddpg.bench.harness import Result, write
from maddpg.envs.mpe import make_env
from maddpg.envs.spaces import is_adversary
from maddpg.episodes import EpisodeTracker
from maddpg.errors import UserError
from maddpg.launch import LocalRun
from maddpg.runfolder import load_rewards
from maddpg.runspec import RunSpec

SCENARIOS = ("simple_spread", "simple_adversary", "simple_tag", "simple_speaker_listener")
# Episodes of the default run: the original's 60,000 (1.5M env steps) for every scenario; the 8 runs take about
# 45 minutes on 2 cores.
EPISODES = dict.fromkeys(SCENARIOS, 60_000)
SEEDS = 2
QUICK_EPISODES, QUICK_SEEDS = 300, 1
FINAL_WINDOW = 1000  # episodes in the final reward, as openai/maddpg's train.py averages (its save_rate)
RANDOM_EPISODES = 1000
BINS = 100  # points per curve
EXPLORERS = 2
DEFAULT_OUT = Path("bench/results/learning.json")
DEFAULT_QUICK_OUT = Path("bench/results/quick/learning.json")
TOTAL = "sum over agents"


def make_spec(scenario: str, seed: int, episodes: int, overrides: dict | None = None) -> RunSpec:
    """The run spec of one training run: the original hyperparameters (RunSpec defaults) unless overridden."""
    size = {"num_agents": 3} if scenario == "simple_spread" else {}
    return RunSpec(scenario=scenario, seed=seed, num_episodes=episodes, explorers=EXPLORERS, engine="batched",
                   **size, **(overrides or {}))


def label(scenario: str) -> str:
    """The scenario's name in tables and titles."""
    return "simple_spread N=3" if scenario == "simple_spread" else scenario


def teams(agent_ids: list[str]) -> dict[str, list[int]]:
    """Agent indices of each team (adversaries, good agents) in an adversarial scenario; {} otherwise."""
    adversaries = [i for i, name in enumerate(agent_ids) if is_adversary(name)]
    if not adversaries:
        return {}
    return {"adversaries": adversaries, "good agents": [i for i in range(len(agent_ids)) if i not in adversaries]}


def series(per_agent: np.ndarray, agent_ids: list[str]) -> dict[str, np.ndarray]:
    """Episode rewards [episodes, N] per agent -> the total and each team's sum, per episode."""
    out = {TOTAL: per_agent.sum(axis=1)}
    out.update({name: per_agent[:, idx].sum(axis=1) for name, idx in teams(agent_ids).items()})
    return out


def random_rewards(spec: RunSpec, episodes: int, num_envs: int = 100) -> tuple[np.ndarray, list[str]]:
    """Per-agent rewards [episodes, N] of uniformly random actions on the spec's env (batched engine)."""
    env = make_env(spec, num_envs=min(num_envs, episodes), engine="batched")
    heads = make_heads(env.spec, spec.resolved_action_dist)
    rng = np.random.default_rng(spec.seed)
    tracker = EpisodeTracker(env.num_envs, env.spec.num_agents)
    env.reset(seed=spec.seed)
    done = []
    while len(done) < episodes:
        step = env.step([to_env(h, uniform(h, env.num_envs, rng)) for h in heads])
        done += tracker.add(step.reward, step.terminated | step.truncated)
    env.close()
    return np.stack([e.per_agent for e in done[:episodes]]), env.spec.agent_ids


def train(spec: RunSpec, work: Path) -> tuple[dict[str, np.ndarray], float]:
    """Runs 1 learner + K explorers to the end; returns the rewards.csv columns (the first `num_episodes`: a run
    ends at the first chunk boundary after them) and the run's wall seconds."""
    run_dir = work / f"{spec.scenario}-seed{spec.seed}"
    run = LocalRun(spec, run_dir, quiet=True)
    start = time.perf_counter()
    run.start()
    code = run.wait()
    seconds = time.perf_counter() - start
    if code != 0:
        raise RuntimeError(f"the {spec.scenario} run (seed {spec.seed}) exited with {code}; see {run_dir}")
    return {k: v[:spec.num_episodes] for k, v in load_rewards(run_dir).items()}, seconds


def summarize(data: dict[str, np.ndarray], wall_s: float, min_bin: int) -> tuple[dict, dict]:
    """One run's figures and its curve: episode rewards averaged over BINS equal runs of episodes.

    A bin holds at least `min_bin` episodes (the env copies of all explorers, which end their episodes together).
    """
    agent_ids = [key.removeprefix("reward_") for key in data if key.startswith("reward_")]
    rewards = series(np.stack([data[f"reward_{a}"] for a in agent_ids], axis=1), agent_ids)
    n = len(data["reward"])
    edges = np.linspace(0, n, min(BINS, max(1, n // min_bin)) + 1).astype(int)
    ends = edges[1:] - 1
    steps, updates, train_s = (float(data[k][-1]) for k in ("env_steps", "updates", "wall_time_s"))
    figures = {"episodes": n, "env_steps": int(steps), "updates": int(updates), "wall_s": round(wall_s, 2),
               "train_s": train_s, "env_steps_per_s": round(steps / train_s, 1),
               "final": {k: round(float(v[-FINAL_WINDOW:].mean()), 3) for k, v in rewards.items()}}
    curve = {"episodes": (ends + 1).tolist(), "env_steps": data["env_steps"][ends].astype(int).tolist(),
             "wall_s": data["wall_time_s"][ends].round(2).tolist(),
             "reward": {k: [round(float(v[a:b].mean()), 3) for a, b in zip(edges[:-1], edges[1:], strict=True)]
                        for k, v in rewards.items()}}
    return figures, curve


def plot(path: Path, scenario: str, curves: list[dict], random: dict[str, float]) -> Path:
    """learning_SCENARIO.png: mean over seeds with a min-max band, vs env steps (left) and seconds (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {TOTAL: "tab:blue", "adversaries": "tab:red", "good agents": "tab:green"}
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), dpi=110, sharey=True)
    for ax, x_key, x_label in zip(axes, ("env_steps", "wall_s"), ("env steps", "wall-clock seconds (learner)"),
                                  strict=True):
        x = np.mean([c[x_key] for c in curves], axis=0)
        for key, color in colors.items():
            if key not in random:
                continue
            ys = np.array([c["reward"][key] for c in curves])  # [seeds, bins]
            ax.plot(x, ys.mean(axis=0), color=color, lw=1.8 if key == TOTAL else 1.2, label=f"MADDPG: {key}")
            if len(curves) > 1:
                ax.fill_between(x, ys.min(axis=0), ys.max(axis=0), color=color, alpha=0.2, lw=0)
            ax.axhline(random[key], color=color, ls=":", lw=1.2, label=f"random: {key}")
        ax.set_xlabel(x_label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("mean episode reward")
    axes[1].legend(fontsize=7, loc="best")
    episodes = curves[0]["episodes"][-1]
    band = f", band: min-max over {len(curves)} seeds" if len(curves) > 1 else ""
    fig.suptitle(f"MADDPG on {label(scenario)}: {len(curves)} seed(s) x {episodes:,} episodes{band} "
                 "(mpe2 rewards)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def rows(scenario: str, runs: list[dict], random: dict[str, float]) -> list[Result]:
    """The harness's rows of one scenario: means over seeds, per-seed figures in the notes."""
    case = f"{label(scenario)}, {len(runs)} seed(s) x {runs[0]['episodes']:,} episodes"
    per_seed = "; ".join(f"seed {r['seed']}: {r['final'][TOTAL]:.2f}" for r in runs)
    window = min(FINAL_WINDOW, runs[0]["episodes"])
    out = [Result(case, "final_mean_reward", statistics.mean(r["final"][TOTAL] for r in runs), "reward/episode",
                  random[TOTAL], note=f"sum over agents, mean of the last {window:,} episodes, mean over seeds "
                                      f"({per_seed}); baseline: uniform random actions")]
    for team in (k for k in random if k != TOTAL):
        out.append(Result(case, f"final_mean_reward {team}", statistics.mean(r["final"][team] for r in runs),
                          "reward/episode", random[team], note=f"sum over the {team}"))
    out += [Result(case, "wall_s", statistics.mean(r["wall_s"] for r in runs), "s",
                   note=f"the full run, processes started to stopped, mean over seeds; "
                        f"{runs[0]['env_steps']:,} env steps, {runs[0]['updates']:,} updates"),
            Result(case, "env_steps_per_s", statistics.mean(r["env_steps_per_s"] for r in runs), "steps/s",
                   note="env steps over the learner's clock of the whole run (start-up and warm-up included)")]
    return out


def _describe(specs: dict[tuple[str, int], RunSpec], budget: dict[str, int],
              overrides: dict | None) -> tuple[dict, str]:
    """The settings recorded with the results, and the JSON's note."""
    first = next(iter(specs.values()))
    settings = {"seeds": sorted({seed for _, seed in specs}), "episodes": budget, "explorers": EXPLORERS,
                "envs_per_explorer": first.envs_per_explorer, "engine": "batched",
                "random_episodes": RANDOM_EPISODES, "final_window": FINAL_WINDOW, "overrides": overrides or {}}
    hyper = "openai/maddpg's hyperparameters, untuned" if not overrides else f"overrides {overrides}"
    note = (f"MADDPG with {hyper} (lr {first.lr:g}, gamma {first.gamma:g}, batch {first.batch_size}, 2x"
            f"{first.num_units} units, one update per {first.update_every} env steps after {first.min_replay:,} "
            "transitions); rewards are mpe2's (simple_spread: local_ratio 0.5, no self-collision), summed over "
            f"agents per {first.max_episode_len}-step episode. "
            + ", ".join(f"{label(s)}: {n:,} episodes" for s, n in budget.items()) + " per seed.")
    return settings, note


def run(quick: bool = False, out: Path | None = None, *, seeds: int | None = None, episodes: int | None = None,
        scenarios: list[str] | None = None, overrides: dict | None = None, progress: bool = True) -> dict:
    """Trains every scenario x seed in turn and writes the JSON and PNGs; returns the JSON document.

    Args:
      quick: 1 seed x 300 episodes per scenario (a smoke run: updates start only after 1,024 episodes).
      out: the JSON file (default bench/results/learning.json, or quick/learning.json with `quick`); the PNGs
        go beside it.
      seeds: seeds 0..K-1 (default 2). episodes: per run, for every scenario (default: EPISODES).
      scenarios: which (default: all four). overrides: run-spec fields to change (tests: a tiny batch).
      progress: a progress bar over runs.
    """
    scenarios = list(scenarios or SCENARIOS)
    unknown = set(scenarios) - set(SCENARIOS)
    if unknown:
        raise UserError(f"--scenarios: {', '.join(sorted(unknown))} not in the learning suite ({', '.join(SCENARIOS)})")
    out = Path(out or (DEFAULT_QUICK_OUT if quick else DEFAULT_OUT))
    out.parent.mkdir(parents=True, exist_ok=True)
    seed_list = list(range(seeds or (QUICK_SEEDS if quick else SEEDS)))
    budget = {s: episodes or (QUICK_EPISODES if quick else EPISODES[s]) for s in scenarios}
    specs = {(s, k): make_spec(s, k, budget[s], overrides) for s in scenarios for k in seed_list}
    settings, note = _describe(specs, budget, overrides)
    runs: dict[str, list[dict]] = {s: [] for s in scenarios}
    curves: dict[str, dict] = {}
    results: list[Result] = []
    doc: dict = {}
    with tempfile.TemporaryDirectory(prefix="maddpg-bench-learning-") as tmp, \
            tqdm(total=len(specs), desc="learning", unit="run", disable=not progress) as bar:
        for (scenario, seed), spec in specs.items():
            bar.set_postfix_str(f"{scenario} seed {seed}")
            per_agent, agent_ids = random_rewards(spec, RANDOM_EPISODES)
            random_seed = {k: float(v.mean()) for k, v in series(per_agent, agent_ids).items()}
            data, wall_s = train(spec, Path(tmp))
            figures, curve = summarize(data, wall_s, spec.explorers * spec.envs_per_explorer)
            runs[scenario].append({"seed": seed, **figures, "random": random_seed})
            curves.setdefault(scenario, {"seeds": {}})["seeds"][seed] = curve
            bar.update(1)
            done = runs[scenario]
            if len(done) == len(seed_list):  # the scenario is done: its random mean, rows and PNG
                random = {k: statistics.mean(r["random"][k] for r in done) for k in done[0]["random"]}
                curves[scenario]["random"] = random
                results += rows(scenario, done, random)
                plot(out.parent / f"learning_{scenario}.png", scenario, list(curves[scenario]["seeds"].values()),
                     random)
            doc = write("learning", results, out, {"note": note, "settings": settings, "runs": runs,
                                                   "curves": curves})
    return doc
