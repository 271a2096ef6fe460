"""Sending one queued job (docs/architecture.md §3): hold it while a party is not ready, take its ports, store
one task per party, then fan out all-or-nothing — and, at start-up, hold the ports of the
attempts still running. `JobService.tick` picks the jobs (gang scheduling); this sends them.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from coordinator.db import transaction
from coordinator.merge import JobState, PartyStatus
from coordinator.models import Job, SecretflowTask
from coordinator.params import per_party, psi_template
from coordinator.parties import PartyUnreachable
from coordinator.schemas import PSIJobCreate
from coordinator.services import phases
from coordinator.services.attempts import ACTIVE, deadline_of, unfinished
from coordinator.topology import JobPorts, PortPool, PortsExhausted
from node.contract import ErrorType, new_execution_id, task_request_id, utcnow

if TYPE_CHECKING:
    from coordinator.services.jobs import JobService

log = logging.getLogger(__name__)


def restore_ports(sessions: sessionmaker[Session], ports: PortPool) -> None:
    """Hold the ports of every attempt still running (after a coordinator restart)."""
    with transaction(sessions) as s:
        for job in s.scalars(select(Job).where(Job.status.in_(list(ACTIVE)))):
            assignment = {}
            for t in job.tasks:
                if t.execution_id != job.execution_id:
                    continue
                try:
                    sf = t.params["sf_init_config"]["cluster"][t.party]["address"]
                    spu = next(
                        n["address"]
                        for n in t.params["spu_config"]["cluster_def"]["nodes"]
                        if n["party"] == t.party
                    )
                    assignment[t.party] = JobPorts(
                        int(sf.rsplit(":", 1)[1]), int(spu.rsplit(":", 1)[1])
                    )
                except (KeyError, StopIteration, ValueError):
                    continue
            if assignment and job.execution_id and job.execution_id not in ports.held:
                try:
                    ports.hold(job.execution_id, assignment)
                except (ValueError, KeyError) as exc:
                    log.warning("job %s: ports not restored: %s", job.id, exc)


def dispatch_job(svc: JobService, job_id: str) -> bool:
    """Send one queued job as a new attempt; False when it stays queued (or timed out)."""
    now = utcnow()
    with transaction(svc.sessions) as s:
        job = s.get(Job, job_id)
        if job is None or job.status != JobState.QUEUED:
            return False
        parties = list(job.parties["names"])
        deadline = deadline_of(job)
        # a retry waits for the party its failed attempt named when that party went silent
        # (its task unfinished: blamed by a peer, e.g. PeerLost), not when it told its failure
        silent = {p for p, _ in unfinished(job)}
        named = (
            (job.failed_party, job.execution_id, job.attempt)
            if job.execution_id and job.failed_party in silent
            else None
        )
        if deadline <= now:
            phases.ended(
                job, JobState.TIMED_OUT, now, error="deadline passed while the job was queued"
            )
            changed = True
        else:
            changed = False
    if changed:
        svc.metrics.dispatch_refused("deadline_passed")
        svc.on_change([job_id])
        return False
    for party in parties:  # hold (stay QUEUED) while a party cannot run it; say why
        why = svc.clients.readiness(party)
        if named and named[0] == party:  # (asked even when not ready: it notes the heartbeat)
            gate = svc.retry_gate.why_not(svc.clients, job_id, named[1], party, named[2])
            why = why or gate
        if why:
            svc.metrics.dispatch_refused("party_not_ready")
            hold_job(svc, job_id, why)
            return False
    execution_id = new_execution_id()
    try:  # a warm session's ports when there is one for this job, else ports of its own
        session = svc.warm.take(execution_id, parties) if svc.warm else None
        ports = session.ports if session else svc.ports.acquire(execution_id, parties)
    except PortsExhausted as exc:
        if svc.warm:  # idle sessions holding that party's ports give them up (after cooldown)
            svc.warm.evict_idle(exc.party)
        svc.metrics.dispatch_refused("ports_exhausted")
        log.warning("job %s waits: %s", job_id, exc)
        return False
    try:
        template = psi_template(
            job_id=job_id,
            execution_id=execution_id,
            request=PSIJobCreate.model_validate(job.request),
            endpoints=svc.topology.endpoints(ports),
            deadline=deadline,
            session=session.ref() if session else None,
        )
        params = per_party(template)  # the same session and ports at every party
        trids = {p: task_request_id(execution_id, p) for p in parties}
        store_attempt(svc, job_id, execution_id, params, trids, now)
    except BaseException:  # nothing was sent: neither the ports nor the session are kept
        svc.release_attempts([execution_id], succeeded=False)
        raise
    svc.on_change([job_id])
    # all-or-nothing: every broker must answer before anything is sent …
    sent: list[str] = []
    try:
        svc.clients.ping_all(parties)
        for p in parties:
            svc.clients.send_execute(p, trids[p], params[p], expires_s=svc.start_timeout_s)
            sent.append(p)
    except PartyUnreachable as exc:
        # … and what was sent before a broker failed is revoked at once
        for p in sent:
            svc.clients.revoke(p, trids[p])
        svc.metrics.dispatch_refused("broker_unreachable")
        fail_dispatch(svc, job_id, execution_id, exc, sent)
        return False
    svc.metrics.dispatched(session.mode if session else "cold")
    log.info(
        "job %s attempt %s sent to %s%s",
        job_id,
        execution_id,
        ", ".join(parties),
        f" in warm session {session.id} (job {session.jobs})" if session else "",
    )
    return True


def store_attempt(
    svc: JobService,
    job_id: str,
    execution_id: str,
    params: dict[str, dict],
    trids: dict[str, str],
    now: dt.datetime,
) -> None:
    """The job DISPATCHED as attempt `execution_id`, with one PENDING task per party."""
    with transaction(svc.sessions) as s:
        job = s.get_one(Job, job_id)
        phases.dispatched(job, execution_id, now)
        for p, party_params in params.items():
            s.add(
                SecretflowTask(
                    job_id=job_id,
                    task_id=job_id,
                    subtask_id="psi",
                    execution_id=execution_id,
                    party=p,
                    celery_task_id=trids[p],
                    task_type="psi",
                    status=PartyStatus.PENDING,
                    params=party_params,
                )
            )


def hold_job(svc: JobService, job_id: str, why: str) -> None:
    """Keep a queued job waiting, with the reason on the job (shown until it is sent)."""
    with transaction(svc.sessions) as s:
        job = s.get(Job, job_id)
        if job is None or job.status != JobState.QUEUED or not phases.waiting(job, why):
            return
    log.info("job %s waiting: %s", job_id, why)
    svc.on_change([job_id])


def fail_dispatch(
    svc: JobService, job_id: str, execution_id: str, exc: PartyUnreachable, sent: list[str]
) -> None:
    """A fan-out a broker refused: that party's task FAILURE (BrokerUnreachable), the others
    CANCELLED (Revoked), the job FAILED naming the party, its ports freed."""
    now = utcnow()
    with transaction(svc.sessions) as s:
        job = s.get_one(Job, job_id)
        for t in job.tasks:
            if t.execution_id != execution_id:
                continue
            if t.party == exc.party:
                t.status = PartyStatus.FAILURE
                t.error = {"type": ErrorType.BROKER_UNREACHABLE.value, "message": str(exc)}
            else:
                t.status = PartyStatus.CANCELLED
                what = "revoked" if t.party in sent else "not sent"
                t.error = {"type": ErrorType.REVOKED.value, "message": f"{what}: {exc}"}
            t.finished_at = now
        phases.ended(
            job,
            JobState.FAILED,
            now,
            error=f"{exc}; the tasks already sent were revoked",
            failed_party=exc.party,
        )
    svc.release_attempts([execution_id], succeeded=False)  # and its session, if any, is retired
    svc.on_change([job_id])
