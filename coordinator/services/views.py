"""Read side: jobs as the API and the UI show them (queries only, no writes)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from coordinator.jobkinds.spec import JobKind
from coordinator.merge import JobState, PartyStatus
from coordinator.models import Job, SecretflowTask, TaskStatusLog
from coordinator.schemas import (
    JobDetail,
    JobOut,
    JobResultOut,
    JobsPage,
    PartyTaskOut,
    TimelineEntry,
    TimelinePage,
)


def job_out(job: Job) -> JobOut:
    return JobOut(**_job_fields(job))


def _job_fields(job: Job) -> dict[str, Any]:
    """What every view of a job shows (the list, the detail page, the API's answers)."""
    request = job.request or {}
    current = [t for t in job.tasks if t.execution_id == job.execution_id]
    party_status = {t.party: t.status for t in current}
    for p in job.parties.get("names", []):
        party_status.setdefault(
            p, JobState.QUEUED if job.status == JobState.QUEUED else PartyStatus.PENDING
        )
    return dict(
        id=job.id,
        kind=job.kind,
        status=job.status,
        parties=list(job.parties.get("names", [])),
        receiver=request.get("receiver"),
        protocol=request.get("protocol"),
        party_status=party_status,
        error=shown_error(job),
        waiting_for=job.waiting_for,
        failed_party=job.failed_party,
        attempt=job.attempt,
        max_attempts=job.max_attempts,
        execution_id=job.execution_id,
        session_id=next(
            (t.params["session"]["id"] for t in current if (t.params or {}).get("session")), None
        ),
        deadline=job.deadline,
        created_at=job.created_at,
        dispatched_at=job.dispatched_at,
        finished_at=job.finished_at,
        last_reconciled_at=job.last_reconciled_at,
    )


def list_jobs(session: Session, *, status: str | None, offset: int, limit: int) -> JobsPage:
    q = select(Job)
    count = select(func.count()).select_from(Job)
    if status:
        q = q.where(Job.status == status)
        count = count.where(Job.status == status)
    jobs = session.scalars(q.order_by(Job.created_at.desc()).offset(offset).limit(limit)).all()
    return JobsPage(
        items=[job_out(j) for j in jobs],
        total=session.scalar(count) or 0,
        offset=offset,
        limit=limit,
    )


TIMELINE_PAGE = 200  # the newest events a job's detail (API, UI, SSE) carries


def timeline_page(session: Session, job_id: str, *, offset: int, limit: int) -> TimelinePage:
    """`limit` events of a job's timeline in time order, from `offset` counted from the oldest."""
    logs = session.scalars(
        select(TaskStatusLog)
        .where(TaskStatusLog.job_id == job_id)
        .order_by(TaskStatusLog.timestamp, TaskStatusLog.seq, TaskStatusLog.id)
        .offset(offset)
        .limit(limit)
    ).all()
    return TimelinePage(
        items=[TimelineEntry.model_validate(e) for e in logs],
        total=_timeline_total(session, job_id),
        offset=offset,
        limit=limit,
    )


def _timeline_total(session: Session, job_id: str) -> int:
    count = select(func.count()).select_from(TaskStatusLog).where(TaskStatusLog.job_id == job_id)
    return session.scalar(count) or 0


def who_learns(kinds: Mapping[str, JobKind], job: Job) -> dict[str, str]:
    """Party → what it learns in this job, as its kind says for its request."""
    kind = kinds.get(job.kind)
    if kind is None or not job.request:
        return {}
    try:
        return kind.who_learns(kind.load(job.request))
    except ValueError:  # a request stored by an older coordinator that this one no longer takes
        return {}


def job_detail(session: Session, job: Job, kinds: Mapping[str, JobKind]) -> JobDetail:
    total = _timeline_total(session, job.id)
    newest = session.scalars(
        select(TaskStatusLog)
        .where(TaskStatusLog.job_id == job.id)
        .order_by(TaskStatusLog.timestamp.desc(), TaskStatusLog.seq.desc(), TaskStatusLog.id.desc())
        .limit(TIMELINE_PAGE)
    ).all()
    logs = list(reversed(newest))
    tasks = session.scalars(
        select(SecretflowTask).where(SecretflowTask.job_id == job.id).order_by(SecretflowTask.id)
    ).all()
    return JobDetail(
        **_job_fields(job),
        request=job.request,
        learns=who_learns(kinds, job),
        tasks=[PartyTaskOut.model_validate(t) for t in tasks],
        timeline=[TimelineEntry.model_validate(e) for e in logs],
        timeline_total=total,
        result=job.result,
    )


def job_result(job: Job) -> JobResultOut:
    res = job.result or {}
    duration = None
    if job.dispatched_at and job.finished_at:
        duration = (job.finished_at - job.dispatched_at).total_seconds()
    return JobResultOut(
        job_id=job.id,
        status=job.status,
        intersection_count=res.get("intersection_count"),
        receiver=res.get("receiver") or (job.request or {}).get("receiver"),
        parties=res.get("parties") or {},
        duration_s=duration,
    )


def shown_error(job: Job) -> str | None:
    """The job's error as the API and the UI show it: what a queued job waits for first."""
    if not job.waiting_for:
        return job.error
    waiting = f"waiting: {job.waiting_for}"
    return f"{waiting} | {job.error}" if job.error else waiting
