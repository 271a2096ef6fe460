"""The coordinator's FastAPI app: REST API (/api/v1, OpenAPI at /docs) and the UI (/)."""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from coordinator.api.routes import jobs, parties, ui
from coordinator.runtime import Coordinator
from coordinator.settings import CoordinatorSettings


def create_app(
    settings: CoordinatorSettings | None = None,
    *,
    coordinator: Coordinator | None = None,
    run_migrations: bool = True,
) -> FastAPI:
    """The app; its lifespan starts the coordinator (migrations, listeners, reconciler)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        coord = coordinator or Coordinator(settings or CoordinatorSettings())
        coord.start(run_migrations=run_migrations)
        app.state.coordinator = coord
        try:
            yield
        finally:
            coord.stop()

    app = FastAPI(
        title="Partyline coordinator",
        summary="Launch cross-party PSI jobs and follow their merged status.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.include_router(jobs.router)
    app.include_router(parties.router)
    app.include_router(ui.router)
    static = Path(__file__).resolve().parents[1] / "static"
    app.mount("/static", StaticFiles(directory=str(static)), name="static")

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict:
        coord: Coordinator = app.state.coordinator
        listeners = {t.party: t.connected.is_set() for t in coord.listener.threads}
        # entries refused from a party's stream (coordinator.intake): forged, oversized …
        return {"ok": True, "listeners": listeners, "refused": coord.intake.snapshot()}

    return app
