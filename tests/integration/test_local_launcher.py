"""The local launcher's process identities and adoption, with real processes (`sleep` stands in for a learner
and an explorer): a restarted API adopts a run only when the recorded process is still the same one, watches it
to its end, stops it and its explorers, and reports how it ended."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

import services.api.launchers.local as local
from services.api.launchers.local import LocalLauncher, process_identity
from services.api.registry import RunRecord


class _Ends:
    """The on_exit callback: records each report and lets a test wait for one."""

    def __init__(self):
        self.reports: list[tuple[str, str, str | None]] = []
        self._event = threading.Event()

    def __call__(self, run_id: str, status: str, reason: str | None) -> None:
        self.reports.append((run_id, status, reason))
        self._event.set()

    def wait(self, timeout: float = 10.0) -> tuple[str, str, str | None]:
        assert self._event.wait(timeout), "no end reported"
        return self.reports[-1]


@pytest.fixture
def processes():
    started: list[subprocess.Popen] = []

    def spawn() -> subprocess.Popen:
        started.append(subprocess.Popen(["sleep", "60"]))
        return started[-1]

    yield spawn
    for p in started:
        p.kill()
        p.wait()


@pytest.fixture
def ends(monkeypatch) -> _Ends:
    monkeypatch.setattr(local, "_EXPLORER_GRACE_S", 0.3)
    return _Ends()


def _record(run_id: str, procs: list[subprocess.Popen], tmp_path, identities=None, **fields) -> RunRecord:
    pids = [p.pid for p in procs]
    return RunRecord(id=run_id, status=fields.pop("status", "running"), spec={"num_episodes": 3},
                     run_dir=str(tmp_path), pids=pids,
                     procs=identities if identities is not None else [process_identity(pid) for pid in pids])


def _gone(p: subprocess.Popen, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    return p.poll() is not None


def test_a_process_identity_is_its_boot_and_start_time(processes):
    p = processes()
    identity = process_identity(p.pid)
    assert identity and identity.startswith(local.BOOT_ID.read_text().strip() + ":")
    assert process_identity(p.pid) == identity and process_identity(os.getpid()) != identity
    p.kill()
    time.sleep(0.2)
    assert process_identity(p.pid) is None  # a zombie is gone
    p.wait()
    assert process_identity(p.pid) is None


def test_a_reused_pid_is_not_adopted(processes, ends, tmp_path):
    launcher = LocalLauncher(ends, poll_s=0.05)
    p = processes()
    assert not launcher.alive(_record("other", [p], tmp_path, identities=["another-boot:12345"]))
    assert not launcher.alive(_record("legacy", [p], tmp_path, identities=[]))  # recorded before identities
    assert p.poll() is None and ends.reports == []


def test_an_adopted_run_is_stopped_with_its_explorers(processes, ends, tmp_path):
    launcher = LocalLauncher(ends, poll_s=0.05)
    learner, explorer = processes(), processes()
    record = _record("adopted", [learner, explorer], tmp_path)
    assert launcher.alive(record) and launcher.alive(record)  # adopted once
    launcher.stop(record)
    assert _gone(learner) and learner.returncode == -signal.SIGINT
    assert ends.wait() == ("adopted", "stopped", None)
    assert _gone(explorer) and explorer.returncode == -signal.SIGTERM
    assert not launcher.alive(record) and len(ends.reports) == 1


def test_an_adopted_learner_that_dies_fails_the_run_and_one_that_finished_finishes_it(processes, ends, tmp_path):
    launcher = LocalLauncher(ends, poll_s=0.05)
    learner = processes()
    assert launcher.alive(_record("crashed", [learner], tmp_path / "crashed"))
    learner.kill()
    run_id, status, reason = ends.wait()
    assert (run_id, status) == ("crashed", "failed") and "adopted after an API restart" in reason
    assert "after 0 of 3 episodes" in reason

    done = tmp_path / "done"
    done.mkdir()
    (done / "rewards.csv").write_text("episode,env_steps,updates,wall_time_s,length,reward\n"
                                      "1,25,0,0.1,25,-1\n2,50,0,0.2,25,-1\n3,75,0,0.3,25,-1\n")
    learner = processes()
    assert launcher.alive(_record("done", [learner], done))
    learner.terminate()
    assert _gone(learner)
    deadline = time.monotonic() + 10
    while len(ends.reports) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ends.reports[-1] == ("done", "finished", None)


def test_a_run_adopted_while_stopping_is_stopped_again(processes, ends, tmp_path):
    """The API that asked it to stop died: the adopting one repeats the SIGINT (the learner takes only the first)
    and arms the kill timer that died with the other."""
    launcher = LocalLauncher(ends, poll_s=0.05, stop_timeout=0.5)
    learner = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGINT, "
                                "signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"], stdout=subprocess.PIPE)
    try:
        assert learner.stdout.readline() == b"ready\n"
        assert launcher.alive(_record("stopping", [learner], tmp_path, status="stopping"))
        assert _gone(learner, 5) and learner.returncode == -signal.SIGKILL  # it ignored SIGINT: killed late
        assert ends.wait() == ("stopping", "stopped", None)
    finally:
        learner.kill()
        learner.wait()
        learner.stdout.close()


def test_close_stops_adopted_runs(processes, ends, tmp_path):
    launcher = LocalLauncher(ends, poll_s=0.05)
    learner, explorer = processes(), processes()
    assert launcher.alive(_record("r", [learner, explorer], tmp_path))
    launcher.close(timeout=5)
    assert _gone(learner, 1) and _gone(explorer, 1)
    assert ends.wait() == ("r", "stopped", None)
