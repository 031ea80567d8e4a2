"""Benchmark harness: machine record, interleaved A/B timing, JSON and markdown output (DESIGN.md section 7)."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path


@dataclass
class Result:
    """One row of a suite: the project's figure beside its baseline's, measured in the same run."""

    case: str
    metric: str
    value: float
    unit: str
    baseline: float | None = None
    ratio: float | None = None
    note: str = ""

    def __post_init__(self) -> None:
        if self.baseline and self.ratio is None:
            self.ratio = self.value / self.baseline


def machine() -> dict:
    """Cores, CPU model and library versions, stored with every result file."""
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for name in ("numpy", "tensorflow-cpu", "tensorflow", "mpe2", "pyzmq", "redis"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {"cores": os.cpu_count(), "cpu": cpu, "python": platform.python_version(),
            "platform": platform.platform(), "versions": versions}


def interleaved(candidates: dict[str, Callable[[], float]], rounds: int) -> dict[str, float]:
    """Runs each candidate once per round, alternating (A B A B ...), and returns the median of each.

    Each callable returns its own figure (a rate or a duration), so that warm-up and setup stay outside.
    """
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, fn in candidates.items():
            samples[name].append(fn())
    return {name: statistics.median(values) for name, values in samples.items()}


def rate(fn: Callable[[], int], min_seconds: float) -> float:
    """Calls `fn` (which returns how many units it did) until `min_seconds` pass; returns units per second."""
    done, start = 0, time.perf_counter()
    while True:
        done += fn()
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return done / elapsed


def write(suite: str, results: list[Result], out: Path | None, extra: dict | None = None) -> dict:
    """Writes the suite's JSON (if `out`) and returns it."""
    doc = {"suite": suite, "machine": machine(), "results": [asdict(r) for r in results], **(extra or {})}
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(doc, indent=2) + "\n")
    return doc


def markdown(doc: dict) -> str:
    """A markdown table of one suite's results."""
    lines = [f"### {doc['suite']}", "", "| case | metric | value | unit | baseline | ratio |",
             "|---|---|---:|---|---:|---:|"]
    for r in doc["results"]:
        base = "" if r["baseline"] is None else _fmt(r["baseline"])
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.1f}x"
        lines.append(f"| {r['case']} | {r['metric']} | {_fmt(r['value'])} | {r['unit']} | {base} | {ratio} |")
    m = doc["machine"]
    lines += ["", f"Machine: {m['cores']} cores, {m['cpu']}, Python {m['python']}, "
              + ", ".join(f"{k} {v}" for k, v in m["versions"].items())]
    return "\n".join(lines) + "\n"


def _fmt(x: float) -> str:
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.3g}"
