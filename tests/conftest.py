"""Shared test set-up: quiet TensorFlow, no screen for pygame, one BLAS thread; notes and skipped tests repeated
at the end of the run."""

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

NOTES = pytest.StashKey[list]()  # lines a test wants the user to read at the end (e.g. a stand-in base image)


def pytest_configure(config: pytest.Config) -> None:
    config.stash[NOTES] = []


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    for note in config.stash[NOTES]:
        terminalreporter.write_line(note, yellow=True)
    skipped = terminalreporter.stats.get("skipped", [])
    if skipped:
        reasons = sorted({str(report.longrepr[2]).removeprefix("Skipped: ") for report in skipped
                          if isinstance(report.longrepr, tuple)})
        terminalreporter.write_line(f"{len(skipped)} test(s) SKIPPED, so not everything was tested: "
                                    + "; ".join(reasons) + ". `make install` installs what they need.",
                                    yellow=True, bold=True)
