"""The unbalanced PSI caches there are: every cache job that succeeded, the newest per server
and name (a cache made again replaces its halves at both parties). Read from the coordinator's
own records: a cache job's request (the table, its key columns) and its parties' results (the
server's distinct keys, each half's size)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session

from coordinator.merge import JobState
from coordinator.models import Job
from coordinator.schemas import CacheOut
from node.contract import utcnow

CACHE_KIND = "ub_psi_cache"
MAX_LISTED = 1000  # cache jobs read for one listing (the newest)


def list_caches(session: Session) -> list[CacheOut]:
    """The caches, newest first (one per server and name)."""
    jobs = session.scalars(
        select(Job)
        .where(Job.kind == CACHE_KIND, Job.status == JobState.SUCCEEDED)
        .order_by(Job.finished_at.desc())
        .limit(MAX_LISTED)
    )
    seen: dict[tuple[str, str], CacheOut] = {}
    for job in jobs:
        cache = _cache(job)
        if cache is not None:
            seen.setdefault((cache.server, cache.cache), cache)
    return list(seen.values())


def find_cache(session: Session, server: str, name: str) -> CacheOut | None:
    return next((c for c in list_caches(session) if (c.server, c.cache) == (server, name)), None)


def _cache(job: Job) -> CacheOut | None:
    request = job.request or {}
    server, client = str(request.get("server", "")), str(request.get("client", ""))
    results = {t.party: t.result or {} for t in job.tasks if t.execution_id == job.execution_id}
    if server not in results:
        return None
    made_at = job.finished_at or job.created_at
    made_at = made_at.replace(tzinfo=dt.UTC) if made_at.tzinfo is None else made_at
    return CacheOut(
        cache=str(request.get("cache", "")),
        server=server,
        client=client,
        table=str(request.get("input", "")),
        keys=list(request.get("keys") or []),
        rows=results[server].get("rows"),
        server_bytes=results[server].get("bytes"),
        client_bytes=results.get(client, {}).get("bytes"),
        made_by=job.id,
        made_at=made_at,
        age_s=round((utcnow() - made_at).total_seconds(), 1),
    )
