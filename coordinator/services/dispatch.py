"""Sending one queued job (docs/architecture.md §3): hold it while a party is not ready, take its
ports, store one task per party, then fan out all-or-nothing — and free what an ended attempt
held (its ports, its warm session); at start-up, hold the ports of the attempts still running.
`JobService.tick` picks the jobs (gang scheduling); the `Dispatcher` sends them. It is given
what it uses, and calls nothing of the job service.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from coordinator.db import transaction
from coordinator.jobkinds.spec import JobKind
from coordinator.merge import TERMINAL_PARTY_STATUSES, JobState, PartyStatus, released
from coordinator.metrics import CoordinatorMetrics
from coordinator.models import Job, SecretflowTask
from coordinator.params import job_template, per_party
from coordinator.parties import PartyClients, PartyUnreachable
from coordinator.services import phases
from coordinator.services.attempts import ACTIVE, deadline_of, unfinished
from coordinator.services.retry_gate import RetryGate
from coordinator.services.sessions import SessionRegistry, SessionStarting, WarmSession
from coordinator.services.status import to_party_task
from coordinator.topology import JobPorts, PortPool, PortsExhausted, Topology
from node.contract import ErrorType, new_execution_id, task_request_id, utcnow

log = logging.getLogger(__name__)


def restore_ports(db: sessionmaker[Session], ports: PortPool) -> None:
    """Hold the ports of every attempt still running (after a coordinator restart): its fed
    port, and its SPU port when its kind has one."""
    with transaction(db) as s:
        for job in s.scalars(select(Job).where(Job.status.in_(list(ACTIVE)))):
            assignment = {
                t.party: jp
                for t in job.tasks
                if t.execution_id == job.execution_id and (jp := _ports_of(t)) is not None
            }
            if assignment and job.execution_id and job.execution_id not in ports.held:
                try:
                    ports.hold(job.execution_id, assignment)
                except (ValueError, KeyError) as exc:
                    log.warning("job %s: ports not restored: %s", job.id, exc)


def _ports_of(t: SecretflowTask) -> JobPorts | None:
    """The ports a party's task was sent with (None: its params name no fed address)."""
    try:
        fed = int(t.params["sf_init_config"]["cluster"][t.party]["address"].rsplit(":", 1)[1])
    except (KeyError, ValueError, TypeError, AttributeError, IndexError):
        return None
    spu = None
    if t.params.get("spu_config"):
        try:
            spu = next(
                int(n["address"].rsplit(":", 1)[1])
                for n in t.params["spu_config"]["cluster_def"]["nodes"]
                if n["party"] == t.party
            )
        except (KeyError, StopIteration, ValueError, TypeError, AttributeError, IndexError):
            return None
    return JobPorts(fed, spu)


@dataclass(frozen=True)
class _Queued:
    """What dispatch reads of a queued job."""

    kind: str
    parties: list[str]
    deadline: dt.datetime
    request: dict[str, Any]
    # a retry's silent parties, those whose task of the failed attempt never ended:
    # (parties, that attempt's execution id, its number)
    named: tuple[frozenset[str], str, int] | None


def _refused_only(tasks: list[SecretflowTask]) -> bool:
    """An attempt that failed only by a refusal before any work, its peers released (so far:
    every party that ended ended so)."""
    ended = [to_party_task(t) for t in tasks if PartyStatus(t.status) in TERMINAL_PARTY_STATUSES]
    failed = [t for t in ended if t.status == PartyStatus.FAILURE]
    return len(failed) == len(ended) and released(failed)


class Dispatcher:
    """Sends queued jobs as attempts, and frees what ended attempts held."""

    def __init__(
        self,
        *,
        db: sessionmaker[Session],
        clients: PartyClients,
        topology: Topology,
        ports: PortPool,
        warm: SessionRegistry | None,
        retry_gate: RetryGate,
        metrics: CoordinatorMetrics,
        start_timeout_s: float,
        on_change: Callable[[Iterable[str]], None],
        kinds: Mapping[str, JobKind],
    ) -> None:
        self.db, self.clients, self.topology = db, clients, topology
        self.ports, self.warm, self.retry_gate = ports, warm, retry_gate
        self.metrics, self.start_timeout_s, self.on_change = metrics, start_timeout_s, on_change
        self.kinds = kinds

    def release(self, execution_ids: Iterable[str], *, succeeded: bool | None = None) -> None:
        """Attempts that have ended: free their ports, and idle their warm sessions (a job that
        SUCCEEDED, or one refused before any work whose parties have all ended) or retire them
        (anything else). `succeeded=None`: read from the database. A refused attempt whose
        peers are still ending (released by the refusing party) keeps its session busy."""
        ids = set(execution_ids)
        if self.warm is not None and ids:
            in_session = self.warm.running(ids)
            keep: set[str] = set()
            waiting: set[str] = set()
            if in_session and succeeded is None:
                keep, waiting = self._session_outcomes(in_session)
            elif succeeded:
                keep = in_session
            for execution_id in in_session - waiting:
                self.warm.finished(execution_id, execution_id in keep)
        for execution_id in ids:
            self.ports.release(execution_id)  # a no-op for one that ran in a session

    def _session_outcomes(self, execution_ids: set[str]) -> tuple[set[str], set[str]]:
        """(attempts whose session stays, attempts whose session waits for its parties)."""
        keep: set[str] = set()
        waiting: set[str] = set()
        try:
            with self.db() as s:
                jobs = s.scalars(select(Job).where(Job.execution_id.in_(sorted(execution_ids))))
                for job in jobs:
                    attempt = str(job.execution_id)
                    tasks = [t for t in job.tasks if t.execution_id == attempt]
                    if job.status == JobState.SUCCEEDED:
                        keep.add(attempt)
                    elif job.status == JobState.FAILED and _refused_only(tasks):
                        done = all(PartyStatus(t.status) in TERMINAL_PARTY_STATUSES for t in tasks)
                        (keep if done else waiting).add(attempt)
        except Exception:  # cannot tell: those sessions are not used again
            log.exception("could not read how attempts %s ended", sorted(execution_ids))
            return set(), set()
        return keep, waiting

    def dispatch(self, job_id: str) -> bool:
        """Send one queued job as a new attempt; False when it stays queued (or timed out)."""
        now = utcnow()
        queued = self._queued(job_id, now)
        if queued is None or not self._all_ready(job_id, queued):
            return False
        execution_id = new_execution_id()
        kind = self.kinds[queued.kind]
        placed = self._place(
            job_id,
            execution_id,
            queued.parties,
            spu=kind.needs_spu,
            warmup=kind.warms_up,
            warm=kind.warm,
        )
        if placed is None:
            return False
        session, ports = placed
        try:
            template = job_template(
                kind=kind,
                job_id=job_id,
                execution_id=execution_id,
                request=kind.load(queued.request),
                endpoints=self.topology.endpoints(ports),
                deadline=queued.deadline,
                session=session.ref() if session else None,
            )
            params = per_party(template)  # the same session and ports at every party
            task_request_ids = {p: task_request_id(execution_id, p) for p in queued.parties}
            self._store_attempt(job_id, execution_id, params, task_request_ids, now)
        except BaseException:  # nothing was sent: neither the ports nor the session are kept
            self.release([execution_id], succeeded=False)
            raise
        self.on_change([job_id])
        if not self._fan_out(job_id, execution_id, params, task_request_ids):
            return False
        self.metrics.dispatched(session.mode if session else "cold")
        log.info(
            "job %s attempt %s sent to %s%s",
            job_id,
            execution_id,
            ", ".join(queued.parties),
            f" in warm session {session.id} (job {session.jobs})" if session else "",
        )
        return True

    def _queued(self, job_id: str, now: dt.datetime) -> _Queued | None:
        """The queued job as it stands; None when it is not queued, or its deadline passed while
        it was (then it is TIMED_OUT)."""
        with transaction(self.db) as s:
            job = s.get(Job, job_id)
            if job is None or job.status != JobState.QUEUED:
                return None
            # a retry waits for every party of the failed attempt that went silent (its task
            # unfinished: lost by its peers, e.g. PeerLost — with three parties or more, the
            # one that reported may be named while the lost one is not), not for those that
            # told their ending
            silent = frozenset(p for p, _ in unfinished(job))
            named = (
                (silent, job.execution_id, job.attempt)
                if job.execution_id and job.failed_party and silent  # (a cancel names none)
                else None
            )
            queued = _Queued(
                job.kind, list(job.parties["names"]), deadline_of(job), job.request, named
            )
            if queued.deadline > now:
                return queued
            phases.ended(
                job, JobState.TIMED_OUT, now, error="deadline passed while the job was queued"
            )
        self.metrics.dispatch_refused("deadline_passed")
        self.on_change([job_id])
        return None

    def _all_ready(self, job_id: str, queued: _Queued) -> bool:
        """Every party ready (and a retry's silent parties heard from); else the job is held,
        and says why."""
        named = queued.named
        for party in queued.parties:
            why = self.clients.readiness(party)
            if named and party in named[0]:  # (asked even when not ready: it notes the heartbeat)
                gate = self.retry_gate.why_not(self.clients, job_id, named[1], party, named[2])
                why = why or gate
            if why:
                self.metrics.dispatch_refused("party_not_ready")
                self._hold(job_id, why)
                return False
        return True

    def _place(
        self,
        job_id: str,
        execution_id: str,
        parties: list[str],
        *,
        spu: bool,
        warmup: bool,
        warm: bool = True,
    ) -> tuple[WarmSession | None, dict[str, JobPorts]] | None:
        """A warm session's ports when there is one for this job (a session of its parties,
        with an SPU device or without, as its kind needs), else ports of its own; None when a
        party's ranges are used up, or the session is busy with its warm-up (the job waits)."""
        try:
            take = self.warm.take if self.warm and warm else None
            session = take(execution_id, parties, spu=spu, warmup=warmup) if take else None
            ports = session.ports if session else self.ports.acquire(execution_id, parties)
        except SessionStarting as exc:
            self._hold(job_id, f"the warm session of {', '.join(parties)} is starting ({exc})")
            return None
        except PortsExhausted as exc:
            if self.warm:  # idle sessions holding that party's ports give them up (after cooldown)
                self.warm.evict_idle(exc.party)
            self.metrics.dispatch_refused("ports_exhausted")
            log.warning("job %s waits: %s", job_id, exc)
            return None
        return session, ports

    def _fan_out(
        self,
        job_id: str,
        execution_id: str,
        params: dict[str, dict],
        task_request_ids: dict[str, str],
    ) -> bool:
        """All or nothing: every broker must answer before anything is sent, and what was sent
        before a broker failed is revoked at once (the job FAILED naming that party)."""
        sent: list[str] = []
        try:
            self.clients.ping_all(list(params))
            for p in params:
                self.clients.send_execute(
                    p, task_request_ids[p], params[p], expires_s=self.start_timeout_s
                )
                sent.append(p)
        except PartyUnreachable as exc:
            for p in sent:
                self.clients.revoke(p, task_request_ids[p])
            self.metrics.dispatch_refused("broker_unreachable")
            self._fail(job_id, execution_id, exc, sent)
            return False
        return True

    def _store_attempt(
        self,
        job_id: str,
        execution_id: str,
        params: dict[str, dict],
        task_request_ids: dict[str, str],
        now: dt.datetime,
    ) -> None:
        """The job DISPATCHED as attempt `execution_id`, with one PENDING task per party."""
        with transaction(self.db) as s:
            job = s.get_one(Job, job_id)
            phases.dispatched(job, execution_id, now)
            for p, party_params in params.items():
                s.add(
                    SecretflowTask(
                        job_id=job_id,
                        task_id=job_id,
                        subtask_id=party_params["subtask_id"],
                        execution_id=execution_id,
                        party=p,
                        task_request_id=task_request_ids[p],
                        task_type=party_params["task_config"]["task_type"],
                        status=PartyStatus.PENDING,
                        params=party_params,
                    )
                )

    def _hold(self, job_id: str, why: str) -> None:
        """Keep a queued job waiting, with the reason on the job (shown until it is sent)."""
        with transaction(self.db) as s:
            job = s.get(Job, job_id)
            if job is None or job.status != JobState.QUEUED or not phases.waiting(job, why):
                return
        log.info("job %s waiting: %s", job_id, why)
        self.on_change([job_id])

    def _fail(self, job_id: str, execution_id: str, exc: PartyUnreachable, sent: list[str]) -> None:
        """A fan-out a broker refused: that party's task FAILURE (BrokerUnreachable), the others
        CANCELLED (Revoked), the job FAILED naming the party, its ports freed."""
        now = utcnow()
        with transaction(self.db) as s:
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
        self.release([execution_id], succeeded=False)  # and its session, if any, is retired
        self.on_change([job_id])
