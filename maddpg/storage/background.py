"""Checkpoint writes on a thread of their own, so that training and inference never wait on storage."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from maddpg.storage.base import CheckpointError

log = logging.getLogger(__name__)


@dataclass
class CheckpointStats:
    """What the checkpointer did so far (for logs and metrics)."""

    written: int = 0  # checkpoints written
    failed: int = 0  # writes that raised
    superseded: int = 0  # pending checkpoints replaced by a newer one before they started
    last_seconds: float = 0.0  # duration of the last write, successful or not
    total_seconds: float = 0.0  # duration of every write
    last_error: str | None = None  # the last failure's message
    last_result: Any = None  # what `write` returned for the last successful checkpoint


class BackgroundCheckpointer:
    """Runs `write(job)` on a thread, newest job first: a queue of one slot.

    Call order: `submit(job)` whenever a checkpoint is due (returns at once; a job still waiting is replaced
    by the newer one), `wait()` to block until every submitted job is done, `close()` at the end (waits too).

    Args:
      write: writes one checkpoint; what it returns is kept as `stats.last_result`. Exceptions it raises are
        logged and counted, and the next job runs as usual.
      name: the thread's name.
      on_done: called on the thread after each write with its duration in seconds and whether it succeeded.
    """

    def __init__(self, write: Callable[[Any], Any], name: str = "checkpointer",
                 on_done: Callable[[float, bool], None] | None = None):
        self._write, self._on_done = write, on_done
        self._cond = threading.Condition()
        self._pending: Any = None
        self._has_pending = self._busy = self._closed = False
        self.stats = CheckpointStats()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, job: Any) -> None:
        """Queues `job`; replaces a job that has not started yet."""
        with self._cond:
            if self._closed:
                raise RuntimeError("checkpointer is closed")
            if self._has_pending:
                self.stats.superseded += 1
            self._pending, self._has_pending = job, True
            self._cond.notify_all()

    def wait(self, timeout: float | None = None) -> bool:
        """Blocks until no job is pending or running; False if `timeout` seconds passed first."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._has_pending and not self._busy, timeout)

    def close(self, timeout: float | None = None) -> None:
        """Finishes the pending job, then stops the thread."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._has_pending or self._closed)
                if not self._has_pending:
                    return  # closed and nothing left
                job, self._pending, self._has_pending, self._busy = self._pending, None, False, True
            start = time.perf_counter()
            result, error = None, None
            try:
                result = self._write(job)
            except Exception as e:  # noqa: BLE001 - a failed checkpoint is counted and logged; training goes on
                error = e
            seconds = time.perf_counter() - start
            if error is not None:  # logged before `wait()` returns
                log.warning("checkpoint failed (%d so far): %s", self.stats.failed + 1, error,
                            exc_info=None if _expected(error) else error)
            if self._on_done is not None:
                self._on_done(seconds, error is None)
            with self._cond:
                self.stats.last_seconds = seconds
                self.stats.total_seconds += seconds
                if error is None:
                    self.stats.written += 1
                    self.stats.last_result = result
                else:
                    self.stats.failed += 1
                    self.stats.last_error = str(error) or type(error).__name__
                self._busy = False
                self._cond.notify_all()


def _expected(error: Exception) -> bool:
    return isinstance(error, (CheckpointError, OSError))
