"""FastAPI dependencies, as Annotated aliases (one place)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from coordinator.runtime import Coordinator
from coordinator.services.jobs import JobService
from coordinator.settings import CoordinatorSettings
from coordinator.ui_sessions import SESSION_COOKIE, UiSessions

_bearer = HTTPBearer(auto_error=False, description="COORD_API_TOKEN")


def get_coordinator(request: Request) -> Coordinator:
    return request.app.state.coordinator


CoordinatorDep = Annotated[Coordinator, Depends(get_coordinator)]


def get_settings(coord: CoordinatorDep) -> CoordinatorSettings:
    return coord.settings


SettingsDep = Annotated[CoordinatorSettings, Depends(get_settings)]


def get_ui_sessions(coord: CoordinatorDep) -> UiSessions:
    return coord.ui_sessions


UiSessionsDep = Annotated[UiSessions, Depends(get_ui_sessions)]


def get_jobs(coord: CoordinatorDep) -> JobService:
    if coord.jobs is None:
        raise RuntimeError("the coordinator's job service has not started")
    return coord.jobs


JobsDep = Annotated[JobService, Depends(get_jobs)]


def get_session(coord: CoordinatorDep) -> Iterator[Session]:
    with coord.db() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def authenticated(
    request: Request,
    settings: SettingsDep,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    if creds is not None and secrets.compare_digest(
        creds.credentials.encode(), settings.api_token.encode()
    ):
        return
    coord: Coordinator = request.app.state.coordinator
    if coord.ui_sessions.valid(settings, request.cookies.get(SESSION_COOKIE)):
        return
    raise HTTPException(
        status.HTTP_401_UNAUTHORIZED,
        "missing or wrong bearer token (Authorization: Bearer <COORD_API_TOKEN>)",
        headers={"WWW-Authenticate": "Bearer"},
    )


Authenticated = Depends(authenticated)
