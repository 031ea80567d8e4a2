"""The `maddpg` console script: one entry point that dispatches every role to its code.

User errors (a bad option, an unknown scenario, a checkpoint that does not fit) print one clear message and
exit with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from pathlib import Path

from maddpg.errors import UserError
from maddpg.telemetry.logs import setup_logging
from services.options import add_setting_flags, add_spec_flags, flag_settings, load_settings, spec_from_args
from services.settings import ServiceSettings

RUN_KEY_FILE = "run.key"  # a learner started without a key keeps the one it made in its run folder
SERVICE_SUITES = {"api": "services.api.bench"}  # benchmark suites of the services, beside the library's
# The settings flags of each role (settings keys: "section.name", or "name" at the top level).
TRAIN_SETTINGS = ["replay.queue"]
SERVICE_FLAGS = ["transport.run_key_file", "log_format", "metrics_port"]
LEARNER_SETTINGS = ["learner.bind", "replay.queue", "learner.run_id", "learner.max_batch", "learner.max_wait_ms",
                    *SERVICE_FLAGS]
EXPLORER_SETTINGS = ["explorer.learner", "explorer.envs", "explorer.id", "explorer.seed", "explorer.request_timeout_s",
                     "explorer.give_up_after_s", *SERVICE_FLAGS]
API_SETTINGS = ["host", "port", "log_format"]


# ---------------------------------------------------------------- commands
def cmd_train(ns: argparse.Namespace) -> int:
    settings: ServiceSettings = ns.settings
    spec = spec_from_args(ns, settings.run_spec)
    run_dir = ns.run_dir or Path("runs") / f"{spec.scenario}-seed{spec.seed}"
    if spec.explorers > 0:
        from maddpg.launch import LocalRun

        run = LocalRun(spec, run_dir, quiet=ns.quiet, queue=settings.replay.queue, key=_key(settings),
                       warm_start=ns.restore)
        run.start()
        code = run.wait()
        print(f"{'interrupted' if code == 130 else 'done'}: learner and {spec.explorers} explorers stopped; "
              f"run folder: {run_dir}")
        return code

    import maddpg.algo  # noqa: F401  (TensorFlow first, without its start-up notices)
    from maddpg.local import train

    if settings.replay.redis_url:
        print(f"maddpg train: note: a single-process run has no replay queue; --queue {settings.replay.queue} "
              "applies to runs with --explorers", file=sys.stderr)
    result = train(spec, run_dir, progress=not ns.quiet, checkpoint_uri=settings.storage.checkpoint_uri,
                   warm_start=ns.restore)
    state = "interrupted" if result.interrupted else "done"
    print(f"{state}: {result.episodes} episodes, {result.env_steps} env steps, {result.updates} updates "
          f"in {result.seconds:.0f} s; mean episode reward (last 100, sum over agents): {result.mean_reward:.2f}")
    print(f"run folder: {result.run_dir} (rewards.csv, learning_curve.png, spec.json, checkpoints/)")
    return 130 if result.interrupted else 0


def cmd_evaluate(ns: argparse.Namespace) -> int:
    from maddpg.checkpoint import Checkpoint
    from maddpg.envs.benchmark import SCENARIO as SPREAD, spread_metrics
    from maddpg.evaluation import evaluate, write_gif

    ckpt = Checkpoint(ns.path)
    if ns.display:
        from maddpg.evaluation import display

        display(ckpt, ns.episodes, seed=ns.seed, greedy=ns.greedy)
        return 0
    result = evaluate(ckpt, ns.episodes, seed=ns.seed, greedy=ns.greedy, num_envs=ns.num_envs,
                      benchmark_out=ns.benchmark, progress=not ns.quiet)
    print(f"checkpoint: {ckpt.path}")
    for name, values in zip(result.agent_ids, result.per_agent.T, strict=True):
        print(f"  {name}: {values.mean():.2f}")
    print(f"mean episode reward: {result.mean:.2f} (std {result.std:.2f}, {len(result.rewards)} episodes)")
    if ns.benchmark:
        print(f"benchmark data: {ns.benchmark}")
        if ckpt.spec.scenario == SPREAD:  # the paper's metrics, to set beside its table (see README: Results)
            print(spread_metrics(result.benchmark).table())
    if ns.gif:
        frames = write_gif(ckpt, ns.gif, seed=ns.seed, greedy=ns.greedy)
        print(f"gif: {ns.gif} ({frames} frames)")
    return 0


def cmd_scenarios(ns: argparse.Namespace) -> int:
    from maddpg.envs.mpe import MPEEnv
    from maddpg.envs.scenarios import SCENARIOS

    for name, scenario in SCENARIOS.items():
        env = MPEEnv(name, continuous_actions=ns.continuous_actions)
        n_kw = f" (--num-agents sets {scenario.size_kwarg})" if scenario.size_kwarg else ""
        print(f"{name}: {scenario.description}{n_kw}")
        for agent in env.spec.agents:
            kind = "Discrete" if agent.action_kind == "discrete" else "Box"
            print(f"    {agent.name:18s} obs {agent.obs_dim:3d}  action {kind}({agent.action_size})")
        kwargs = ", ".join(f"{k}={v}" for k, v in scenario.kwargs.items())
        print(f"    env kwargs: {kwargs}")
        env.close()
    return 0


def cmd_bench(ns: argparse.Namespace) -> int:
    import maddpg.algo  # noqa: F401  (TensorFlow first, without its start-up notices)
    from maddpg.bench import SUITES, run_suites

    options = {k: getattr(ns, k) for k in ("seeds", "episodes", "scenarios") if getattr(ns, k) is not None}
    if options and ns.suite != "learning":
        raise UserError(f"--{', --'.join(options)}: options of the learning suite only")
    return run_suites(ns.suite, quick=ns.quick, out=ns.out, out_dir=ns.out_dir, options=options,
                      suites={**SUITES, **SERVICE_SUITES})


def _load_key(text: str | None = None, file: Path | None = None):
    from maddpg.transport.security import RunKey

    try:
        return RunKey.load(text, file=file)
    except OSError as e:
        raise UserError(f"run key: cannot read {file}: {e.strerror}") from None
    except ValueError as e:  # the message names where the key came from, never the key
        raise UserError(str(e)) from None


def _key(settings: ServiceSettings):
    """The run's key from MADDPG_RUN_KEY, else --run-key-file / MADDPG_RUN_KEY_FILE; None when none is given."""
    transport = settings.transport
    return _load_key(transport.run_key.get_secret_value() if transport.run_key else None, transport.run_key_file)


def _learner_key(settings: ServiceSettings, run_dir: Path, log: logging.Logger):
    """The run's key as given; else the run folder's, made on the learner's first start."""
    from maddpg.transport.security import RunKey

    key = _key(settings)
    if key is not None:
        return key
    path = Path(run_dir) / RUN_KEY_FILE
    if path.exists():
        return _load_key(file=path)
    key = RunKey.generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    key.save(path)
    log.info("no run key given: made one in %s (give it to explorers with --run-key-file or MADDPG_RUN_KEY)", path)
    return key


def cmd_learner(ns: argparse.Namespace) -> int:
    import maddpg.algo  # noqa: F401  (TensorFlow first, without its start-up notices)
    from services.learner.main import Learner, LearnerFailure

    settings: ServiceSettings = ns.settings
    spec = spec_from_args(ns, settings.run_spec)
    run_dir = ns.run_dir or Path("runs") / f"{spec.scenario}-seed{spec.seed}"
    log = logging.getLogger("maddpg.learner")
    serving = settings.learner
    learner = Learner(spec, run_dir, serving.bind, key=_learner_key(settings, run_dir, log),
                      max_batch=serving.max_batch, max_wait=serving.max_wait_ms / 1e3,
                      checkpoint_uri=settings.storage.checkpoint_uri, queue=settings.replay.queue,
                      run_id=serving.run_id, metrics_port=settings.metrics_port, warm_start=ns.restore)
    ns.log_context.run_id = learner.run_id
    ns.log_context.step = lambda: learner.agent.env_steps
    log.info("learner serving on %s%s", learner.address,
             f", metrics on port {learner.metrics_port}" if learner.metrics_port is not None else "")
    try:
        result = learner.train(progress=not ns.quiet)
    except LearnerFailure as e:
        log.error("%s", e, exc_info=e.__cause__)
        return 1
    log.info("%s: %d episodes, %d env steps, %d updates in %.0f s; mean episode reward (last 100, sum over "
             "agents): %.2f", "interrupted" if result.interrupted else "done", result.episodes, result.env_steps,
             result.updates, result.seconds, result.mean_reward)
    return 130 if result.interrupted else 0


def cmd_explorer(ns: argparse.Namespace) -> int:
    import signal

    from maddpg.transport.client import TransportError
    from services.explorer.main import run_explorer

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    settings: ServiceSettings = ns.settings
    explorer = settings.explorer
    if not explorer.learner:
        raise UserError("--learner ADDRESS (or MADDPG_LEARNER_ADDRESS) is required, e.g. tcp://learner:5555")
    key = _key(settings)
    if key is None:
        raise UserError(f"the run's key is required: --run-key-file FILE, or env MADDPG_RUN_KEY / MADDPG_RUN_KEY_FILE "
                        f"(a learner started without one wrote it to its run folder's {RUN_KEY_FILE})")
    try:
        run_explorer(explorer.learner, explorer.id, explorer.envs, key=key, redis_url=settings.replay.redis_url,
                     seed=explorer.seed, request_timeout=explorer.request_timeout_s,
                     give_up_after=explorer.give_up_after_s, metrics_port=settings.metrics_port,
                     log_context=ns.log_context)
    except TransportError as e:
        raise UserError(str(e)) from None
    except KeyboardInterrupt:
        return 130
    return 0


def cmd_api(ns: argparse.Namespace) -> int:
    from services.api.launchers import LaunchError
    from services.api.main import serve

    try:
        serve(ns.settings)
    except LaunchError as e:
        raise UserError(str(e)) from None
    return 0


# ---------------------------------------------------------------- parser
def _add_restore_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--restore", default=None, metavar="CHECKPOINT_OR_RUN_DIR",
                        help="a checkpoint (folder or URI) or run folder of another run to start from; a run that "
                             "has checkpoints of its own resumes from its newest by itself (to watch or benchmark a "
                             "trained policy: `maddpg evaluate --display / --benchmark`)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="maddpg",
        description="Multi-agent DDPG (MADDPG, arXiv 1706.02275) on the Multi-Agent Particle Environments (mpe2).",
        epilog="Run `maddpg ROLE --help` for the options of a role.")
    sub = parser.add_subparsers(dest="role", metavar="ROLE", required=True)

    p = sub.add_parser("train", help="train MADDPG on one scenario (single process) and write a run folder",
                       description="Train MADDPG. Writes spec.json, rewards.csv (episode rewards, total and per "
                                   "agent), learning_curve.png and checkpoints/ into the run folder, also on Ctrl-C.")
    p.add_argument("--run-dir", type=Path, default=None,
                   help="run folder to write (default: runs/SCENARIO-seedSEED); a folder holding this run (same "
                        "spec) is continued from its newest checkpoint, one holding another run is refused")
    _add_restore_flag(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_setting_flags(p, ServiceSettings, TRAIN_SETTINGS)
    add_spec_flags(p)
    p.set_defaults(func=cmd_train, settings_cls=ServiceSettings)

    p = sub.add_parser("evaluate", help="replay a trained policy and report its episode reward",
                       description="Load a checkpoint (or a run folder's newest) and run episodes with its policy.")
    p.add_argument("path", type=Path, metavar="RUN_DIR_OR_CHECKPOINT", help="a run folder or a ckpt-* folder")
    p.add_argument("--episodes", type=int, default=100, help="episodes to run (default: 100)")
    p.add_argument("--seed", type=int, default=12345, help="env and sampling seed (default: 12345)")
    p.add_argument("--greedy", action="store_true",
                   help="act with each distribution's mode instead of sampling it as training does")
    p.add_argument("--num-envs", type=int, default=8, help="env copies stepped together (default: 8)")
    p.add_argument("--gif", type=Path, default=None, metavar="FILE", help="also render one episode to this GIF")
    p.add_argument("--benchmark", type=Path, nargs="?", const=Path("benchmark.json"), default=None,
                   metavar="FILE", help="record the scenario's benchmark_data of every step (JSON, "
                                        "default file benchmark.json), as openai/maddpg's --benchmark; for "
                                        "simple_spread also print the MADDPG paper's metrics (landmark "
                                        "distance, collisions, occupied landmarks)")
    p.add_argument("--display", action="store_true", help="render the episodes on screen (needs a display)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("scenarios", help="list the mpe2 scenarios with their agents and sizes")
    p.add_argument("--continuous-actions", action="store_true", help="show the continuous action spaces")
    p.set_defaults(func=cmd_scenarios)
    from maddpg.storage.cli import add_parser as add_checkpoints_parser
    add_checkpoints_parser(sub)

    p = sub.add_parser("bench", help="run a benchmark suite (JSON and a markdown table)",
                       description="Benchmarks measure the project beside its baseline in the same run.")
    p.add_argument("suite", choices=["all", "loop", "update", "env", "inference", "e2e", "checkpoint", "queue",
                                     "recovery", "learning", "api"],
                   help="loop: single-process training loop; update: one all-agent update; env: batched engine "
                        "vs mpe2; inference: the batching server; e2e: a whole local run; checkpoint: write and "
                        "restore times; queue: Redis Streams vs the local replay queue; recovery: a SIGKILLed "
                        "learner restarted, to its first new episode, vs a cold start; learning: reward curves of "
                        "full training runs vs a random policy (about 40 min on 2 cores; JSON and PNGs default to "
                        "bench/results/)")
    p.add_argument("--quick", action="store_true", help="short timings, under a minute per suite")
    p.add_argument("--out", type=Path, default=None, help="JSON file for one suite's results")
    p.add_argument("--out-dir", type=Path, default=None,
                   help="folder for SUITE.json files and README.md (used by `make bench`)")
    p.add_argument("--seeds", type=int, default=None, help="learning: seeds per scenario (default 2, --quick 1)")
    p.add_argument("--episodes", type=int, default=None,
                   help="learning: episodes per run (default: the original's 60,000)")
    p.add_argument("--scenarios", type=lambda s: s.split(","), default=None,
                   help="learning: comma-separated scenarios (default: simple_spread, simple_adversary, "
                        "simple_tag, simple_speaker_listener)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("learner", help="the learner service: batched inference for explorers over ZeroMQ, "
                                       "replay and training",
                       description="Serve actions to explorers and train from their transitions.")
    p.add_argument("--run-dir", type=Path, default=None,
                   help="run folder (default: runs/SCENARIO-seedSEED); without a run key given, the learner uses "
                        "its run.key, made on the first start")
    _add_restore_flag(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_setting_flags(p, ServiceSettings, LEARNER_SETTINGS)
    add_spec_flags(p)
    p.set_defaults(func=cmd_learner, settings_cls=ServiceSettings)

    p = sub.add_parser("explorer", help="the explorer service: steps envs, gets actions from the learner",
                       description="Step envs with actions from a learner; send transitions to its replay queue. "
                                   "The run spec comes from the learner.")
    add_setting_flags(p, ServiceSettings, EXPLORER_SETTINGS)
    p.set_defaults(func=cmd_explorer, settings_cls=ServiceSettings)

    p = sub.add_parser("api", help="the control API (FastAPI): start, list and stop runs",
                       description="Serve the control API (OpenAPI at /docs, metrics at /metrics). Settings come "
                                   "from MADDPG_API_* variables: RUNS_DIR, REGISTRY, LAUNCHER, MAX_EXPLORERS, "
                                   "MAX_ENVS_PER_EXPLORER, TOKEN, STOP_TIMEOUT_S; for LAUNCHER=kubernetes: NAMESPACE, "
                                   "IMAGE, IMAGE_PULL_POLICY, CHECKPOINT_URI, S3_ENDPOINT, S3_SECRET, "
                                   "RUN_SERVICE_ACCOUNT; and REDIS_URL (Redis registry and replay queues).")
    from services.api.settings import ApiSettings

    add_setting_flags(p, ApiSettings, API_SETTINGS)
    p.set_defaults(func=cmd_api, settings_cls=ApiSettings)
    return parser


def _settings(ns: argparse.Namespace):
    """The role's settings (None for roles without any): the environment, with the flags given winning.

    Raises:
      UserError: a setting is invalid (named by its flag or variable).
    """
    if getattr(ns, "settings_cls", None) is None:
        return None
    given = flag_settings(ns)
    if "transport.run_key_file" in given:  # a key file named on the command line wins over MADDPG_RUN_KEY
        given["transport.run_key"] = None
    return load_settings(ns.settings_cls, given)


def main(argv: list[str] | None = None) -> int:
    """Parses the command line, then the role's settings (once), then runs the role.

    Exit status: 0 done, 2 a user error (one message, no traceback), 130 interrupted, 1 anything else: a bug,
    shown with its traceback.
    """
    ns = build_parser().parse_args(argv)
    try:
        ns.settings = _settings(ns)
    except UserError as e:  # before logging is set up: its format is a setting
        print(f"maddpg {ns.role}: error: {e}", file=sys.stderr)
        return 2
    service = ns.role in ("learner", "explorer", "api")  # every message is a log record
    log = logging.getLogger(f"maddpg.{ns.role}")
    if service:
        ns.log_context = setup_logging(ns.role, ns.settings.log_format)

    def report(message: str) -> None:
        if service:
            log.error(message)
        else:
            print(f"maddpg {ns.role}: {message}", file=sys.stderr)

    try:
        return ns.func(ns)
    except UserError as e:
        report(f"error: {e}")
        return 2
    except KeyboardInterrupt:
        report("interrupted")
        return 130
    except Exception:  # a bug: say so, with the traceback to report
        if service:
            log.critical("internal error (a bug: please report it with this traceback)", exc_info=True)
        else:
            traceback.print_exc()
            report("internal error (a bug: please report it with the traceback above)")
        return 1


if __name__ == "__main__":
    sys.exit(main())
