"""Logs of the services: JSON lines on stdout (for `kubectl logs` and log shippers) or text for a terminal.

Every JSON line holds timestamp, level, logger, role, run_id, step (env steps so far, when the service counts
them), message, and exc_info when an exception is logged.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
from collections.abc import Callable

from pythonjsonlogger.json import JsonFormatter

FORMATS = ("json", "text")
# What TensorFlow's C++ runtime prints while it loads, whatever TF_CPP_MIN_LOG_LEVEL says: since TF 2.18 these
# lines are logged before absl's logging is initialised, straight to file descriptor 2.
_TF_STARTUP_LINES = re.compile("|".join(re.escape(text) for text in (
    "All log messages before absl::InitializeLog() is called",
    "oneDNN custom operations are on",
    "This TensorFlow binary is optimized to use available CPU instructions",
    "To enable the following instructions:",
    "Unable to register cuDNN factory", "Unable to register cuFFT factory", "Unable to register cuBLAS factory",
    "computation placer already registered",
    "Could not find cuda drivers on your machine",
    "TF-TRT Warning: Could not find TensorRT",
)))


def default_format() -> str:
    """MADDPG_LOG_FORMAT if set, else json (what a container should print)."""
    return os.environ.get("MADDPG_LOG_FORMAT", "json")


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


def import_tensorflow_quietly() -> None:
    """Imports TensorFlow without the notices its C++ runtime prints while loading (oneDNN, CPU features, absl).

    File descriptor 2 goes to a temporary file during the import; every line that is not one of those notices
    is written back to stderr, so a real error still shows. Later imports of TensorFlow find it loaded.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # INFO and WARNING lines logged after start-up
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode(errors="replace").splitlines(keepends=True)
            sys.stderr.write("".join(line for line in lines if not _TF_STARTUP_LINES.search(line)))
