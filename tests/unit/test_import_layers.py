"""Import layers: the contracts in pyproject.toml (import-linter), and what an explorer process really loads.

The contracts see every import statement, those inside functions too; the run-time checks see what a process
has in `sys.modules` (imports made through importlib included) once the explorer's code has run.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
# What an explorer must never have loaded: the learner's framework and algorithm.
LEARNER_ONLY = ("tensorflow", "maddpg.algo", "maddpg.agent", "maddpg.trainer")


def _python(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **env})


def _learner_only(modules: list[str]) -> list[str]:
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in LEARNER_ONLY))


def test_the_import_contracts_hold():
    if not LINT_IMPORTS.exists():
        pytest.fail(f"{LINT_IMPORTS} is missing: pip install -e '.[test]' (import-linter)")
    result = subprocess.run([str(LINT_IMPORTS), "--no-cache", "--config", str(ROOT / "pyproject.toml")], cwd=ROOT,
                            capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stdout[result.stdout.find("Broken contracts"):] + result.stderr
    assert "0 broken" in result.stdout


def test_the_explorer_service_loads_no_tensorflow():
    result = _python("import json, sys, services.explorer.main; print(json.dumps(sorted(sys.modules)))")
    assert result.returncode == 0, result.stderr
    assert _learner_only(json.loads(result.stdout)) == []


def test_maddpg_explorer_runs_without_tensorflow():
    """`maddpg explorer` as the console script runs it, up to giving up on a learner that never answers: the
    modules loaded by then (the CLI, the explorer's command and its service) hold none of the learner's."""
    code = ("import atexit, json, sys\n"
            "atexit.register(lambda: print(json.dumps(sorted(sys.modules))))\n"
            "from services.cli import main\n"
            "sys.exit(main(['explorer', '--learner', 'tcp://127.0.0.1:9', '--envs', '2', '--request-timeout', "
            "'0.3', '--give-up-after', '1', '--log-format', 'text']))\n")
    result = _python(code, MADDPG_RUN_KEY="ab" * 32)
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]  # gave up: a user error
    assert "Traceback" not in result.stderr
    modules = json.loads(result.stdout.strip().splitlines()[-1])
    assert "services.explorer.main" in modules
    assert _learner_only(modules) == []
