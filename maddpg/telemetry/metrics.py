"""Prometheus metrics of the learner and the explorers.

Names carry the `maddpg_` prefix and base units (seconds, transitions); counters end in `_total`; every
series has the labels `run_id` and `role`, and only bounded others (agent name, error code). Counters that the
services already keep (env steps, updates, server stats) are read when Prometheus scrapes, through a collector,
so the hot loops pay nothing for them; latencies and batch sizes are histograms observed as they happen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
CHECKPOINT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


@dataclass
class Sample:
    """One series of a scrape: a metric family's name, kind, help, value and extra labels."""

    name: str
    kind: str  # "counter" or "gauge"
    help: str
    value: float
    labels: dict[str, str] = field(default_factory=dict)


class _Reader(Collector):
    """Turns what `read()` returns at scrape time into metric families labelled with run_id and role."""

    def __init__(self, read: Callable[[], Iterable[Sample]], base: dict[str, str]):
        self._read, self._base = read, base

    def collect(self) -> Iterable[Metric]:
        families: dict[str, Metric] = {}
        for s in self._read():
            labels = {**self._base, **s.labels}
            family = families.get(s.name)
            if family is None:
                cls = CounterMetricFamily if s.kind == "counter" else GaugeMetricFamily
                family = families[s.name] = cls(s.name, s.help, labels=list(labels))
            family.add_metric(list(labels.values()), s.value)
        return list(families.values())

    def describe(self) -> Iterable[Metric]:
        return []  # read lazily: the families depend on the run (agents, error codes)


class ServiceMetrics:
    """The metrics registry of one service process (a learner or an explorer).

    Args:
      role: "learner" or "explorer". run_id: the run's id (the learner's run id, shared by its explorers).
    """

    def __init__(self, role: str, run_id: str):
        self.registry = CollectorRegistry()
        self.labels = {"run_id": run_id, "role": role}
        self._server = None

    def histogram(self, name: str, help: str, buckets: tuple) -> Histogram:
        """A histogram with this service's labels already bound."""
        h = Histogram(name, help, list(self.labels), registry=self.registry, buckets=buckets)
        return h.labels(**self.labels)

    def read(self, read: Callable[[], Iterable[Sample]]) -> None:
        """Registers `read`, called on every scrape for the current values of counters and gauges."""
        self.registry.register(_Reader(read, self.labels))

    def serve(self, port: int, addr: str = "0.0.0.0") -> int:
        """Serves /metrics on `port` (0: a free one) from a daemon thread; returns the port."""
        self._server, _ = start_http_server(port, addr=addr, registry=self.registry)
        return self._server.server_port

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
