"""The `maddpg` console script: one entry point that dispatches every role to its code.

User errors (a bad option, an unknown scenario, a checkpoint that does not fit) print one clear message and
exit with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
import types
import typing
from pathlib import Path

from pydantic import ValidationError

from maddpg.runspec import RunSpec, format_validation_error

RUN_KEY_FILE = "run.key"  # a learner started without a key keeps the one it made in its run folder
from maddpg.telemetry.logs import FORMATS, default_format, import_tensorflow_quietly, setup_logging


class UserError(Exception):
    """A problem the user can fix; printed without a traceback."""


# ---------------------------------------------------------------- run-spec flags
def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _parse_kv(text: str) -> tuple[str, int | float | bool]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, raw = text.split("=", 1)
    low = raw.strip().lower()
    if low in ("true", "false"):
        return key.strip(), low == "true"
    for cast in (int, float):
        try:
            return key.strip(), cast(raw)
        except ValueError:
            continue
    raise argparse.ArgumentTypeError(f"{key}: value {raw!r} is not a number or true/false")


def add_spec_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per RunSpec field, its help taken from the field's description and default."""
    group = parser.add_argument_group("run spec (defaults are openai/maddpg's)")
    group.add_argument("--spec", type=Path, default=argparse.SUPPRESS, metavar="FILE",
                       help="a run spec as JSON (or the JSON text itself in env MADDPG_RUN_SPEC, as Kubernetes "
                            "pods get it); flags given here override its fields")
    for name, field in RunSpec.model_fields.items():
        annotation = field.annotation
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        default = field.get_default(call_default_factory=True)
        help_text = f"{field.description} (default: {default})"
        kwargs: dict = {"default": argparse.SUPPRESS, "help": help_text, "dest": name}
        if name == "env_kwargs":
            group.add_argument("--env-kwarg", action="append", type=_parse_kv, metavar="KEY=VALUE",
                               default=argparse.SUPPRESS, dest=name, help=field.description)
            continue
        if annotation is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(annotation) is typing.Literal:
            kwargs["choices"] = list(typing.get_args(annotation))
        elif isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
            kwargs["type"] = args[0]
        else:
            kwargs["type"] = annotation
        if name == "scenario":
            kwargs["metavar"] = "NAME"
        group.add_argument(_flag(name), **kwargs)


def spec_from_args(ns: argparse.Namespace) -> RunSpec:
    """Builds the run spec from --spec FILE and the flags given; raises UserError naming the bad field."""
    data: dict = {}
    if getattr(ns, "spec", None) is None and os.environ.get("MADDPG_RUN_SPEC"):
        try:
            data = json.loads(os.environ["MADDPG_RUN_SPEC"])
        except json.JSONDecodeError as e:
            raise UserError(f"MADDPG_RUN_SPEC: not a JSON run spec: {e}") from None
        if not isinstance(data, dict):
            raise UserError("MADDPG_RUN_SPEC: a run spec is a JSON object of its fields")
    if getattr(ns, "spec", None) is not None:
        try:
            data = json.loads(Path(ns.spec).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise UserError(f"--spec {ns.spec}: cannot read a JSON run spec: {e}") from None
    for name in RunSpec.model_fields:
        if hasattr(ns, name):
            value = getattr(ns, name)
            data[name] = dict(value) if name == "env_kwargs" else value
    try:
        return RunSpec.model_validate(data)
    except ValidationError as e:
        raise UserError("invalid run spec:\n  " + format_validation_error(e).replace("\n", "\n  ")) from None


def add_service_flags(parser: argparse.ArgumentParser, metrics: bool = True) -> None:
    """--log-format for every service; --metrics-port for the learner and explorers (the API serves /metrics)."""
    parser.add_argument("--log-format", choices=FORMATS, default=default_format(),
                        help="json: one JSON object per line on stdout (timestamp, level, role, run_id, step, "
                             "message; for kubectl logs); text: for a terminal (env MADDPG_LOG_FORMAT; default json)")
    if metrics:
        port = os.environ.get("MADDPG_METRICS_PORT")
        parser.add_argument("--metrics-port", type=int, default=int(port) if port else None, metavar="PORT",
                            help="serve Prometheus metrics at http://0.0.0.0:PORT/metrics (0: a free port, "
                                 "logged at start; env MADDPG_METRICS_PORT; default: no metrics server)")


# ---------------------------------------------------------------- commands
def cmd_train(ns: argparse.Namespace) -> int:
    spec = spec_from_args(ns)
    if spec.display or spec.benchmark:
        if not spec.restore:
            raise UserError("--display and --benchmark show a trained policy: pass --restore RUN_DIR_OR_CHECKPOINT")
        ns.path, ns.greedy, ns.gif, ns.num_envs = Path(spec.restore), False, None, 8
        ns.episodes = max(1, spec.benchmark_iters // spec.max_episode_len) if spec.benchmark else 10
        ns.benchmark = Path(ns.run_dir or ".") / "benchmark.json" if spec.benchmark else None
        ns.display, ns.seed = spec.display, spec.seed
        return cmd_evaluate(ns)

    run_dir = ns.run_dir or Path("runs") / f"{spec.scenario}-seed{spec.seed}"
    if spec.explorers > 0:
        from maddpg.launch import LocalRun

        run = LocalRun(spec, run_dir, quiet=ns.quiet, queue=ns.queue)
        run.start()
        code = run.wait()
        print(f"{'interrupted' if code == 130 else 'done'}: learner and {spec.explorers} explorers stopped; "
              f"run folder: {run_dir}")
        return code

    import_tensorflow_quietly()
    from maddpg.local import train

    if ns.queue != "local":
        print(f"maddpg train: note: a single-process run has no replay queue; --queue {ns.queue} applies to "
              "runs with --explorers", file=sys.stderr)
    result = train(spec, run_dir, progress=not ns.quiet, checkpoint_uri=os.environ.get("MADDPG_CHECKPOINT_URI"))
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
    if getattr(ns, "display", False):
        from maddpg.evaluation import display

        display(ckpt, ns.episodes, seed=ns.seed, greedy=ns.greedy)
        return 0
    result = evaluate(ckpt, ns.episodes, seed=ns.seed, greedy=ns.greedy, num_envs=ns.num_envs,
                      benchmark_out=ns.benchmark, progress=not getattr(ns, "quiet", False))
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
    import_tensorflow_quietly()
    from maddpg.bench import run_suites

    options = {k: getattr(ns, k) for k in ("seeds", "episodes", "scenarios") if getattr(ns, k) is not None}
    if options and ns.suite != "learning":
        raise UserError(f"--{', --'.join(options)}: options of the learning suite only")
    return run_suites(ns.suite, quick=ns.quick, out=ns.out, out_dir=ns.out_dir, options=options)


def _learner_key(ns: argparse.Namespace, run_dir: Path, log: logging.Logger):
    """The run's key from --run-key-file / MADDPG_RUN_KEY(_FILE); else the run folder's, made on first start."""
    from maddpg.transport.security import RunKey

    key = _load_key(ns.run_key_file)
    if key is not None:
        return key
    path = Path(run_dir) / RUN_KEY_FILE
    if path.exists():
        return _load_key(path)
    key = RunKey.generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    key.save(path)
    log.info("no run key given: made one in %s (give it to explorers with --run-key-file or MADDPG_RUN_KEY)", path)
    return key


def _load_key(path: Path | None):
    from maddpg.transport.security import RunKey

    try:
        return RunKey.load(file=path)
    except (OSError, ValueError) as e:
        raise UserError(f"run key ({path or 'MADDPG_RUN_KEY / MADDPG_RUN_KEY_FILE'}): {e}") from None


def cmd_learner(ns: argparse.Namespace) -> int:
    import_tensorflow_quietly()
    from services.learner.main import Learner, LearnerFailure

    spec = spec_from_args(ns)
    run_dir = ns.run_dir or Path("runs") / f"{spec.scenario}-seed{spec.seed}"
    log = logging.getLogger("maddpg.learner")
    learner = Learner(spec, run_dir, ns.bind, key=_learner_key(ns, run_dir, log), max_batch=ns.max_batch,
                      max_wait=ns.max_wait_ms / 1e3, checkpoint_uri=os.environ.get("MADDPG_CHECKPOINT_URI"),
                      queue=ns.queue, run_id=ns.run_id, metrics_port=ns.metrics_port)
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
    if not ns.learner:
        raise UserError("--learner ADDRESS (or MADDPG_LEARNER_ADDRESS) is required, e.g. tcp://learner:5555")
    key = _load_key(ns.run_key_file)
    if key is None:
        raise UserError(f"the run's key is required: --run-key-file FILE, or env MADDPG_RUN_KEY / MADDPG_RUN_KEY_FILE "
                        f"(a learner started without one wrote it to its run folder's {RUN_KEY_FILE})")
    try:
        run_explorer(ns.learner, ns.explorer_id, ns.envs, key=key, redis_url=os.environ.get("REDIS_URL"),
                     seed=ns.seed, request_timeout=ns.request_timeout, give_up_after=ns.give_up_after,
                     metrics_port=ns.metrics_port, log_context=ns.log_context)
    except TransportError as e:
        raise UserError(str(e)) from None
    except KeyboardInterrupt:
        return 130
    return 0


def cmd_api(ns: argparse.Namespace) -> int:
    from services.api.launchers import LaunchError
    from services.api.main import serve

    try:
        serve(ns.host, ns.port)
    except LaunchError as e:
        raise UserError(str(e)) from None
    except ValidationError as e:
        raise UserError("invalid MADDPG_API_* settings:\n  " + format_validation_error(e).replace("\n", "\n  "))
    return 0


# ---------------------------------------------------------------- parser
def _add_key_flag(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--run-key-file", type=Path, default=None, metavar="FILE",
                        help=f"{what}: only peers holding the run's key can talk to its learner (CurveZMQ) or "
                             "write its Redis stream (signed entries); or env MADDPG_RUN_KEY (the key's 64 hex "
                             "characters) / MADDPG_RUN_KEY_FILE")


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
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--queue", default=os.environ.get("REDIS_URL", "local"),
                   help="replay queue of a run with --explorers: local or redis://HOST:PORT/DB (env REDIS_URL)")
    add_spec_flags(p)
    p.set_defaults(func=cmd_train)

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
    p.add_argument("--bind", default=os.environ.get("MADDPG_LEARNER_BIND", "tcp://0.0.0.0:5555"),
                   help="ZeroMQ address to serve on (env MADDPG_LEARNER_BIND; default tcp://0.0.0.0:5555)")
    p.add_argument("--run-dir", type=Path, default=None, help="run folder (default: runs/SCENARIO-seedSEED)")
    p.add_argument("--queue", default=os.environ.get("REDIS_URL", "local"),
                   help="replay queue: local (chunks over ZeroMQ into memory) or redis://HOST:PORT/DB "
                        "(env REDIS_URL; default local)")
    p.add_argument("--run-id", default=os.environ.get("MADDPG_RUN_ID"),
                   help="names the run's Redis stream; a restarted learner must reuse it "
                        "(env MADDPG_RUN_ID; default: the run folder's name)")
    p.add_argument("--max-batch", type=int, default=1024, help="most envs per inference batch (default: 1024)")
    p.add_argument("--max-wait-ms", type=float, default=0.5,
                   help="how long to wait for more requests before serving a batch (default: 0.5 ms)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_key_flag(p, "the run's key; without one the learner uses RUN_DIR/run.key, made on its first start")
    add_service_flags(p)
    add_spec_flags(p)
    p.set_defaults(func=cmd_learner)

    p = sub.add_parser("explorer", help="the explorer service: steps envs, gets actions from the learner",
                       description="Step envs with actions from a learner; send transitions to its replay queue. "
                                   "The run spec comes from the learner.")
    p.add_argument("--learner", default=os.environ.get("MADDPG_LEARNER_ADDRESS"),
                   help="the learner's address, e.g. tcp://learner:5555 (env MADDPG_LEARNER_ADDRESS)")
    p.add_argument("--envs", type=int, default=int(os.environ.get("MADDPG_ENVS", "16")),
                   help="env copies to step (env MADDPG_ENVS; default 16)")
    p.add_argument("--explorer-id", default=os.environ.get("MADDPG_EXPLORER_ID", f"{socket.gethostname()}-{os.getpid()}"),
                   help="a stable name for this explorer (env MADDPG_EXPLORER_ID; default HOST-PID)")
    p.add_argument("--seed", type=int, default=None, help="env seed (default: derived from the run seed and the id)")
    p.add_argument("--request-timeout", type=float, default=30.0,
                   help="seconds without a reply before reconnecting and resending (default: 30)")
    p.add_argument("--give-up-after", type=float, default=600.0,
                   help="seconds without any answer from the learner before exiting with an error; long enough "
                        "for a learner pod to be replaced and compile (default: 600)")
    _add_key_flag(p, "the learner's run key")
    add_service_flags(p)
    p.set_defaults(func=cmd_explorer)

    p = sub.add_parser("api", help="the control API (FastAPI): start, list and stop runs",
                       description="Serve the control API (OpenAPI at /docs, metrics at /metrics). Settings come "
                                   "from MADDPG_API_* variables: RUNS_DIR, REGISTRY, LAUNCHER, MAX_EXPLORERS, "
                                   "MAX_ENVS_PER_EXPLORER, TOKEN, STOP_TIMEOUT_S; for LAUNCHER=kubernetes: NAMESPACE, "
                                   "IMAGE, IMAGE_PULL_POLICY, CHECKPOINT_URI, S3_ENDPOINT, S3_SECRET, "
                                   "RUN_SERVICE_ACCOUNT; and REDIS_URL (Redis registry and replay queues).")
    p.add_argument("--host", default=os.environ.get("MADDPG_API_HOST", "127.0.0.1"),
                   help="address to listen on (env MADDPG_API_HOST; default 127.0.0.1)")
    p.add_argument("--port", type=int, default=int(os.environ.get("MADDPG_API_PORT", "8000")),
                   help="port to listen on (env MADDPG_API_PORT; default 8000)")
    add_service_flags(p, metrics=False)
    p.set_defaults(func=cmd_api)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    from maddpg.checkpoint import CheckpointError
    from maddpg.runfolder import RunFolderError

    service = hasattr(ns, "log_format")  # learner, explorer, api: every message is a log record
    if service:
        ns.log_context = setup_logging(ns.role, ns.log_format)

    def report(message: str) -> None:
        if service:
            logging.getLogger(f"maddpg.{ns.role}").error(message)
        else:
            print(f"maddpg {ns.role}: {message}", file=sys.stderr)

    try:
        return ns.func(ns)
    except (UserError, CheckpointError, RunFolderError) as e:
        report(f"error: {e}")
        return 2
    except ValueError as e:  # a spec that does not fit the scenario (e.g. an action_dist its spaces cannot take)
        report(f"error: {e}")
        return 2
    except KeyboardInterrupt:
        report("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
