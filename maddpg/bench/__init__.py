"""Benchmark suites (`maddpg bench SUITE`): each measures the project beside its baseline in one run."""

from __future__ import annotations

import importlib
import json
from collections.abc import Mapping
from pathlib import Path

from tqdm import tqdm

from maddpg.bench.harness import markdown

SUITES = {"loop": "maddpg.bench.loop", "update": "maddpg.bench.update", "env": "maddpg.bench.env",
          "inference": "maddpg.bench.inference", "e2e": "maddpg.bench.e2e", "checkpoint": "maddpg.bench.checkpoint",
          "queue": "maddpg.bench.queue", "recovery": "maddpg.bench.recovery", "learning": "maddpg.bench.learning"}


def run_suites(suite: str, *, quick: bool = False, out: Path | None = None, out_dir: Path | None = None,
               options: dict | None = None, suites: Mapping[str, str] = SUITES) -> int:
    """Runs one suite or all; prints each markdown table; writes SUITE.json and README.md under `out_dir`.

    `options` are keyword arguments of one suite's `run` (the learning suite's seeds, episodes, scenarios).
    `suites` maps names to the modules whose `run` measures them: the library's, and those the caller adds (the
    console script adds the API's own suite; the library never imports a service).
    """
    names = list(suites) if suite == "all" else [suite]
    tables = []
    for name in tqdm(names, desc="bench", unit="suite", disable=len(names) == 1):
        target = out if len(names) == 1 and out else (Path(out_dir) / f"{name}.json" if out_dir else None)
        doc = importlib.import_module(suites[name]).run(quick=quick, out=target, **(options or {}))
        table = markdown(doc)
        tables.append(table)
        print(table)
    if out_dir:
        _write_readme(Path(out_dir))
    return 0


def _write_readme(out_dir: Path) -> None:
    """bench/results/README.md: one table per suite JSON in the folder."""
    parts = ["# Benchmark results", "", "Written by `make bench` (`maddpg bench all --out-dir bench/results`).", ""]
    for path in sorted(out_dir.glob("*.json")):
        doc = json.loads(path.read_text())
        if "suite" in doc:  # other result files (learning curves) live beside the suites
            parts.append(markdown(doc))
    (out_dir / "README.md").write_text("\n".join(parts))
