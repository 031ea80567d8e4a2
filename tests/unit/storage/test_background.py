"""BackgroundCheckpointer: the caller never waits, the newest pending job wins, failures are counted."""

import threading
import time

import pytest

from maddpg.storage import BackgroundCheckpointer, StoreError


class SlowWriter:
    """Writes by recording the job; blocks on `gate` so the test decides when a write ends."""

    def __init__(self, fail_on=()):
        self.gate, self.started, self.done = threading.Event(), threading.Event(), []
        self.fail_on = set(fail_on)

    def __call__(self, job):
        self.started.set()
        assert self.gate.wait(10)
        if job in self.fail_on:
            raise StoreError(f"job {job} refused")
        self.done.append(job)
        return job


def test_submit_never_waits_and_the_newest_pending_job_wins():
    writer = SlowWriter()
    ckpt = BackgroundCheckpointer(writer)
    ckpt.submit(1)
    assert writer.started.wait(5)  # job 1 is being written, and blocked
    start = time.perf_counter()
    for job in (2, 3, 4):
        ckpt.submit(job)
    assert time.perf_counter() - start < 0.05
    assert not ckpt.wait(timeout=0.05)
    writer.gate.set()
    assert ckpt.wait(timeout=5)
    assert writer.done == [1, 4]
    assert ckpt.stats.written == 2 and ckpt.stats.superseded == 2 and ckpt.stats.last_result == 4
    assert ckpt.stats.total_seconds >= ckpt.stats.last_seconds > 0
    ckpt.close()


def test_a_failure_is_counted_and_the_next_job_still_runs(caplog):
    writer = SlowWriter(fail_on={1})
    writer.gate.set()
    ckpt = BackgroundCheckpointer(writer)
    ckpt.submit(1)
    assert ckpt.wait(timeout=5)
    assert ckpt.stats.failed == 1 and ckpt.stats.last_error == "job 1 refused" and ckpt.stats.last_result is None
    assert "job 1 refused" in caplog.text
    ckpt.submit(2)
    ckpt.close()
    assert ckpt.stats.written == 1 and ckpt.stats.last_result == 2


def test_close_writes_the_pending_job_first():
    writer = SlowWriter()
    ckpt = BackgroundCheckpointer(writer)
    ckpt.submit(1)
    ckpt.submit(2)
    threading.Timer(0.1, writer.gate.set).start()
    ckpt.close(timeout=5)
    assert writer.done[-1] == 2
    with pytest.raises(RuntimeError):
        ckpt.submit(3)
