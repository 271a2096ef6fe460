"""The reconciliation rules of docs/architecture.md §3, one function per rule; `JobService.reconcile` runs them.

A pass reads the clock once (`Pass`) and `scan`s the database in one session:

1. per open job (QUEUED, DISPATCHED, RUNNING), the JOB_RULES in order — one that fires claims
   the job;
2. per open task of that job's current attempt, the TASK_RULES in order — the first that fires
   claims the task;
3. the SWEEPS, over every job.

The rules only collect what they find on the pass (events to make, jobs to time out, tasks to
check for a lost final event); after the session the job service acts on it, in this order:
`time_out` every job found, add `lost_final_events`, apply all coordinator-made events in one
batch, stamp the open jobs as reconciled, dispatch.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from celery import states as celery_states
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from coordinator.db import transaction
from coordinator.intake import IntakeCounters
from coordinator.merge import TERMINAL_JOB_STATES, TERMINAL_PARTY_STATUSES, JobState, PartyStatus
from coordinator.models import Job, SecretflowTask
from coordinator.parties import PartyClients, PartyUnreachable, RemoteFailure
from coordinator.services import phases
from coordinator.services.attempts import ACTIVE, aware, current_tasks, deadline_of, unfinished
from coordinator.services.results import celery_result
from coordinator.services.status import COORDINATOR_SOURCE
from node.contract import (
    COORDINATOR_SEQ_BASE,
    HEARTBEAT_TTL_S,
    NODE_SEQ_MAX,
    TERMINAL_STATUSES,
    ErrorInfo,
    ErrorType,
    EventData,
    NodeTaskError,
    Stage,
    StatusEvent,
    TaskStatus,
    utcnow,
)

log = logging.getLogger(__name__)

ORPHAN_AGE_S = 60  # how long a task may stay open under a finished job before it is cancelled
_OPEN_PARTY_STATUSES = [s for s in PartyStatus if s not in TERMINAL_PARTY_STATUSES]


@dataclass
class RuleContext:
    """What the rules read, and what they remember from one pass to the next (the job service
    makes one and hands it to every pass)."""

    db: sessionmaker[Session]
    clients: PartyClients
    counters: IntakeCounters
    start_timeout_s: float
    result_fallback_grace_s: float
    stream_group: str
    # party → monotonic time its broker was first found unreachable (cleared once it answers)
    unreachable_since: dict[str, float] = field(default_factory=dict)
    # task → monotonic time its Celery result was first seen final while its final event was not
    final_seen: dict[str, float] = field(default_factory=dict)


@dataclass
class Pass:
    """One pass: the clock, read once, and what its rules found."""

    now: dt.datetime
    mono: float
    alive: dict[str, tuple[bool | None, str]] = field(default_factory=dict)  # party → verdict
    timed_out: list[str] = field(default_factory=list)  # job ids
    synthetic: list[StatusEvent] = field(default_factory=list)  # events to apply, in order
    awaiting: list[tuple[str, str]] = field(
        default_factory=list
    )  # (party, task_request_id) of open tasks


JobRule = Callable[[RuleContext, Pass, Job], bool]
TaskRule = Callable[[RuleContext, Pass, Job, SecretflowTask], bool]
Sweep = Callable[[RuleContext, Pass, Session], None]


# --- helpers ------------------------------------------------------------------------------------
def synthetic_event(
    t: SecretflowTask, status: TaskStatus, etype: ErrorType, msg: str
) -> StatusEvent:
    """A final event the coordinator makes for a task (worker "coordinator", seq above any of
    the node's own: a node's seq is at most NODE_SEQ_MAX, so this one never passes SEQ_MAX)."""
    return StatusEvent(
        event_id=f"coord-{uuid.uuid4().hex}",
        seq=COORDINATOR_SEQ_BASE + min(t.seq, NODE_SEQ_MAX),
        task_request_id=t.task_request_id,
        task_id=t.task_id,
        subtask_id=t.subtask_id,
        execution_id=t.execution_id,
        party=t.party,
        status=status,
        data=EventData(stage=Stage.TASK_FINISHED, error=ErrorInfo(type=etype, message=msg)),
        worker_container=COORDINATOR_SOURCE,
    )


def describe(value: object) -> str:
    """A failed result's value in one line: a RemoteFailure names its type itself."""
    return str(value) if isinstance(value, RemoteFailure) else f"{type(value).__name__}: {value}"


def attempt_age(p: Pass, job: Job) -> float:
    """Seconds since the job's current attempt was sent (0 when it never was)."""
    return (p.now - aware(job.dispatched_at)).total_seconds() if job.dispatched_at else 0


def party_alive(ctx: RuleContext, p: Pass, party: str) -> tuple[bool | None, str]:
    """(alive?, why) of a party's SecretFlow worker, asked once a pass; None while it cannot be
    told yet (its broker has not answered for HEARTBEAT_TTL_S)."""
    if party not in p.alive:
        p.alive[party] = _heartbeat_verdict(ctx, party, p.mono)
    return p.alive[party]


def _heartbeat_verdict(ctx: RuleContext, party: str, now_mono: float) -> tuple[bool | None, str]:
    try:
        hb = ctx.clients.heartbeat(party)
    except PartyUnreachable as exc:
        since = ctx.unreachable_since.setdefault(party, now_mono)
        if now_mono - since > HEARTBEAT_TTL_S:
            return False, str(exc)
        return None, ""
    except Exception as exc:  # redis errors are wrapped below
        since = ctx.unreachable_since.setdefault(party, now_mono)
        if now_mono - since > HEARTBEAT_TTL_S:
            return False, f"party {party}'s broker is unreachable: {exc}"
        return None, ""
    ctx.unreachable_since.pop(party, None)
    if hb is None:
        return False, (
            f"party {party}'s SecretFlow worker is gone (no heartbeat for "
            f"{HEARTBEAT_TTL_S} s): killed, crashed or offline"
        )
    return True, ""


# --- job rules ----------------------------------------------------------------------------------
def deadline_passed(ctx: RuleContext, p: Pass, job: Job) -> bool:
    """A job whose deadline has passed is timed out (TIMED_OUT, its open tasks revoked)."""
    if deadline_of(job) <= p.now:
        p.timed_out.append(job.id)
        return True
    return False


# --- task rules (an open task of the current attempt) -------------------------------------------
def worker_lost(ctx: RuleContext, p: Pass, job: Job, t: SecretflowTask) -> bool:
    """A task whose party's worker is gone (no heartbeat, or a broker silent for
    HEARTBEAT_TTL_S) fails with WorkerLost once its attempt is older than HEARTBEAT_TTL_S — also
    a queued job's previous attempt, so that the retry message names the dead worker."""
    ok, why = party_alive(ctx, p, t.party)
    if ok is False and attempt_age(p, job) > HEARTBEAT_TTL_S:
        p.synthetic.append(synthetic_event(t, TaskStatus.FAILURE, ErrorType.WORKER_LOST, why))
        return True
    return False


def start_timed_out(ctx: RuleContext, p: Pass, job: Job, t: SecretflowTask) -> bool:
    """A task of a sent job that has not started (PENDING or RECEIVED) within the start timeout
    fails with StartTimeout (retryable)."""
    if job.status == JobState.QUEUED:
        return False
    if t.status in (PartyStatus.PENDING, PartyStatus.RECEIVED) and (
        attempt_age(p, job) > ctx.start_timeout_s
    ):
        p.synthetic.append(
            synthetic_event(
                t,
                TaskStatus.FAILURE,
                ErrorType.START_TIMEOUT,
                f"party {t.party} did not start within {ctx.start_timeout_s:.0f} s "
                "(worker offline or busy?)",
            )
        )
        return True
    return False


def awaiting_final_event(ctx: RuleContext, p: Pass, job: Job, t: SecretflowTask) -> bool:
    """Any other open task of a sent job is checked for a lost final event after the scan
    (`lost_final_events`)."""
    if job.status == JobState.QUEUED:
        return False
    p.awaiting.append((t.party, t.task_request_id))
    return True


# --- sweeps -------------------------------------------------------------------------------------
def orphaned_tasks(ctx: RuleContext, p: Pass, s: Session) -> None:
    """A task still open under a finished job (e.g. revoked before it started) for more than
    ORPHAN_AGE_S is cancelled (Revoked)."""
    stale = s.scalars(
        select(SecretflowTask)
        .join(Job, Job.id == SecretflowTask.job_id)
        .where(
            Job.status.in_(list(TERMINAL_JOB_STATES)),
            SecretflowTask.status.in_(_OPEN_PARTY_STATUSES),
        )
    )
    for t in stale:
        age = (p.now - aware(t.created_at)).total_seconds()
        if age > ORPHAN_AGE_S:
            p.synthetic.append(
                synthetic_event(
                    t, TaskStatus.CANCELLED, ErrorType.REVOKED, "revoked by the coordinator"
                )
            )


# --- what one pass runs, in order ---------------------------------------------------------------
JOB_RULES: tuple[JobRule, ...] = (deadline_passed,)
TASK_RULES: tuple[TaskRule, ...] = (worker_lost, start_timed_out, awaiting_final_event)
SWEEPS: tuple[Sweep, ...] = (orphaned_tasks,)


def scan(ctx: RuleContext, p: Pass) -> None:
    """Run the rules over the database in one session; what they find is collected on `p`."""
    with ctx.db() as s:
        jobs = list(s.scalars(select(Job).where(Job.status.in_([JobState.QUEUED, *ACTIVE]))))
        for job in jobs:
            if any(rule(ctx, p, job) for rule in JOB_RULES):  # one that fires claims the job
                continue
            for t in current_tasks(job):
                if t.status in TERMINAL_STATUSES:
                    continue
                for rule in TASK_RULES:
                    if rule(ctx, p, job, t):
                        break  # the first rule that fires claims the task
        for sweep in SWEEPS:
            sweep(ctx, p, s)


# --- acting on what the scan found --------------------------------------------------------------
def time_out(
    db: sessionmaker[Session], job_id: str
) -> tuple[list[tuple[str, str]], str | None] | None:
    """The deadline rule's action: the job TIMED_OUT (under a row lock; unless it ended
    meanwhile). Returns its open tasks to revoke and the attempt whose ports to free."""
    now = utcnow()
    with transaction(db) as s:
        job = s.get(Job, job_id, with_for_update=True)
        if job is None or job.status in TERMINAL_JOB_STATES:
            return None
        phases.ended(
            job, JobState.TIMED_OUT, now, error=f"deadline {deadline_of(job).isoformat()} passed"
        )
        return unfinished(job), job.execution_id


def lost_final_events(ctx: RuleContext, p: Pass) -> None:
    """A task the node finished whose final event never arrived gets one made from its Celery
    result — only what the stream really lost: the result has been final for the grace period
    and the party's stream has nothing left for our group to read or acknowledge.

    (A node writes its final event to the stream *before* Celery stores the result, so a final
    result with the event not yet applied usually means the listener is a moment behind.)
    """
    waiting = {task_request_id for _p, task_request_id in p.awaiting}
    for task_request_id in list(ctx.final_seen):
        if task_request_id not in waiting:  # the node's own event arrived, or the job ended
            del ctx.final_seen[task_request_id]
    backlog: dict[str, int | None] = {}
    for party, task_request_id in p.awaiting:
        got = celery_result(ctx.clients, ctx.counters, party, task_request_id)
        if got is None:
            continue
        state = got[0]
        if state not in celery_states.READY_STATES:
            continue
        first = ctx.final_seen.setdefault(task_request_id, p.mono)
        if p.mono - first < ctx.result_fallback_grace_s:
            continue
        if party not in backlog:
            backlog[party] = ctx.clients.stream_backlog(party, ctx.stream_group)
        if backlog[party] != 0:  # unread entries (or cannot tell): the event may be there
            continue
        ev = event_from_result(ctx, party, task_request_id)
        if ev is not None:
            log.warning(
                "%s: final status event lost; taken from the Celery result (%s)",
                task_request_id,
                state,
            )
            p.synthetic.append(ev)


def event_from_result(ctx: RuleContext, party: str, task_request_id: str) -> StatusEvent | None:
    """The final event a task's final Celery result stands for (None: not final, unreadable)."""
    got = celery_result(ctx.clients, ctx.counters, party, task_request_id)
    if got is None:
        return None
    state, value = got
    if state not in celery_states.READY_STATES:
        return None
    with ctx.db() as s:
        t = s.scalars(
            select(SecretflowTask).where(SecretflowTask.task_request_id == task_request_id)
        ).one()
        if state == celery_states.SUCCESS and isinstance(value, dict):
            ev = synthetic_event(t, TaskStatus.SUCCESS, ErrorType.INTERNAL, "")
            ev.data = EventData(
                stage=Stage.TASK_FINISHED,
                progress=1.0,
                result=value.get("result"),
                performance_metrics=value.get("performance_metrics"),
            )
            return ev
        if state == celery_states.REVOKED:
            return synthetic_event(t, TaskStatus.CANCELLED, ErrorType.REVOKED, "revoked")
        if isinstance(value, NodeTaskError) and isinstance(value.result.get("error"), dict):
            err = ErrorInfo.model_validate(value.result["error"])
            ev = synthetic_event(t, TaskStatus.FAILURE, err.type, err.message)
            ev.data.error = err
            return ev
        return synthetic_event(
            t,
            TaskStatus.FAILURE,
            ErrorType.INTERNAL,
            f"party {t.party}'s task failed: {describe(value)}",
        )
