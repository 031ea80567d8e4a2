"""The local launcher: a run's learner and explorers as processes of the API host, in a session of their own.

They outlive the API process: an API that crashed leaves its runs going, and the next one adopts those still
alive (it knows them by pid and process identity, from the registry) and watches them to their end. A run that
ended stopped or failed is resumed by starting its processes again in its run folder, from its newest checkpoint.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from maddpg.launch import LocalRun, console_script
from maddpg.runspec import RunSpec
from services.api.launchers import Launched, LaunchError, OnExit, PodOptions
from services.api.progress import read_progress
from services.api.registry import RunRecord

log = logging.getLogger(__name__)

BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
_EXPLORER_GRACE_S = 5.0  # explorers of an ended learner get this long to leave before SIGTERM


def process_identity(pid: int) -> str | None:
    """"BOOT_ID:START" of a live process (START: when it started, in clock ticks since boot), or None when it is
    gone or a zombie. A later process that reuses the pid has another START, or another BOOT_ID."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        boot = BOOT_ID.read_text().strip()
    except (OSError, IndexError):
        return None
    if fields[0] in ("Z", "X"):
        return None
    return f"{boot}:{fields[19]}"


def _signal(pid: int, identity: str, sig: int) -> None:
    """Sends `sig` to the process only if it is still the one recorded."""
    if identity and process_identity(pid) == identity:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:  # it ended meanwhile
            pass


class _DetachedRun(LocalRun):
    """A LocalRun whose processes write their output to log files in the run folder and run in a session of
    their own, unlike LocalRun's, which die with their parent: here the run must outlive the API process."""

    def _spawn(self, args: list[str], **kwargs) -> subprocess.Popen:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        role = args[0] if args[0] == "learner" else f"explorer-{len(self.explorers)}"
        kwargs.pop("stdout", None)
        with open(self.run_dir / f"{role}.log", "ab") as out:
            return subprocess.Popen([console_script(), *args], env=self.environment(), stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                                    **kwargs)

    def kill_started(self) -> None:
        """Kills what a failed start left running."""
        for p in [self.learner, *self.explorers]:
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()


@dataclass
class _Run:
    """A run this launcher watches: its processes by pid and identity (learner first), and whether a stop was
    asked. `child` is the LocalRun when this API process started it, None when it adopted it."""

    pids: list[int]
    procs: list[str]
    run_dir: Path
    num_episodes: int
    child: _DetachedRun | None = None
    stopping: bool = False

    def learner_alive(self) -> bool:
        return bool(self.procs) and process_identity(self.pids[0]) == self.procs[0]


class LocalLauncher:
    """Learner and explorers of each run as processes of this host (see the module docstring).

    A watcher thread per run waits for its learner (a child: its exit code; an adopted one: until its process is
    gone) and reports how it ended through `on_exit`, before it forgets the run: until the registry has the
    end, the run counts as alive.

    Args:
      on_exit: called with (run_id, status, reason) once a run's learner is gone.
      queue: the replay queue of the runs ("local" or a redis:// URL).
      stop_timeout: seconds a stopping learner gets to write its final checkpoint before it is killed.
      poll_s: seconds between two looks at an adopted learner.
    """

    def __init__(self, on_exit: OnExit, queue: str = "local", stop_timeout: float = 120.0, poll_s: float = 1.0):
        self._on_exit, self._queue, self._stop_timeout, self._poll_s = on_exit, queue, stop_timeout, poll_s
        self._runs: dict[str, _Run] = {}
        self._lock = threading.Lock()

    def start(self, run_id: str, spec: RunSpec, run_dir: Path, pods: PodOptions = PodOptions()) -> Launched:
        """Starts the learner and explorers; `pods` does not apply to local processes."""
        child = _DetachedRun(spec, run_dir, quiet=True, queue=self._queue)
        try:
            child.start()
        except OSError as e:
            child.kill_started()
            raise LaunchError(f"cannot start the run's processes: {e}") from None
        assert child.learner is not None
        pids = [child.learner.pid] + [p.pid for p in child.explorers]
        run = _Run(pids, [process_identity(pid) or "" for pid in pids], Path(run_dir), spec.num_episodes, child)
        with self._lock:
            self._runs[run_id] = run
        threading.Thread(target=self._watch_child, args=(run_id, run), daemon=True, name=f"watch-{run_id}").start()
        endpoints = {"learner": child.address, **{f"{role}_metrics": f"http://127.0.0.1:{port}/metrics"
                                                  for role, port in child.metrics_ports.items()}}
        return Launched(pids, endpoints, str(run_dir), run.procs)

    def resume(self, record: RunRecord, spec: RunSpec, pods: PodOptions = PodOptions()) -> Launched:
        """Starts the run's processes again in its run folder: the learner resumes from the folder's newest
        checkpoint by itself and appends to its rewards CSV from the checkpoint's episode on."""
        return self.start(record.id, spec, Path(record.run_dir), pods)

    def _watch_child(self, run_id: str, run: _Run) -> None:
        assert run.child is not None
        code = run.child.wait()  # stops the explorers too
        if run.stopping:
            status, reason = "stopped", None if code in (0, 130, -signal.SIGINT) else f"learner exited with {code}"
        elif code == 0:
            status, reason = "finished", None
        else:
            status, reason = "failed", f"learner exited with code {code} (see {run.run_dir / 'learner.log'})"
        self._report(run_id, run, status, reason)

    def _watch_adopted(self, run_id: str, run: _Run) -> None:
        """Waits for an adopted learner to be gone, then for its explorers (SIGTERM after a grace period). Its exit
        code is lost with the API that started it: the run finished if its rewards CSV holds every episode."""
        while run.learner_alive():
            time.sleep(self._poll_s)
        self._end_explorers(run)
        if run.stopping:
            status, reason = "stopped", None
        else:
            episodes = read_progress(run.run_dir)["episodes"]
            status, reason = ("finished", None) if episodes >= run.num_episodes else (
                "failed", f"the learner (pid {run.pids[0]}, adopted after an API restart) ended after {episodes} of "
                          f"{run.num_episodes} episodes (see {run.run_dir / 'learner.log'})")
        self._report(run_id, run, status, reason)

    def _report(self, run_id: str, run: _Run, status: str, reason: str | None) -> None:
        log.info("run %s: %s (%s)", run_id, status, reason or "ok")
        try:
            self._on_exit(run_id, status, reason)
        finally:
            with self._lock:
                if self._runs.get(run_id) is run:  # a resumed run under the same id is another
                    del self._runs[run_id]

    def _end_explorers(self, run: _Run) -> None:
        deadline = time.monotonic() + _EXPLORER_GRACE_S
        for pid, identity in zip(run.pids[1:], run.procs[1:]):
            while process_identity(pid) == identity and time.monotonic() < deadline:
                time.sleep(0.1)
            _signal(pid, identity, signal.SIGTERM)

    def stop(self, record: RunRecord) -> None:
        """Asks the learner to stop (SIGINT: it writes its final checkpoint; SIGKILL after the stop timeout); the
        watcher reports the end. A run no one watches yet (started before an API restart) is adopted first."""
        if not self.alive(record):
            return  # gone: reconcile marks it
        with self._lock:
            run = self._runs.get(record.id)
            if run is None:
                return  # it ended just now; its watcher reports it
            run.stopping = True
        self._interrupt(run)

    def _interrupt(self, run: _Run) -> None:
        _signal(run.pids[0], run.procs[0], signal.SIGINT)
        timer = threading.Timer(self._stop_timeout, self._kill_late, args=(run,))
        timer.daemon = True
        timer.start()

    @staticmethod
    def _kill_late(run: _Run) -> None:
        if run.learner_alive():
            log.warning("learner %s did not stop in time; killing it", run.pids[0])
            _signal(run.pids[0], run.procs[0], signal.SIGKILL)

    def alive(self, record: RunRecord) -> bool:
        """Whether the run's learner lives: one this launcher watches, or the very process the registry recorded
        (same pid and identity), which it adopts and watches from now on."""
        with self._lock:
            if record.id in self._runs:
                return True
        run = _Run(record.pids, record.procs, Path(record.run_dir), int(record.spec.get("num_episodes", 0)),
                   stopping=record.status == "stopping")
        if not run.learner_alive():
            return False
        with self._lock:
            if record.id in self._runs:  # adopted by another thread meanwhile
                return True
            self._runs[record.id] = run
        log.info("run %s: adopted its live learner (pid %d)", record.id, run.pids[0])
        threading.Thread(target=self._watch_adopted, args=(record.id, run), daemon=True,
                         name=f"watch-{record.id}").start()
        if run.stopping:  # the API that stopped it is gone, and with it the timer that would kill it late
            self._interrupt(run)
        return True

    def problem(self) -> str | None:
        script = console_script()
        if not os.access(script, os.X_OK):
            return f"the maddpg console script {script} is missing or not executable"
        return None

    def close(self, timeout: float = 60.0) -> None:
        """Stops every run it watches (final checkpoints) and waits for them: an API that shuts down on purpose
        leaves no processes (one that crashes leaves them to the next)."""
        with self._lock:
            runs = list(self._runs.values())
            for run in runs:
                run.stopping = True
        for run in runs:
            _signal(run.pids[0], run.procs[0], signal.SIGINT)
        deadline = time.monotonic() + timeout
        for run in runs:
            while run.learner_alive() and time.monotonic() < deadline:
                time.sleep(0.1)
            _signal(run.pids[0], run.procs[0], signal.SIGKILL)
        for run in runs:
            self._end_explorers(run)
