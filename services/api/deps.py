"""Dependencies of the routes: settings, registry, launcher, progress reader and the bearer-token check (tests
override them)."""

from __future__ import annotations

import hmac
from functools import lru_cache
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from services.api.launchers import Launcher
from services.api.progress import ProgressReader
from services.api.registry import Registry
from services.api.settings import ApiSettings


@lru_cache
def get_settings() -> ApiSettings:
    """The settings from the environment, read once."""
    return ApiSettings()


def get_app_settings(request: Request) -> ApiSettings:
    return request.app.state.settings


def get_registry(request: Request) -> Registry:
    return request.app.state.registry


def get_launcher(request: Request) -> Launcher:
    return request.app.state.launcher


def get_progress(request: Request) -> ProgressReader:
    return request.app.state.progress


_bearer = HTTPBearer(auto_error=False, description="MADDPG_API_TOKEN, required on mutating routes when set")


def require_token(settings: Annotated[ApiSettings, Depends(get_app_settings)],
                  credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> None:
    """Raises 401 unless the request carries the configured bearer token (none configured: open)."""
    if settings.token is None:
        return
    expected = settings.token.get_secret_value().encode()
    given = credentials.credentials.encode() if credentials is not None else b""
    if not hmac.compare_digest(given, expected):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "a valid bearer token is required",
                            headers={"WWW-Authenticate": "Bearer"})


SettingsDep = Annotated[ApiSettings, Depends(get_app_settings)]
RegistryDep = Annotated[Registry, Depends(get_registry)]
LauncherDep = Annotated[Launcher, Depends(get_launcher)]
ProgressDep = Annotated[ProgressReader, Depends(get_progress)]
Authorized = Depends(require_token)
