"""The control API app: `create_app(settings)` wires settings, registry, launcher and routes; `serve` runs it."""

from __future__ import annotations

import logging
import math
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from services.api.body_limit import BodyLimitMiddleware
from services.api.launchers import Launcher, make_launcher, reconcile
from services.api.metrics import ApiMetrics, MetricsMiddleware
from services.api.progress import ProgressReader
from services.api.registry import ACTIVE, Registry, RegistryError, make_registry
from services.api.routes import health, runs
from services.api.settings import ApiSettings

log = logging.getLogger(__name__)


def create_app(settings: ApiSettings | None = None, *, registry: Registry | None = None,
               launcher: Launcher | None = None) -> FastAPI:
    """The FastAPI app.

    Args:
      settings: default: from the environment (`deps.get_settings`).
      registry, launcher: default: built from the settings (Redis with a Redis URL, else SQLite; the
        configured launcher).

    Raises:
      LaunchError: the kubernetes launcher finds no cluster.
    """
    if settings is None:
        from services.api.deps import get_settings

        settings = get_settings()
    registry = registry if registry is not None else make_registry(settings)

    def on_exit(run_id: str, status: str, reason: str | None) -> None:
        registry.update(run_id, only_from=ACTIVE, status=status, reason=reason)

    if launcher is None:
        launcher = make_launcher(settings, on_exit)
    if settings.launcher == "kubernetes" and not settings.checkpoint_uri:
        log.warning("MADDPG_API_CHECKPOINT_URI is not set: kubernetes runs keep their checkpoints in the learner "
                    "pod's emptyDir (lost with the pod) and report no progress")
    try:
        gone = reconcile(registry, launcher)  # runs of an earlier API process whose learners are gone
    except RegistryError as e:  # Redis not up yet: /readyz says so, and every GET /runs reconciles again
        log.warning("cannot reconcile the run registry at start-up: %s", e)
        gone = []
    if gone:
        log.warning("runs without processes after a restart, marked failed or stopped: %s", ", ".join(gone))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        launcher.close()

    app = FastAPI(title="maddpg control API", version="0.1.0", lifespan=lifespan,
                  description="Start, list and stop distributed MADDPG training runs.")
    app.state.settings, app.state.registry, app.state.launcher = settings, registry, launcher
    app.state.metrics = ApiMetrics()
    app.state.progress = ProgressReader({"endpoint_url": settings.s3_endpoint} if settings.s3_endpoint else None)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)  # outermost: it counts the 413s too
    app.include_router(runs.router)
    app.include_router(health.router)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RegistryError, _registry_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    return app


def _json_safe(value):
    """`value` with every float that JSON cannot hold (inf, nan) as its name."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


async def _validation_error(request: Request, exc: RequestValidationError):
    """FastAPI's 422, but an `Infinity` or `NaN` in the body (Python's JSON reader takes them) is echoed as a
    string: the default handler cannot encode it and answers 500."""
    return JSONResponse({"detail": jsonable_encoder(_json_safe(exc.errors()))}, status_code=422)


async def _registry_error(request: Request, exc: RegistryError):
    """A registry that cannot be reached (Redis down) makes the API unavailable, not broken: 503."""
    log.warning("registry: %s", exc)
    return JSONResponse({"detail": f"the run registry is unavailable: {exc}"}, status_code=503)


async def _http_error(request: Request, exc: StarletteHTTPException):
    """Starlette's 405 names only the first route's methods in `Allow`; name every method of the path."""
    if exc.status_code != 405:
        return await http_exception_handler(request, exc)
    methods = sorted({method for route in request.app.routes if isinstance(route, APIRoute)
                      and route.matches(request.scope)[0] != Match.NONE for method in route.methods})
    return JSONResponse({"detail": exc.detail}, status_code=405, headers={"Allow": ", ".join(methods)})


def serve(settings: ApiSettings) -> None:
    """Serves the API with uvicorn on `settings.host` and `settings.port` until SIGINT/SIGTERM (runs it started
    are stopped gracefully).

    Logging is the caller's (`maddpg.telemetry.logs.setup_logging`): uvicorn's records, access log included,
    go through the root logger's handler, JSON lines by default.
    """
    import uvicorn

    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info", log_config=None)
