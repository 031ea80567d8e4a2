"""The API's own Prometheus metrics, in a registry per app (tests build many apps)."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class ApiMetrics:
    """maddpg_api_requests_total{method,route,status} and maddpg_api_request_duration_seconds{method,route}."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("maddpg_api_requests", "HTTP requests answered", ["method", "route", "status"],
                                registry=self.registry)
        self.duration = Histogram("maddpg_api_request_duration_seconds", "time to answer an HTTP request",
                                  ["method", "route"], registry=self.registry,
                                  buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10))


class MetricsMiddleware:
    """Counts and times every HTTP request by its route template (`/runs/{run_id}`), never the raw path."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, code = time.perf_counter(), 500

        async def send_status(message: Message) -> None:
            nonlocal code
            if message["type"] == "http.response.start":
                code = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope["method"] if scope["method"] in ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD",
                                                            "OPTIONS") else "other"
            self.metrics.requests.labels(method, template, str(code)).inc()
            self.metrics.duration.labels(method, template).observe(time.perf_counter() - start)
