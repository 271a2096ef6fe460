"""The coordinator's FastAPI app: REST API (/api/v1, OpenAPI at /docs) and the UI (/)."""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.middleware.body_limit import RequestBodyLimitMiddleware

from coordinator.api.routes import caches, jobs, parties, ui
from coordinator.runtime import Coordinator
from coordinator.settings import CoordinatorSettings

# Content-Security-Policy: nothing from elsewhere, no framing. The UI runs /static/app.js only;
# Swagger/ReDoc pages need their small inline start-up script (and ReDoc a blob: worker).
_CSP_UI = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'self'"
)
_CSP_DOCS = _CSP_UI.replace("script-src 'self'", "script-src 'self' 'unsafe-inline'") + (
    "; worker-src 'self' blob:"
)
_DOCS_PATHS = ("/docs", "/redoc")


class SecurityHeaders:
    """Plain ASGI middleware (safe for the SSE stream): security headers on every response."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        csp = _CSP_DOCS if scope["path"].startswith(_DOCS_PATHS) else _CSP_UI

        async def with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [
                    (b"content-security-policy", csp.encode()),
                    (b"x-frame-options", b"DENY"),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                ]
                message = {**message, "headers": headers}
            await send(message)

        return await self.app(scope, receive, with_headers)


def create_app(
    settings: CoordinatorSettings | None = None,
    *,
    coordinator: Coordinator | None = None,
    run_migrations: bool = True,
) -> FastAPI:
    """The app; its lifespan starts the coordinator (migrations, listeners, reconciler)."""
    settings = settings or (coordinator.settings if coordinator else None) or CoordinatorSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        coord = coordinator or Coordinator(settings)
        coord.start(run_migrations=run_migrations)
        app.state.coordinator = coord
        try:
            yield
        finally:
            coord.stop()

    # /docs and /redoc from assets the app serves itself (an air-gapped network has no CDN)
    app = FastAPIOffline(
        static_url="/docs-assets",
        title="Partyline coordinator",
        summary="Launch cross-party PSI jobs and follow their merged status.",
        version="0.1.0",
        lifespan=lifespan,
    )
    # Starlette's limit: a longer body is refused (413) as it arrives, not read whole first;
    # added before (inside) SecurityHeaders so that its 413 carries them too
    app.add_middleware(RequestBodyLimitMiddleware, max_body_size=settings.max_body_bytes)
    app.add_middleware(SecurityHeaders)
    app.include_router(jobs.router)
    app.include_router(parties.router)
    app.include_router(caches.router)
    app.include_router(ui.router)
    static = Path(__file__).resolve().parents[1] / "static"
    app.mount("/static", StaticFiles(directory=str(static)), name="static")

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict:
        coord: Coordinator = app.state.coordinator
        threads = coord.listener.threads if coord.listener else []
        listeners = {t.party: t.connected.is_set() for t in threads}
        # entries refused from a party's stream (coordinator.intake): forged, oversized …
        return {"ok": True, "listeners": listeners, "refused": coord.intake.snapshot()}

    return app
