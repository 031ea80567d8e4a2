"""Runs the installed `maddpg` console script as a user would."""

import os
import subprocess
import sys
from pathlib import Path

MADDPG = str(Path(sys.executable).with_name("maddpg"))


def run(*args: str, timeout: float = 600, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "SDL_VIDEODRIVER": "dummy", **(env or {})}
    return subprocess.run([MADDPG, *args], capture_output=True, text=True, timeout=timeout, env=env, **kwargs)
