"""The local launcher: a run's learner and explorers as subprocesses of the API host."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from maddpg.launch import LocalRun, console_script
from maddpg.runspec import RunSpec
from services.api.launchers import Launched, LaunchError, OnExit, PodOptions
from services.api.registry import RunRecord

log = logging.getLogger(__name__)


class _LoggedRun(LocalRun):
    """A LocalRun whose learner and explorers write their output to log files in the run folder."""

    def _spawn(self, args: list[str], **kwargs) -> subprocess.Popen:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        role = args[0] if args[0] == "learner" else f"explorer-{len(self.explorers)}"
        with open(self.run_dir / f"{role}.log", "ab") as out:
            kwargs["stdout"] = out
            return super()._spawn(args, stderr=subprocess.STDOUT, **kwargs)


def _pid_alive(pid: int) -> bool:
    """Whether `pid` is a live maddpg process (not a zombie, not another program that reused the pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z" and b"maddpg" in cmdline


class LocalLauncher:
    """Learner and explorers of each run as subprocesses of this host (maddpg.launch.LocalRun).

    A watcher thread per run waits for its learner and reports how it ended through `on_exit`. Processes are
    spawned from one long-lived thread: children die with the thread that forked them (PR_SET_PDEATHSIG),
    and request threads come and go.

    Args:
      on_exit: called with (run_id, status, reason) once a run's processes are gone.
      queue: the replay queue of the runs ("local" or a redis:// URL).
      stop_timeout: seconds a stopping learner gets to write its final checkpoint before it is killed.
    """

    def __init__(self, on_exit: OnExit, queue: str = "local", stop_timeout: float = 120.0):
        self._on_exit, self._queue, self._stop_timeout = on_exit, queue, stop_timeout
        self._runs: dict[str, _LoggedRun] = {}
        self._stopping: set[str] = set()
        self._lock = threading.Lock()
        self._spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="launcher")

    def start(self, run_id: str, spec: RunSpec, run_dir: Path, pods: PodOptions = PodOptions()) -> Launched:
        """Starts the learner and explorers; `pods` does not apply to local processes."""
        run = _LoggedRun(spec, run_dir, quiet=True, queue=self._queue)
        try:
            self._spawner.submit(run.start).result()
        except OSError as e:
            raise LaunchError(f"cannot start the run's processes: {e}") from None
        assert run.learner is not None
        with self._lock:
            self._runs[run_id] = run
        threading.Thread(target=self._watch, args=(run_id, run), daemon=True, name=f"watch-{run_id}").start()
        endpoints = {"learner": run.address,
                     **{f"{role}_metrics": f"http://127.0.0.1:{port}/metrics" for role, port in run.metrics_ports.items()}}
        return Launched([run.learner.pid] + [p.pid for p in run.explorers], endpoints, str(run_dir))

    def _watch(self, run_id: str, run: _LoggedRun) -> None:
        code = run.wait()
        with self._lock:
            stopped = run_id in self._stopping
            self._runs.pop(run_id, None)
            self._stopping.discard(run_id)
        if stopped:
            status, reason = "stopped", None if code in (0, 130, -signal.SIGINT) else f"learner exited with {code}"
        elif code == 0:
            status, reason = "finished", None
        else:
            status, reason = "failed", f"learner exited with code {code} (see {run.run_dir / 'learner.log'})"
        log.info("run %s: %s (%s)", run_id, status, reason or "ok")
        self._on_exit(run_id, status, reason)

    def stop(self, record: RunRecord) -> None:
        """Asks the learner to stop (SIGINT: it writes its final checkpoint); the watcher reports the end."""
        with self._lock:
            run = self._runs.get(record.id)
            if run is not None:
                self._stopping.add(record.id)
        if run is not None:
            assert run.learner is not None
            if run.learner.poll() is None:
                run.learner.send_signal(signal.SIGINT)
                timer = threading.Timer(self._stop_timeout, self._kill_late, args=(run,))
                timer.daemon = True
                timer.start()
        elif record.pids and _pid_alive(record.pids[0]):  # a run started before an API restart
            try:
                os.kill(record.pids[0], signal.SIGINT)
            except ProcessLookupError:  # it ended meanwhile; reconcile marks it
                pass

    @staticmethod
    def _kill_late(run: _LoggedRun) -> None:
        if run.learner is not None and run.learner.poll() is None:
            log.warning("learner %s did not stop in time; killing it", run.learner.pid)
            run.learner.kill()

    def alive(self, record: RunRecord) -> bool:
        with self._lock:
            if record.id in self._runs:
                return True  # its watcher reports the end
        return bool(record.pids) and _pid_alive(record.pids[0])

    def problem(self) -> str | None:
        script = console_script()
        if not os.access(script, os.X_OK):
            return f"the maddpg console script {script} is missing or not executable"
        return None

    def close(self, timeout: float = 60.0) -> None:
        """Stops every run it started (final checkpoints) and waits for them."""
        with self._lock:
            runs = list(self._runs.items())
            self._stopping.update(run_id for run_id, _ in runs)
        for _, run in runs:
            if run.learner is not None and run.learner.poll() is None:
                run.learner.send_signal(signal.SIGINT)
        for _, run in runs:
            if run.learner is not None:
                try:
                    run.learner.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    run.learner.kill()
            run.stop_explorers()
        self._spawner.shutdown(wait=False)
