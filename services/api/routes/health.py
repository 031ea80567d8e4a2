"""Liveness, readiness and the API's own Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from services.api.deps import LauncherDep, RegistryDep
from services.api.registry import RegistryError
from services.api.schemas import Health

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """The process answers."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses={503: {"model": Health}})
def readyz(registry: RegistryDep, launcher: LauncherDep):
    """The registry (SQLite or Redis) and the launcher's backend (the Kubernetes API) are usable (503 otherwise,
    naming what is not)."""
    problems = []
    try:
        registry.ping()
    except RegistryError as e:
        problems.append(f"registry: {e}")
    launcher_problem = launcher.problem()
    if launcher_problem:
        problems.append(f"launcher: {launcher_problem}")
    if problems:
        return JSONResponse(Health(status="unavailable", problems=problems).model_dump(), status_code=503)
    return Health(status="ok")


@router.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
def metrics(request: Request) -> Response:
    """Prometheus metrics of the API (maddpg_api_*)."""
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
