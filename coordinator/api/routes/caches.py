"""The unbalanced PSI caches there are (made by ub_psi_cache jobs; queried by ub_psi jobs)."""

from __future__ import annotations

from fastapi import APIRouter

from coordinator.api.deps import Authenticated, SessionDep
from coordinator.schemas import CacheOut
from coordinator.services.caches import list_caches

router = APIRouter(prefix="/api/v1/caches", tags=["caches"], dependencies=[Authenticated])


@router.get("", response_model=list[CacheOut])
def get_caches(session: SessionDep) -> list[CacheOut]:
    """Each cache with its server's table and key columns, the server's distinct keys, each
    half's size, its age, its client (the one party that may query it) and the job that made
    it — newest first. A query against a cache whose table changed since is refused by the
    server, naming it."""
    return list_caches(session)
