"""Local distributed runs: one learner process and K explorer processes, started through the console script.

Every role runs in its own process (never a fork of a process that imported TensorFlow). Children are tied to
this process (they get SIGTERM if it dies), and every one is stopped when the run ends or on Ctrl-C.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from maddpg.runspec import RunSpec
from maddpg.transport.security import RunKey

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_tcp_address() -> str:
    return f"tcp://127.0.0.1:{free_tcp_port()}"


def console_script() -> str:
    return str(Path(sys.executable).with_name("maddpg"))


class LocalRun:
    """A learner and K explorers as local processes.

    Args:
      spec: the run spec (its `explorers` and `envs_per_explorer` size the run).
      run_dir: the learner's run folder. quiet: no progress bar from the learner.
      queue: the replay queue, "local" or a redis:// URL.
      key: the run's key (default: a new one): only this run's processes can talk to its learner.
      warm_start: a checkpoint or run folder of another run for the learner to start from (`--restore`).
    """

    def __init__(self, spec: RunSpec, run_dir: Path, quiet: bool = False, queue: str = "local",
                 key: RunKey | None = None, warm_start: str | Path | None = None):
        self.spec, self.run_dir, self.quiet, self.queue = spec, Path(run_dir), quiet, queue
        self.warm_start = warm_start
        self.address = free_tcp_address()
        # Prometheus endpoints: role ("learner", "explorer-K") -> port
        self.metrics_ports = {role: free_tcp_port() for role in
                              ["learner", *(f"explorer-{k}" for k in range(spec.explorers))]}
        self.learner: subprocess.Popen | None = None
        self.explorers: list[subprocess.Popen] = []
        self.key = key or RunKey.generate()

    def environment(self) -> dict[str, str]:
        """The run processes' environment: one BLAS thread, quiet TensorFlow, the run's key."""
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "2",
               "MADDPG_LOG_FORMAT": os.environ.get("MADDPG_LOG_FORMAT", "text"), "MADDPG_RUN_KEY": self.key.text}
        env.pop("MADDPG_RUN_KEY_FILE", None)
        return env

    def _spawn(self, args: list[str], **kwargs) -> subprocess.Popen:
        return subprocess.Popen([console_script(), *args], env=self.environment(), preexec_fn=_die_with_parent,
                                **kwargs)

    def start(self) -> None:
        self.start_learner()
        for k in range(self.spec.explorers):
            self.explorers.append(self._spawn(
                ["explorer", "--learner", self.address, "--envs", str(self.spec.envs_per_explorer),
                 "--explorer-id", f"explorer-{k}", "--metrics-port", str(self.metrics_ports[f"explorer-{k}"])],
                stdout=2))  # their few log lines go to our stderr, beside the learner's progress bar

    def start_learner(self) -> None:
        """Starts the learner; after a crash, starts it again: it resumes from the run's newest checkpoint."""
        self.run_dir.parent.mkdir(parents=True, exist_ok=True)
        spec_file = self.run_dir.parent / f".{self.run_dir.name}.launch-spec.json"
        spec_file.write_text(self.spec.to_json())
        args = ["learner", "--bind", self.address, "--run-dir", str(self.run_dir), "--spec", str(spec_file),
                "--queue", self.queue, "--metrics-port", str(self.metrics_ports["learner"])]
        args += ["--restore", str(self.warm_start)] if self.warm_start else []
        self.learner = self._spawn(args + (["--quiet"] if self.quiet else []))

    def wait(self) -> int:
        """Waits for the learner; stops the explorers; returns the learner's exit code (130 on Ctrl-C)."""
        assert self.learner is not None
        try:
            while self.learner.poll() is None:
                if self.explorers and all(p.poll() not in (None, 0) for p in self.explorers):
                    print("maddpg train: every explorer failed; stopping the learner", file=sys.stderr)
                    self.learner.send_signal(signal.SIGINT)
                    break
                time.sleep(0.2)
            code = self.learner.wait()
        except KeyboardInterrupt:
            self.learner.send_signal(signal.SIGINT)  # it writes its final checkpoint and plot
            code = self.learner.wait()
            code = 130 if code in (0, 130, -signal.SIGINT) else code
        finally:
            self.stop_explorers()
        return code

    def stop_explorers(self, grace: float = 5.0) -> None:
        deadline = time.monotonic() + grace
        for p in self.explorers:
            while p.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            if p.poll() is None:
                p.terminate()
        for p in self.explorers:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
