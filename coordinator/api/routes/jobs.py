"""/api/v1/jobs — submit, list, detail, result, cancel, retry, live events (SSE)."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, NoReturn

from fastapi import APIRouter, Body, HTTPException, Query, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse
from pydantic import ValidationError

from coordinator.api.deps import Authenticated, CoordinatorDep, JobsDep, SessionDep
from coordinator.jobkinds.spec import JobKind
from coordinator.merge import TERMINAL_JOB_STATES, JobState
from coordinator.models import Job
from coordinator.schemas import (
    JobDetail,
    JobOut,
    JobResultOut,
    JobsPage,
    PSIJobCreate,
    TimelinePage,
)
from coordinator.services.jobs import JobError, JobService
from coordinator.services.views import (
    TIMELINE_PAGE,
    job_detail,
    job_out,
    job_result,
    list_jobs,
    timeline_page,
)

router = APIRouter(prefix="/api/v1/jobs", tags=["jobs"], dependencies=[Authenticated])


def _kind(jobs: JobService, kind: str) -> JobKind:
    declared = jobs.kinds.get(kind)
    if declared is None:
        raise HTTPException(404, f"no job kind {kind!r} (there are: {', '.join(jobs.kinds)})")
    return declared


def _raise(exc: JobError) -> NoReturn:
    raise HTTPException(exc.status_code, str(exc)) from exc


@router.post("/psi", response_model=JobOut, status_code=status.HTTP_201_CREATED)
def submit_psi(body: PSIJobCreate, jobs: JobsDep) -> JobOut:
    """Launch a PSI among two to eight parties. 422 names the bad field; 503 names an unreachable
    party (then nothing was sent anywhere)."""
    try:
        return job_out(jobs.submit(body))
    except JobError as exc:
        _raise(exc)


@router.get("/kinds")
def get_kinds(jobs: JobsDep) -> list[dict]:
    """The kinds of job this coordinator launches, each with its request's JSON schema (the
    body of POST /api/v1/jobs/{kind}, and what the UI's form is drawn from)."""
    return [
        {
            "name": k.name,
            "summary": k.summary,
            "learns": k.learns,
            "facts": k.facts,
            "schema": k.request.model_json_schema(),
        }
        for k in jobs.kinds.values()
    ]


@router.post("/{kind}/learns")
def preview_learns(kind: str, body: Annotated[dict, Body()], jobs: JobsDep) -> dict[str, str]:
    """What each party would learn of the others' data in this request (nothing is launched):
    party → sentence. 422 names the bad field, as a launch would."""
    declared = _kind(jobs, kind)
    try:
        return declared.who_learns(declared.request.model_validate(body))
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from None


@router.post("/{kind}", response_model=JobOut, status_code=status.HTTP_201_CREATED)
def submit_job(kind: str, body: Annotated[dict, Body()], jobs: JobsDep) -> JobOut:
    """Launch a job of any kind (GET /api/v1/jobs/kinds): the body is that kind's request. 404
    names the kinds there are; 422 the bad field; 503 an unreachable party."""
    declared = _kind(jobs, kind)
    try:
        request = declared.request.model_validate(body)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from None
    try:
        return job_out(jobs.submit(request))
    except JobError as exc:
        _raise(exc)


@router.get("", response_model=JobsPage)
def get_jobs(
    session: SessionDep,
    status_: Annotated[JobState | None, Query(alias="status")] = None,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> JobsPage:
    return list_jobs(session, status=status_, offset=offset, limit=limit)


def _job(session, job_id: str) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise HTTPException(404, f"no job {job_id!r}")
    return job


@router.get("/{job_id}", response_model=JobDetail)
def get_job(job_id: str, session: SessionDep, jobs: JobsDep) -> JobDetail:
    return job_detail(session, _job(session, job_id), jobs.kinds)


@router.get("/{job_id}/timeline", response_model=TimelinePage)
def get_timeline(
    job_id: str,
    session: SessionDep,
    offset: Annotated[int, Query(ge=0, description="events to skip, from the oldest")] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = TIMELINE_PAGE,
) -> TimelinePage:
    """Every event of the job, a page at a time (the detail carries the newest only)."""
    _job(session, job_id)
    return timeline_page(session, job_id, offset=offset, limit=limit)


@router.get("/{job_id}/result", response_model=JobResultOut)
def get_result(job_id: str, session: SessionDep) -> JobResultOut:
    """Intersection count, output paths and timings per party — never data rows."""
    job = _job(session, job_id)
    if job.status != JobState.SUCCEEDED:
        raise HTTPException(409, f"job {job_id} is {job.status}: no result yet")
    return job_result(job)


@router.post("/{job_id}/cancel", response_model=JobOut)
def cancel(job_id: str, jobs: JobsDep) -> JobOut:
    try:
        return job_out(jobs.cancel(job_id))
    except JobError as exc:
        _raise(exc)


@router.post("/{job_id}/retry", response_model=JobOut)
def retry(job_id: str, jobs: JobsDep) -> JobOut:
    try:
        return job_out(jobs.retry(job_id))
    except JobError as exc:
        _raise(exc)


@router.get("/{job_id}/events", response_class=StreamingResponse)
async def events(job_id: str, request: Request, coord: CoordinatorDep) -> StreamingResponse:
    """Server-sent events: the job detail each time it changes; ends when the job is final."""

    def snapshot() -> dict | None:
        with coord.db() as s:
            job = s.get(Job, job_id)
            kinds = coord.jobs.kinds if coord.jobs is not None else {}
            return None if job is None else job_detail(s, job, kinds).model_dump(mode="json")

    # read the change counter *before* the snapshot: a change landing in between is then seen
    # as a new version instead of being lost (the stream would wait for a change that came)
    seen = coord.feed.version(job_id)
    first = await asyncio.to_thread(snapshot)
    if first is None:
        raise HTTPException(404, f"no job {job_id!r}")

    async def stream():
        nonlocal seen
        data = first
        while True:
            yield f"event: job\ndata: {json.dumps(data)}\n\n"
            if data["status"] in TERMINAL_JOB_STATES:
                return
            while True:
                if await request.is_disconnected():
                    return
                new = await coord.feed.wait(job_id, seen, timeout=10.0)
                if new != seen:
                    seen = new
                    break
                # no change counted: re-read anyway (another coordinator process may share
                # the database), and send only a keep-alive when nothing changed
                fresh = await asyncio.to_thread(snapshot)
                if fresh is not None and fresh != data:
                    break
                yield ": keep-alive\n\n"
            fresh = await asyncio.to_thread(snapshot)
            if fresh is None:  # the job is gone
                return
            data = fresh

    return StreamingResponse(stream(), media_type="text/event-stream")
