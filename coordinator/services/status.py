"""Applying status events to the database (docs/architecture.md §3), in the caller's transaction.

Idempotent: per task, `merge.apply_event` ignores older/duplicate seqs and never changes a
terminal task, so an event applied before changes nothing when it comes again (a consumer that
read it, crashed before acknowledging and is claimed from); its timeline row is written once
(`INSERT … ON CONFLICT (event_id) DO NOTHING`). The job's state is then rebuilt
from all its party tasks of the current attempt with the pure `merge.merge` — never from the
single event. Post-commit work (revoking survivors, retries) is returned, not done here.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import cast

from sqlalchemy import Table, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from coordinator.merge import (
    TERMINAL_JOB_STATES,
    JobState,
    PartyStatus,
    PartyTask,
    apply_event,
    merge,
)
from coordinator.models import Job, SecretflowTask, TaskStatusLog
from coordinator.services import phases
from coordinator.services.attempts import deadline_of
from node.contract import RETRYABLE, ErrorInfo, StatusEvent, utcnow

log = logging.getLogger(__name__)

COORDINATOR_SOURCE = "coordinator"  # worker_container of the events the coordinator makes itself
# events logged per task (a node writes ≈ 8): past it, a party's further events still count for
# the task's state but are not stored in the timeline — except one that ends the task
MAX_LOGGED_PER_TASK = 100


def retryable(error: ErrorInfo | None) -> bool:
    """Whether a party's failure may be cured by running the whole job again: its typed cause
    is in the contract's RETRYABLE set (no word matching on messages)."""
    return error is not None and error.type in RETRYABLE


@dataclass
class Applied:
    """What one batch changed; the caller acts on it after the commit."""

    applied: int = 0
    # events for a task (or attempt) the coordinator never gave that party: (party, task_request_id,
    # event id) — refused: not applied, not stored (coordinator.intake.Refusal.NOT_ITS_TASK)
    refused: list[tuple[str, str, str]] = field(default_factory=list)
    jobs_changed: set[str] = field(default_factory=set)  # overall state changed
    jobs_touched: set[str] = field(default_factory=set)  # any party task changed
    terminate: list[tuple[str, str]] = field(default_factory=list)  # (party, task_request_id)
    # finished tasks whose full Celery result is still worth fetching (the event did not carry
    # the performance metrics, e.g. a failure or a node without that extension)
    finished_tasks: list[tuple[str, str]] = field(default_factory=list)  # (party, task_request_id)
    released: list[str] = field(default_factory=list)  # execution ids whose ports may be freed
    requeued: list[str] = field(default_factory=list)  # job ids queued for another attempt
    # node events by (party, "applied" | "duplicate"): a duplicate was applied before, or changed
    # nothing (its seq not above the task's, or the task had ended) — coordinator.metrics
    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)

    def count(self, e: StatusEvent, result: str) -> None:
        if e.worker_container != COORDINATOR_SOURCE:  # only what the parties' streams said
            self.outcomes[(e.party, result)] += 1


def to_party_task(row: SecretflowTask) -> PartyTask:
    return PartyTask(
        party=row.party,
        status=PartyStatus(row.status),
        seq=row.seq,
        stage=row.stage,
        progress=row.progress,
        error=ErrorInfo.model_validate(row.error) if row.error else None,
        result=row.result,
        last_event_id=row.last_event_id,
        updated_at=row.status_at,
    )


def _store(row: SecretflowTask, task: PartyTask, now: dt.datetime) -> None:
    row.status = str(task.status)
    row.seq = task.seq
    row.stage = task.stage
    row.progress = task.progress
    row.error = task.error.model_dump(mode="json") if task.error else None
    if task.result is not None:
        row.result = task.result
    row.last_event_id = task.last_event_id
    row.status_at = task.updated_at
    if task.status in (PartyStatus.RUNNING, PartyStatus.PROGRESS) and row.started_at is None:
        row.started_at = now
    if task.terminal and row.finished_at is None:
        row.finished_at = now


def _log_rows(events: Sequence[StatusEvent], job_of: dict[str, str | None]) -> list[dict]:
    now = utcnow()
    return [
        {
            "event_id": e.event_id,
            "task_request_id": e.task_request_id,
            "job_id": job_of.get(e.task_request_id),
            "execution_id": e.execution_id,
            "party": e.party,
            "seq": e.seq,
            "status": str(e.status),
            "stage": e.data.stage,
            "data": e.data.model_dump(mode="json", exclude_none=True),
            "timestamp": e.timestamp,
            "received_at": now,
        }
        for e in events
    ]


def _insert_log(session: Session, rows: list[dict]) -> None:
    """Write timeline rows, skipping event ids already written (an event read again after a
    crash: it changed nothing this time, but was counted towards the task's cap again — the cap
    is reached a little early, never passed). One executemany, pipelined by the driver."""
    table = cast(Table, TaskStatusLog.__table__)
    dialect = session.get_bind().dialect.name
    make = postgresql.insert if dialect == "postgresql" else sqlite.insert
    session.execute(make(table).on_conflict_do_nothing(index_elements=["event_id"]), rows)


def _within_cap(
    events: list[StatusEvent], rows: dict[str, SecretflowTask], ended: set[str]
) -> list[StatusEvent]:
    """The events to log: per task at most MAX_LOGGED_PER_TASK in all, plus the one that ended
    it (a party that floods its own task cannot grow the timeline without end). Counted on
    the task's row (`logged_events`), which is locked by this transaction's update."""
    kept = []
    for e in events:
        row = rows[e.task_request_id]
        if row.logged_events < MAX_LOGGED_PER_TASK or e.event_id in ended:
            row.logged_events += 1
            kept.append(e)
    return kept


def apply_events(session: Session, events: Iterable[StatusEvent]) -> Applied:
    """Record and apply a batch of events; rebuild the state of every job they touch."""
    out = Applied()
    batch: dict[str, StatusEvent] = {}
    for e in events:
        if e.event_id in batch:
            out.count(e, "duplicate")
        else:
            batch[e.event_id] = e
    if not batch:
        return out
    fresh = list(batch.values())
    task_request_ids = {e.task_request_id for e in fresh}
    rows = {
        r.task_request_id: r
        for r in session.scalars(
            select(SecretflowTask).where(SecretflowTask.task_request_id.in_(list(task_request_ids)))
        )
    }
    now = utcnow()
    touched_jobs: set[str] = set()
    moot: set[str] = set()  # coordinator-made events the facts had already overtaken
    ended: set[str] = set()  # events that ended their task (always logged)
    for e in sorted(fresh, key=lambda ev: (ev.task_request_id, ev.seq)):
        row = rows.get(e.task_request_id)
        if row is None or row.party != e.party or row.execution_id != e.execution_id:
            out.refused.append((e.party, e.task_request_id, e.event_id))  # e.g. sent by hand
            continue
        before = to_party_task(row)
        after = apply_event(before, e)
        if after is not before:
            _store(row, after, now)
            if after.last_event_id == e.event_id and e.data.performance_metrics:
                row.performance_metrics = e.data.performance_metrics
            out.applied += 1
            out.count(e, "applied")
            touched_jobs.add(row.job_id)
            if after.terminal:
                ended.add(e.event_id)
            if after.terminal and not row.performance_metrics:
                out.finished_tasks.append((row.party, row.task_request_id))
        elif e.worker_container == COORDINATOR_SOURCE:
            moot.add(e.event_id)
        else:
            out.count(e, "duplicate")
    # every node event is logged (the timeline is what the nodes said); a coordinator-made event
    # (timer, dead worker, Celery-result fallback) only when it changed the task — e.g. a
    # fallback SUCCESS racing the node's own SUCCESS event is dropped, not shown twice.
    skip = moot | {eid for _p, _t, eid in out.refused}
    logged = _within_cap([e for e in fresh if e.event_id not in skip], rows, ended)
    if logged:
        _insert_log(session, _log_rows(logged, {t: r.job_id for t, r in rows.items()}))
    out.jobs_touched |= touched_jobs
    merge_job_states(session, sorted(touched_jobs), out, now=now)
    return out


def _job_result(tasks: Sequence[SecretflowTask], receiver: str | None) -> dict:
    per_party = {}
    count = None
    for t in tasks:
        res = t.result or {}
        per_party[t.party] = {
            "intersection_count": res.get("intersection_count"),
            "output_path": res.get("output_path"),
            "performance_metrics": t.performance_metrics,
        }
        if t.party == receiver:
            count = res.get("intersection_count")
    if receiver is None:  # a kind without one (ub_psi): the one party that learned a count
        learned = [p for p, r in per_party.items() if r["intersection_count"] is not None]
        if len(learned) == 1:
            receiver, count = learned[0], per_party[learned[0]]["intersection_count"]
    return {"intersection_count": count, "receiver": receiver, "parties": per_party}


def merge_job_states(
    session: Session, job_ids: Sequence[str], out: Applied, *, now: dt.datetime
) -> None:
    """Rebuild the state of several jobs with two queries (jobs locked, then their tasks)."""
    if not job_ids:
        return
    jobs = session.scalars(
        select(Job).where(Job.id.in_(list(job_ids))).order_by(Job.id).with_for_update()
    ).all()
    tasks: dict[str, list[SecretflowTask]] = {}
    for t in session.scalars(
        select(SecretflowTask).where(SecretflowTask.job_id.in_([j.id for j in jobs]))
    ):
        tasks.setdefault(t.job_id, []).append(t)
    for job in jobs:
        current = [t for t in tasks.get(job.id, []) if t.execution_id == job.execution_id]
        _merge_job(job, current, out, now)


def _merge_job(job: Job, tasks: list[SecretflowTask], out: Applied, now: dt.datetime) -> None:
    """One job's state from its current attempt's party tasks (merge is pure)."""
    if job.execution_id is None or not tasks:
        return
    current = JobState(job.status)
    merged = merge(current, {t.party: to_party_task(t) for t in tasks})
    job.last_reconciled_at = now
    if all(to_party_task(t).terminal for t in tasks):
        out.released.append(job.execution_id)
    if merged.state == current:
        if current == JobState.FAILED and (merged.error, merged.failed_party) != (
            job.error,
            job.failed_party,
        ):  # a later report named the true cause (merge.blame)
            job.error, job.failed_party = merged.error, merged.failed_party
            out.jobs_changed.add(job.id)
        return
    out.jobs_changed.add(job.id)
    for party in merged.to_terminate:
        task_request_id = next(t.task_request_id for t in tasks if t.party == party)
        out.terminate.append((party, task_request_id))
    if merged.state == JobState.FAILED and job.deadline is not None and deadline_of(job) <= now:
        # the nodes stop a job at its deadline too: whichever of them or the deadline rule
        # (every reconcile interval) comes first, a job that ends after its deadline TIMED_OUT
        phases.ended(
            job,
            JobState.TIMED_OUT,
            now,
            error=f"deadline {deadline_of(job).isoformat()} passed ({merged.error})",
        )
        out.released.append(job.execution_id)
        return
    if merged.state == JobState.FAILED:
        errors = [
            ErrorInfo.model_validate(t.error) if t.error else None
            for t in tasks
            if t.status == PartyStatus.FAILURE
        ]  # a new attempt only when every failure of this one may be cured by it
        if errors and all(retryable(e) for e in errors) and job.attempt < job.max_attempts:
            # (refined while already waiting: it keeps saying what it waits for)
            phases.queued(job, error=f"attempt {job.attempt} failed, retrying: {merged.error}")
            job.failed_party = merged.failed_party
            out.requeued.append(job.id)
            out.released.append(job.execution_id)
            return
    if merged.state not in TERMINAL_JOB_STATES:
        phases.progressed(job, merged.state)
    else:
        phases.ended(job, merged.state, now, error=merged.error, failed_party=merged.failed_party)
        out.released.append(job.execution_id)
        if merged.state == JobState.SUCCEEDED:
            receiver = (job.request or {}).get("receiver")
            job.result = _job_result(tasks, receiver)


def record_task_result(session: Session, task_request_id: str, result: dict) -> str | None:
    """Store a finished task's full Celery result (performance metrics, output) on its row and
    refresh the job's result summary. Returns the job id (None when the task is unknown)."""
    row = session.scalars(
        select(SecretflowTask).where(SecretflowTask.task_request_id == task_request_id)
    ).one_or_none()
    if row is None:
        return None
    metrics = result.get("performance_metrics")
    if metrics:
        row.performance_metrics = metrics
    if result.get("result") and row.result is None:
        row.result = result["result"]
    job = session.get(Job, row.job_id)
    if (
        job is not None
        and job.status == JobState.SUCCEEDED
        and job.execution_id == row.execution_id
    ):
        tasks = list(
            session.scalars(
                select(SecretflowTask).where(
                    SecretflowTask.job_id == job.id,
                    SecretflowTask.execution_id == job.execution_id,
                )
            )
        )
        job.result = _job_result(tasks, (job.request or {}).get("receiver"))
    return row.job_id
