"""Logs of the services: JSON lines on stdout (for `kubectl logs` and log shippers) or text for a terminal.

Every JSON line holds timestamp, level, logger, role, run_id, step (env steps so far, when the service counts
them), message, and exc_info when an exception is logged.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from pythonjsonlogger.json import JsonFormatter

FORMATS = ("json", "text")


class LogContext(logging.Filter):
    """Adds the service's role, run id and step to every record; `run_id` and `step` may be set later."""

    def __init__(self, role: str, run_id: str | None = None):
        super().__init__()
        self.role, self.run_id = role, run_id
        self.step: Callable[[], int] | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        record.role, record.run_id = self.role, self.run_id
        record.step = self.step() if self.step is not None else None
        return True


def setup_logging(role: str, fmt: str = "json", run_id: str | None = None,
                  level: int = logging.INFO) -> LogContext:
    """Sends every log record of the process to stdout in `fmt` ("json" or "text"); returns the context
    whose `run_id` and `step` the service fills in once it knows them.

    Raises:
      ValueError: an unknown format.
    """
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r}: use json or text (--log-format / MADDPG_LOG_FORMAT)")
    context = LogContext(role, run_id)
    handler = logging.StreamHandler(sys.stdout)
    handler.addFilter(context)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(
            "{levelname}{name}{role}{run_id}{step}{message}", style="{", timestamp="timestamp",
            rename_fields={"levelname": "level", "name": "logger"}))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(role)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)
    return context
