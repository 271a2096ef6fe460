"""The UI: server-rendered pages (Jinja2) with a little vanilla JS (fetch + EventSource).

The pages are shells; coordinator/static/app.js fills them from the JSON API, authenticated by
the session cookie that POST /login sets (an HMAC of the token, never the token itself).
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from coordinator.api.deps import SESSION_COOKIE, SettingsDep, session_value

HERE = Path(__file__).resolve().parents[2]
templates = Jinja2Templates(directory=str(HERE / "templates"))
router = APIRouter(include_in_schema=False)


def _logged_in(request: Request, settings) -> bool:
    cookie = request.cookies.get(SESSION_COOKIE)
    return bool(cookie) and secrets.compare_digest(cookie, session_value(settings))


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, settings: SettingsDep):
    if _logged_in(request, settings):
        return RedirectResponse("/", status_code=303)
    return templates.TemplateResponse(request, "login.html", {"error": None})


@router.post("/login", response_class=HTMLResponse)
def login(request: Request, settings: SettingsDep, token: Annotated[str, Form()] = ""):
    if not token or not secrets.compare_digest(token.encode(), settings.api_token.encode()):
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
    resp = RedirectResponse("/", status_code=303)
    resp.set_cookie(SESSION_COOKIE, session_value(settings), httponly=True, samesite="strict")
    return resp


@router.post("/logout")
def logout():
    resp = RedirectResponse("/login", status_code=303)
    resp.delete_cookie(SESSION_COOKIE)
    return resp


def _page(name: str, active: str):
    def view(request: Request, settings: SettingsDep, job_id: str | None = None):
        if not _logged_in(request, settings):
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
router.add_api_route(
    "/jobs/{job_id}", _page("job.html", "jobs"), methods=["GET"], response_class=HTMLResponse
)
