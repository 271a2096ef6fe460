"""The UI: server-rendered pages (Jinja2) with a little vanilla JS (fetch + EventSource).

The pages are shells; coordinator/static/app.js fills them from the JSON API, authenticated by
the session cookie that POST /login sets (coordinator/ui_sessions.py: it expires, ends at
logout, and never holds the token).
"""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from coordinator.api.deps import SettingsDep, UiSessionsDep
from coordinator.ui_sessions import SESSION_COOKIE

HERE = Path(__file__).resolve().parents[2]
templates = Jinja2Templates(directory=str(HERE / "templates"))
router = APIRouter(include_in_schema=False)


def _logged_in(request: Request, settings, sessions) -> bool:
    return sessions.valid(settings, request.cookies.get(SESSION_COOKIE))


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, settings: SettingsDep, sessions: UiSessionsDep):
    if _logged_in(request, settings, sessions):
        return RedirectResponse("/", status_code=303)
    return templates.TemplateResponse(request, "login.html", {"error": None})


@router.post("/login", response_class=HTMLResponse)
async def login(
    request: Request,
    settings: SettingsDep,
    sessions: UiSessionsDep,
    token: Annotated[str, Form()] = "",
):
    client = request.client.host if request.client else "unknown"
    if not token or not secrets.compare_digest(token.encode(), settings.api_token.encode()):
        await asyncio.sleep(sessions.failed_login(client))  # slows guessing, not the server
        return templates.TemplateResponse(
            request,
            "login.html",
            {
                "error": "That token is not the coordinator's API token."
                if token
                else "Enter the coordinator's API token."
            },
            status_code=401,
        )
    sessions.succeeded(client)
    resp = RedirectResponse("/", status_code=303)
    resp.set_cookie(
        SESSION_COOKIE,
        sessions.open(settings),
        max_age=int(sessions.lifetime_s),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return resp


@router.post("/logout")
def logout(request: Request, settings: SettingsDep, sessions: UiSessionsDep):
    sessions.close(settings, request.cookies.get(SESSION_COOKIE))  # the cookie is dead for good
    resp = RedirectResponse("/login", status_code=303)
    resp.delete_cookie(SESSION_COOKIE)
    return resp


def _page(name: str, active: str):
    def view(
        request: Request,
        settings: SettingsDep,
        sessions: UiSessionsDep,
        job_id: str | None = None,
    ):
        if not _logged_in(request, settings, sessions):
            return RedirectResponse("/login", status_code=303)
        return templates.TemplateResponse(request, name, {"job_id": job_id, "active": active})

    return view


router.add_api_route("/", _page("jobs.html", "jobs"), methods=["GET"], response_class=HTMLResponse)
router.add_api_route(
    "/parties", _page("parties.html", "parties"), methods=["GET"], response_class=HTMLResponse
)
router.add_api_route(
    "/new", _page("new_psi.html", "new"), methods=["GET"], response_class=HTMLResponse
)


@router.get("/new/{kind}", response_class=HTMLResponse)
def new_job_page(kind: str, request: Request, settings: SettingsDep, sessions: UiSessionsDep):
    """Any other kind of job: a form drawn in the browser from the kind's request schema
    (GET /api/v1/jobs/kinds) — a kind declared in one module gets its form with no UI code."""
    if not _logged_in(request, settings, sessions):
        return RedirectResponse("/login", status_code=303)
    if kind == "psi":
        return RedirectResponse("/new", status_code=303)  # PSI has a form of its own
    return templates.TemplateResponse(request, "new_job.html", {"kind": kind, "active": "new"})


router.add_api_route(
    "/jobs/{job_id}", _page("job.html", "jobs"), methods=["GET"], response_class=HTMLResponse
)
