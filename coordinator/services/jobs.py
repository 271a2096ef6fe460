"""The job service: submit, gang-schedule, cancel, retry, apply status events, and one pass of
the timers of docs/architecture.md §3. Its parts live beside it: dispatching one job (services/dispatch.py),
the reconciliation rules (services/rules.py), Celery results (services/results.py). Every DB
write lives in these modules or services/status.py; routes only call these methods.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from coordinator.db import is_outage, transaction
from coordinator.intake import IntakeCounters, Refusal
from coordinator.jobkinds.spec import JobKind, JobRequest
from coordinator.jobkinds.table import job_kinds
from coordinator.merge import TERMINAL_JOB_STATES, JobState
from coordinator.metrics import CoordinatorMetrics
from coordinator.models import Job
from coordinator.parties import PartyClients, PartyUnreachable
from coordinator.scheduling import QueuedJob, dispatchable
from coordinator.services import phases, rules
from coordinator.services.attempts import ACTIVE, deadline_of, unfinished
from coordinator.services.dispatch import Dispatcher, restore_ports
from coordinator.services.prewarm import Prewarmer, prewarm_sets
from coordinator.services.results import record_result
from coordinator.services.retry_gate import RetryGate
from coordinator.services.sessions import SessionRegistry
from coordinator.services.status import Applied, apply_events
from coordinator.topology import PortPool, Topology
from node.contract import MAX_DEADLINE_AHEAD_S, StatusEvent, utcnow

log = logging.getLogger(__name__)

SPU_PORT_COOLDOWN_S = 60.0  # a party's SPU listener may linger after its job (teardown)
RESULT_FALLBACK_GRACE_S = 30.0


class JobError(Exception):
    """A request the service refuses; `status_code` is what the API answers."""

    def __init__(self, message: str, status_code: int = 409) -> None:
        super().__init__(message)
        self.status_code = status_code


def new_job_id() -> str:
    return f"job-{uuid.uuid4().hex[:12]}"


class JobService:
    def __init__(
        self,
        *,
        topology: Topology,
        clients: PartyClients,
        db: sessionmaker[Session],
        start_timeout_s: float = 120.0,
        default_deadline_s: float = 6 * 3600.0,
        max_attempts: int = 2,
        on_change: Callable[[Iterable[str]], None] | None = None,
        port_cooldown_s: float = SPU_PORT_COOLDOWN_S,
        result_fallback_grace_s: float = RESULT_FALLBACK_GRACE_S,
        stream_group: str = "coordinator",
        counters: IntakeCounters | None = None,
        metrics: CoordinatorMetrics | None = None,
        warm_sessions: bool = False,
        session_idle_s: float = 600.0,
        sessions_per_party: int = 2,
        kinds: Mapping[str, JobKind] | None = None,
        prewarm: Iterable[str] = (),
    ) -> None:
        """`warm_sessions`: run a party set's jobs one after another in one warm federation
        session (services/sessions.py), which the nodes close after `session_idle_s` idle;
        `prewarm`: the party sets whose sessions are started ahead (services/prewarm.py)."""
        self.counters = counters or IntakeCounters()
        self.metrics = metrics or CoordinatorMetrics()
        self.topology = topology
        self.clients = clients
        self.db = db
        self.start_timeout_s = start_timeout_s
        self.default_deadline_s = default_deadline_s
        self.max_attempts = max_attempts
        self.on_change = on_change or (lambda _ids: None)
        self.kinds = kinds or job_kinds()
        ports = PortPool(topology, cooldown_s=port_cooldown_s, rotate=True)
        self.dispatcher = Dispatcher(
            db=db,
            clients=clients,
            topology=topology,
            ports=ports,
            warm=(
                SessionRegistry(ports, idle_timeout_s=session_idle_s, per_party=sessions_per_party)
                if warm_sessions
                else None
            ),
            retry_gate=RetryGate(),  # a retry waits for the party it failed on to be heard
            metrics=self.metrics,
            start_timeout_s=start_timeout_s,
            on_change=self.on_change,
            kinds=self.kinds,
        )
        self._dispatch_lock = threading.RLock()
        # jobs queued again whose previous attempt's tasks are still being revoked: not sent
        # before those revokes are out, so a worker cannot take the stale task first
        self._revoking: set[str] = set()
        self._revoking_lock = threading.Lock()
        # what the reconciliation rules read, and remember from one pass to the next
        self._rules = rules.RuleContext(
            db=db,
            clients=clients,
            counters=self.counters,
            start_timeout_s=start_timeout_s,
            result_fallback_grace_s=result_fallback_grace_s,
            stream_group=stream_group,
        )
        self.prewarmer = Prewarmer(self, prewarm_sets(prewarm, topology.names))
        # best-effort follow-ups (Celery results) run off the listener's path
        self._background = ThreadPoolExecutor(max_workers=2, thread_name_prefix="results")
        restore_ports(self.db, ports)  # of the attempts still running

    @property
    def ports(self) -> PortPool:
        return self.dispatcher.ports

    @property
    def warm(self) -> SessionRegistry | None:
        return self.dispatcher.warm

    # --- submit ---------------------------------------------------------------------------
    def kind_of(self, request: JobRequest) -> JobKind:
        """The kind whose request model `request` is."""
        for kind in self.kinds.values():
            if isinstance(request, kind.request):
                return kind
        raise JobError(f"no job kind takes a {type(request).__name__}", 422)

    def submit(self, request: JobRequest) -> Job:
        """Validate against the registry, check every broker, store the job QUEUED, dispatch."""
        kind = self.kind_of(request)
        try:
            request.check_known(self.topology.names)
            if kind.admit is not None:
                with self.db() as s:
                    request = kind.admit(request, s)
        except ValueError as exc:
            raise JobError(str(exc), 422) from exc
        now = utcnow()
        if request.deadline is not None and request.deadline <= now:
            raise JobError(f"deadline {request.deadline.isoformat()} has already passed", 422)
        if request.deadline is not None and (
            (request.deadline - now).total_seconds() > MAX_DEADLINE_AHEAD_S
        ):
            raise JobError(
                f"deadline {request.deadline.isoformat()} is more than "
                f"{MAX_DEADLINE_AHEAD_S // 86400} days ahead (the nodes refuse it)",
                422,
            )
        try:
            self.clients.ping_all(request.party_names())
        except PartyUnreachable as exc:
            raise JobError(f"{exc}; nothing was sent to any party", 503) from exc
        for party in request.party_names():  # a job for a party that cannot run it: say so now
            why = self.clients.readiness(party)
            if why:
                raise JobError(f"{why}; nothing was sent to any party", 503)
        job = Job(
            id=new_job_id(),
            kind=kind.name,
            status=JobState.QUEUED,
            request=request.model_dump(mode="json"),
            parties={"names": request.party_names()},
            attempt=0,
            max_attempts=self.max_attempts,
            deadline=request.deadline or now + dt.timedelta(seconds=self.default_deadline_s),
        )
        with transaction(self.db) as s:
            s.add(job)
        self.on_change([job.id])
        self.tick()
        return self.get(job.id)

    def get(self, job_id: str) -> Job:
        with self.db() as s:
            job = s.get(Job, job_id)
            if job is None:
                raise JobError(f"no job {job_id!r}", 404)
            _ = job.tasks  # load while the session is open
            return job

    # --- gang scheduling + fan-out --------------------------------------------------------
    def tick(self) -> list[str]:
        """Dispatch every queued job whose parties all have a free slot (FIFO)."""
        dispatched: list[str] = []
        with self._dispatch_lock:
            with self.db() as s:
                if not s.scalar(select(Job.id).where(Job.status == JobState.QUEUED).limit(1)):
                    return dispatched
                queued = list(
                    s.scalars(
                        select(Job).where(Job.status == JobState.QUEUED).order_by(Job.created_at)
                    )
                )
                busy: dict[str, int] = {}
                for job in s.scalars(select(Job).where(Job.status.in_(list(ACTIVE)))):
                    for p in job.parties.get("names", []):
                        busy[p] = busy.get(p, 0) + 1
                queue = [QueuedJob(j.id, tuple(j.parties.get("names", []))) for j in queued]
            with self._revoking_lock:
                queue = [q for q in queue if q.job_id not in self._revoking]
            for job_id in dispatchable(queue, busy, self.topology.slots):
                if self.dispatcher.dispatch(job_id):
                    dispatched.append(job_id)
        return dispatched

    # --- events (from the listener) ---------------------------------------------------------
    def apply(self, events: list[StatusEvent]) -> Applied:
        """Apply a batch in one transaction; act on the outcome only after the commit."""
        marked: list[str] = []
        # with warm sessions, no dispatch may see a slot freed by this commit before the
        # session of the attempt that freed it is idle again (or the next job would go cold)
        with self._dispatch_lock if self.warm is not None else contextlib.nullcontext():
            try:
                with transaction(self.db) as s:
                    out = apply_events(s, events)
                    with self._revoking_lock:  # marked before the commit: QUEUED for all
                        self._revoking.update(out.requeued)
                        marked = list(out.requeued)
            except BaseException:
                with self._revoking_lock:  # not committed: nothing to wait for
                    self._revoking.difference_update(marked)
                raise
            self.release_attempts(out.released)  # after() does it again: a no-op then
        self.metrics.count_events(out.outcomes)
        self.after(out)
        for party, task_request_id, event_id in out.refused:
            self.counters.refuse(
                party, Refusal.NOT_ITS_TASK, f"event {event_id}", f"task {task_request_id}"
            )
        return out

    def apply_each_job(self, events: list[StatusEvent]) -> None:
        """The timers' events: in one transaction, or — when the database refuses that for its
        data, not an outage — one transaction per job, so that one job's bad row can never
        stop the timers of every other job."""
        try:
            self.apply(events)
            return
        except Exception as exc:
            if is_outage(exc):
                raise
            log.error("the timers' events failed together; applying them job by job: %s", exc)
        by_job: dict[str, list[StatusEvent]] = {}
        for e in events:
            by_job.setdefault(e.task_id, []).append(e)
        for job_id, job_events in by_job.items():
            try:
                self.apply(job_events)
            except Exception as exc:
                if is_outage(exc):
                    raise
                log.exception("the timers' events for job %s cannot be stored", job_id)

    def after(self, out: Applied) -> None:
        try:
            for party, task_request_id in out.terminate:
                self.clients.revoke(party, task_request_id)
        finally:
            with self._revoking_lock:
                self._revoking.difference_update(out.requeued)
        for party, task_request_id in out.finished_tasks:
            self._background.submit(self._fetch_result, party, task_request_id)
        self.release_attempts(out.released)
        if out.jobs_touched or out.jobs_changed:
            self.on_change(out.jobs_touched | out.jobs_changed)
        if out.requeued or out.released:
            self.tick()

    def release_attempts(
        self, execution_ids: Iterable[str], *, succeeded: bool | None = None
    ) -> None:
        """Attempts that have ended: their ports and warm sessions freed (Dispatcher.release)."""
        self.dispatcher.release(execution_ids, succeeded=succeeded)

    def close(self) -> None:
        self._background.shutdown(wait=True, cancel_futures=True)

    def _fetch_result(self, party: str, task_request_id: str) -> None:
        try:
            job_id = record_result(self.db, self.clients, self.counters, party, task_request_id)
            if job_id is not None:
                self.on_change([job_id])
        except Exception:
            log.exception("could not record the Celery result of %s", task_request_id)

    # --- cancel / retry -------------------------------------------------------------------
    def _stop_tasks(
        self, job_id: str, victims: list[tuple[str, str]], execution_id: str | None
    ) -> None:
        """After a job was ended in the database: revoke its unfinished tasks, free its ports."""
        for party, task_request_id in victims:
            self.clients.revoke(party, task_request_id)
        if execution_id:
            self.release_attempts([execution_id], succeeded=False)
        self.on_change([job_id])

    def cancel(self, job_id: str, reason: str = "cancelled by the user") -> Job:
        now = utcnow()
        with transaction(self.db) as s:
            job = s.get(Job, job_id, with_for_update=True)
            if job is None:
                raise JobError(f"no job {job_id!r}", 404)
            if job.status in TERMINAL_JOB_STATES:
                raise JobError(f"job {job_id} is already {job.status}", 409)
            phases.ended(job, JobState.CANCELLED, now, error=reason)
            victims, execution_id = unfinished(job), job.execution_id
        self._stop_tasks(job_id, victims, execution_id)
        self.tick()
        return self.get(job_id)

    def retry(self, job_id: str) -> Job:
        """Run a finished, unsuccessful job again: a new attempt (execution_id) for every party."""
        with transaction(self.db) as s:
            job = s.get(Job, job_id, with_for_update=True)
            if job is None:
                raise JobError(f"no job {job_id!r}", 404)
            if job.status not in (JobState.FAILED, JobState.CANCELLED, JobState.TIMED_OUT):
                raise JobError(
                    f"job {job_id} is {job.status}; only a failed, cancelled or "
                    "timed-out job can be retried",
                    409,
                )
            now = utcnow()
            if deadline_of(job) <= now:
                job.deadline = now + dt.timedelta(seconds=self.default_deadline_s)
            phases.queued(job)
            job.max_attempts = max(job.max_attempts, job.attempt + 1)
            job.failed_party = None
        self.on_change([job_id])
        self.tick()
        return self.get(job_id)

    # --- reconciliation (the rules: services/rules.py) ------------------------------------
    def reconcile(self) -> None:
        """One pass: the rules (deadlines, dead workers, start timeouts, orphaned tasks, lost
        final events), acted on after the scan; then dispatch."""
        ctx = self._rules
        found = rules.Pass(now=utcnow(), mono=time.monotonic())
        rules.scan(ctx, found)
        for job_id in found.timed_out:
            stopped = rules.time_out(self.db, job_id)
            if stopped is not None:
                self._stop_tasks(job_id, *stopped)
        rules.lost_final_events(ctx, found)
        if found.synthetic:
            self.apply_each_job(found.synthetic)
        with transaction(self.db) as s:
            for job in s.scalars(select(Job).where(Job.status.in_(list(ACTIVE)))):
                job.last_reconciled_at = found.now
        self.tick()
        self.prewarmer.step()
