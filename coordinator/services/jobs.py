"""The job service: submit, gang-schedule, fan out (all-or-nothing), cancel, retry, and the
timers of DESIGN §5 (start timeout, deadline, dead workers). Every DB write lives here or in
services/status.py; routes only call these methods.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import uuid
from collections.abc import Callable, Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from coordinator.db import transaction
from coordinator.intake import IntakeCounters, Refusal
from coordinator.merge import TERMINAL_JOB_STATES, JobState, PartyStatus
from coordinator.models import Job, SecretflowTask
from coordinator.params import per_party, psi_template
from coordinator.parties import PartyClients, PartyUnreachable
from coordinator.scheduling import QueuedJob, dispatchable
from coordinator.schemas import PSIJobCreate
from coordinator.services.status import (
    COORDINATOR_SOURCE,
    Applied,
    apply_events,
    record_task_result,
)
from coordinator.topology import JobPorts, PortPool, PortsExhausted, Topology
from node.contract import (
    HEARTBEAT_TTL_S,
    MAX_DEADLINE_AHEAD_S,
    MAX_RESULT_BYTES,
    TERMINAL_STATUSES,
    ErrorInfo,
    ErrorType,
    EventData,
    NodeTaskError,
    StatusEvent,
    TaskStatus,
    new_execution_id,
    task_request_id,
    utcnow,
)

log = logging.getLogger(__name__)

ACTIVE = (JobState.DISPATCHED, JobState.RUNNING)
SYNTHETIC_SEQ = 1_000_000_000  # coordinator-made events outrank every node event of the task
SPU_PORT_COOLDOWN_S = 60.0  # a party's SPU listener may linger after its job (teardown)
RESULT_FALLBACK_GRACE_S = 30.0


class JobError(Exception):
    """A request the service refuses; `status_code` is what the API answers."""

    def __init__(self, message: str, status_code: int = 409) -> None:
        super().__init__(message)
        self.status_code = status_code


def _aware(t: dt.datetime | None) -> dt.datetime | None:
    return t if t is None or t.tzinfo else t.replace(tzinfo=dt.UTC)


def new_job_id() -> str:
    return f"job-{uuid.uuid4().hex[:12]}"


class JobService:
    def __init__(
        self,
        *,
        topology: Topology,
        clients: PartyClients,
        sessions: sessionmaker[Session],
        start_timeout_s: float = 120.0,
        default_deadline_s: float = 6 * 3600.0,
        max_attempts: int = 2,
        on_change: Callable[[Iterable[str]], None] | None = None,
        port_cooldown_s: float = SPU_PORT_COOLDOWN_S,
        result_fallback_grace_s: float = RESULT_FALLBACK_GRACE_S,
        stream_group: str = "coordinator",
        counters: IntakeCounters | None = None,
    ) -> None:
        self.counters = counters or IntakeCounters()
        self.topology = topology
        self.clients = clients
        self.sessions = sessions
        self.start_timeout_s = start_timeout_s
        self.default_deadline_s = default_deadline_s
        self.max_attempts = max_attempts
        self.on_change = on_change or (lambda _ids: None)
        self.ports = PortPool(topology, cooldown_s=port_cooldown_s, rotate=True)
        self._dispatch_lock = threading.RLock()
        # jobs queued again whose previous attempt's tasks are still being revoked: not sent
        # before those revokes are out, so a worker cannot take the stale task first
        self._revoking: set[str] = set()
        self._revoking_lock = threading.Lock()
        self._unreachable_since: dict[str, float] = {}
        self.result_fallback_grace_s = result_fallback_grace_s
        self.stream_group = stream_group
        # task → when its Celery result was first seen final while its final event was missing
        self._final_seen: dict[str, float] = {}
        # best-effort follow-ups (Celery results) run off the listener's path
        from concurrent.futures import ThreadPoolExecutor

        self._background = ThreadPoolExecutor(max_workers=2, thread_name_prefix="results")
        self._restore_ports()

    # --- start-up -------------------------------------------------------------------------
    def _restore_ports(self) -> None:
        """Hold the ports of every attempt still running (after a coordinator restart)."""
        with transaction(self.sessions) as s:
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
                if assignment and job.execution_id not in self.ports.held:
                    try:
                        self.ports.hold(job.execution_id, assignment)
                    except (ValueError, KeyError) as exc:
                        log.warning("job %s: ports not restored: %s", job.id, exc)

    # --- submit ---------------------------------------------------------------------------
    def submit(self, request: PSIJobCreate) -> Job:
        """Validate against the registry, check every broker, store the job QUEUED, dispatch."""
        try:
            request.check_known(self.topology.names)
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
            self.clients.ping_all(sorted(request.parties))
        except PartyUnreachable as exc:
            raise JobError(f"{exc}; nothing was sent to any party", 503) from exc
        for party in sorted(request.parties):  # a job for a party that cannot run it: say so now
            why = self.clients.readiness(party)
            if why:
                raise JobError(f"{why}; nothing was sent to any party", 503)
        job = Job(
            id=new_job_id(),
            kind="psi",
            status=JobState.QUEUED,
            request=request.model_dump(mode="json"),
            parties={"names": sorted(request.parties)},
            attempt=0,
            max_attempts=self.max_attempts,
            deadline=request.deadline or now + dt.timedelta(seconds=self.default_deadline_s),
        )
        with transaction(self.sessions) as s:
            s.add(job)
        self.on_change([job.id])
        self.tick()
        return self.get(job.id)

    def get(self, job_id: str) -> Job:
        with self.sessions() as s:
            job = s.get(Job, job_id)
            if job is None:
                raise JobError(f"no job {job_id!r}", 404)
            _ = job.tasks  # load while the session is open
            return job

    # --- gang scheduling + fan-out --------------------------------------------------------
    def tick(self) -> list[str]:
        """Dispatch every queued job whose parties all have a free slot (FIFO)."""
        dispatched = []
        with self._dispatch_lock:
            with self.sessions() as s:
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
                if self._dispatch(job_id):
                    dispatched.append(job_id)
        return dispatched

    def _dispatch(self, job_id: str) -> bool:
        now = utcnow()
        with transaction(self.sessions) as s:
            job = s.get(Job, job_id)
            if job is None or job.status != JobState.QUEUED:
                return False
            parties = list(job.parties["names"])
            if _aware(job.deadline) and _aware(job.deadline) <= now:
                job.status, job.finished_at = JobState.TIMED_OUT, now
                job.error = "deadline passed while the job was queued"
                changed = True
            else:
                changed = False
        if changed:
            self.on_change([job_id])
            return False
        for party in parties:  # hold (stay QUEUED) while a party cannot run it; say why
            why = self.clients.readiness(party)
            if why:
                self._hold(job_id, why)
                return False
        execution_id = new_execution_id()
        try:
            ports = self.ports.acquire(execution_id, parties)
        except PortsExhausted as exc:
            log.warning("job %s waits: %s", job_id, exc)
            return False
        request = PSIJobCreate.model_validate(job.request)
        template = psi_template(
            job_id=job_id,
            execution_id=execution_id,
            request=request,
            endpoints=self.topology.endpoints(ports),
            deadline=_aware(job.deadline),
        )
        params = per_party(template)
        trids = {p: task_request_id(execution_id, p) for p in parties}
        with transaction(self.sessions) as s:
            job = s.get(Job, job_id)
            job.attempt += 1
            job.execution_id = execution_id
            job.status = JobState.DISPATCHED
            job.dispatched_at = now
            if job.error and job.error.startswith("waiting: "):  # no longer waiting
                job.error = job.error.partition(" | ")[2] or None
            job.finished_at = None
            job.result = None
            for p in parties:
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
                        params=params[p],
                    )
                )
        self.on_change([job_id])
        # all-or-nothing: every broker must answer before anything is sent …
        sent: list[str] = []
        try:
            self.clients.ping_all(parties)
            for p in parties:
                self.clients.send_execute(p, trids[p], params[p], expires_s=self.start_timeout_s)
                sent.append(p)
        except PartyUnreachable as exc:
            # … and what was sent before a broker failed is revoked at once
            for p in sent:
                self.clients.revoke(p, trids[p])
            self._fail_dispatch(job_id, execution_id, exc, sent)
            return False
        log.info("job %s attempt %s sent to %s", job_id, execution_id, ", ".join(parties))
        return True

    def _hold(self, job_id: str, why: str) -> None:
        """Keep a queued job waiting, with the reason on the job (shown until it is sent)."""
        reason = f"waiting: {why}"
        with transaction(self.sessions) as s:
            job = s.get(Job, job_id)
            if job is None or job.status != JobState.QUEUED:
                return
            previous = job.error or ""
            if previous.startswith("waiting: "):
                previous = previous.partition(" | ")[2]
            text = f"{reason} | {previous}" if previous else reason
            if job.error == text:
                return
            job.error = text
        log.info("job %s %s", job_id, reason)
        self.on_change([job_id])

    def _fail_dispatch(
        self, job_id: str, execution_id: str, exc: PartyUnreachable, sent: list[str]
    ) -> None:
        now = utcnow()
        with transaction(self.sessions) as s:
            job = s.get(Job, job_id)
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
            job.status = JobState.FAILED
            job.failed_party = exc.party
            job.error = f"{exc}; the tasks already sent were revoked"
            job.finished_at = now
        self.ports.release(execution_id)
        self.on_change([job_id])

    # --- events (from the listener) ---------------------------------------------------------
    def apply(self, events: list[StatusEvent]) -> Applied:
        """Apply a batch in one transaction; act on the outcome only after the commit."""
        marked: list[str] = []
        try:
            with transaction(self.sessions) as s:
                out = apply_events(s, events)
                with self._revoking_lock:  # marked before the commit makes them QUEUED for all
                    self._revoking.update(out.requeued)
                    marked = list(out.requeued)
        except BaseException:
            with self._revoking_lock:  # not committed: nothing to wait for
                self._revoking.difference_update(marked)
            raise
        self.after(out)
        for party, trid, event_id in out.refused:
            self.counters.refuse(party, Refusal.NOT_ITS_TASK, f"event {event_id}", f"task {trid}")
        return out

    def after(self, out: Applied) -> None:
        try:
            for party, trid in out.terminate:
                self.clients.revoke(party, trid)
        finally:
            with self._revoking_lock:
                self._revoking.difference_update(out.requeued)
        for party, trid in out.finished_tasks:
            self._background.submit(self._fetch_result, party, trid)
        for execution_id in set(out.released):
            self.ports.release(execution_id)
        if out.jobs_touched or out.jobs_changed:
            self.on_change(out.jobs_touched | out.jobs_changed)
        if out.requeued or out.released:
            self.tick()

    def close(self) -> None:
        self._background.shutdown(wait=True, cancel_futures=True)

    def _fetch_result(self, party: str, trid: str) -> None:
        try:
            self._record_result(party, trid)
        except Exception:
            log.exception("could not record the Celery result of %s", trid)

    def _celery_result(self, party: str, trid: str) -> tuple[str, object] | None:
        """A task's Celery result — unless it is over MAX_RESULT_BYTES (refused and counted,
        never loaded) or cannot be read (None)."""
        try:
            size = self.clients.result_bytes(party, trid)
            if size > MAX_RESULT_BYTES:
                self.counters.refuse(
                    party,
                    Refusal.RESULT_OVERSIZE,
                    f"result of {trid}",
                    f"{size} bytes > {MAX_RESULT_BYTES}",
                )
                return None
            return self.clients.celery_result(party, trid)
        except Exception as exc:
            log.debug("no celery result for %s: %s", trid, exc)
            return None

    def _record_result(self, party: str, trid: str) -> None:
        got = self._celery_result(party, trid)
        if got is None:
            return
        state, value = got
        if state == "SUCCESS" and isinstance(value, dict):
            result = value
        elif isinstance(value, NodeTaskError):
            result = value.result
        else:
            return
        with transaction(self.sessions) as s:
            job_id = record_task_result(s, trid, result)
        if job_id is not None:
            self.on_change([job_id])

    # --- cancel / retry -------------------------------------------------------------------
    def _stop_tasks(
        self, job_id: str, victims: list[tuple[str, str]], execution_id: str | None
    ) -> None:
        """After a job was ended in the database: revoke its unfinished tasks, free its ports."""
        for party, trid in victims:
            self.clients.revoke(party, trid)
        if execution_id:
            self.ports.release(execution_id)
        self.on_change([job_id])

    def cancel(self, job_id: str, reason: str = "cancelled by the user") -> Job:
        now = utcnow()
        with transaction(self.sessions) as s:
            job = s.get(Job, job_id, with_for_update=True)
            if job is None:
                raise JobError(f"no job {job_id!r}", 404)
            if job.status in TERMINAL_JOB_STATES:
                raise JobError(f"job {job_id} is already {job.status}", 409)
            job.status, job.error, job.finished_at = JobState.CANCELLED, reason, now
            victims, execution_id = _unfinished(job), job.execution_id
        self._stop_tasks(job_id, victims, execution_id)
        self.tick()
        return self.get(job_id)

    def retry(self, job_id: str) -> Job:
        """Run a finished, unsuccessful job again: a new attempt (execution_id) for every party."""
        with transaction(self.sessions) as s:
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
            if _aware(job.deadline) and _aware(job.deadline) <= now:
                job.deadline = now + dt.timedelta(seconds=self.default_deadline_s)
            job.status = JobState.QUEUED
            job.max_attempts = max(job.max_attempts, job.attempt + 1)
            job.error = job.failed_party = job.finished_at = None
        self.on_change([job_id])
        self.tick()
        return self.get(job_id)

    # --- timers + reconciliation ----------------------------------------------------------
    def _synthetic(
        self, t: SecretflowTask, status: TaskStatus, etype: ErrorType, msg: str
    ) -> StatusEvent:
        return StatusEvent(
            event_id=f"coord-{uuid.uuid4().hex}",
            seq=SYNTHETIC_SEQ + t.seq,
            task_request_id=t.celery_task_id,
            task_id=t.task_id,
            subtask_id=t.subtask_id,
            execution_id=t.execution_id,
            party=t.party,
            status=status,
            data=EventData(stage="task_finished", error=ErrorInfo(type=etype, message=msg)),
            worker_container=COORDINATOR_SOURCE,
        )

    def _party_alive(self, party: str, now_mono: float) -> tuple[bool | None, str]:
        """(alive?, why): None when it cannot be told yet."""
        try:
            hb = self.clients.heartbeat(party)
        except PartyUnreachable as exc:
            since = self._unreachable_since.setdefault(party, now_mono)
            if now_mono - since > HEARTBEAT_TTL_S:
                return False, str(exc)
            return None, ""
        except Exception as exc:  # redis errors are wrapped below
            since = self._unreachable_since.setdefault(party, now_mono)
            if now_mono - since > HEARTBEAT_TTL_S:
                return False, f"party {party}'s broker is unreachable: {exc}"
            return None, ""
        self._unreachable_since.pop(party, None)
        if hb is None:
            return False, (
                f"party {party}'s SecretFlow worker is gone (no heartbeat for "
                f"{HEARTBEAT_TTL_S} s): killed, crashed or offline"
            )
        return True, ""

    def reconcile(self) -> None:
        """One pass: deadlines, start timeouts, dead workers, lost events; then dispatch."""
        import time

        now, mono = utcnow(), time.monotonic()
        synthetic: list[StatusEvent] = []
        to_cancel_timed_out: list[str] = []
        fetch: list[tuple[str, str]] = []
        with self.sessions() as s:
            jobs = list(s.scalars(select(Job).where(Job.status.in_([JobState.QUEUED, *ACTIVE]))))
            alive: dict[str, tuple[bool | None, str]] = {}
            for job in jobs:
                if _aware(job.deadline) and _aware(job.deadline) <= now:
                    to_cancel_timed_out.append(job.id)
                    continue
                # a queued job may hold its previous attempt: a task of it still open whose
                # worker died is reported too, so the retry message names the true cause
                queued = job.status == JobState.QUEUED
                tasks = [t for t in job.tasks if t.execution_id == job.execution_id]
                age = (now - _aware(job.dispatched_at)).total_seconds() if job.dispatched_at else 0
                for t in tasks:
                    if t.status in TERMINAL_STATUSES:
                        continue
                    if t.party not in alive:
                        alive[t.party] = self._party_alive(t.party, mono)
                    ok, why = alive[t.party]
                    if ok is False and age > HEARTBEAT_TTL_S:
                        synthetic.append(
                            self._synthetic(t, TaskStatus.FAILURE, ErrorType.WORKER_LOST, why)
                        )
                    elif queued:
                        continue
                    elif t.status in ("PENDING", "RECEIVED") and age > self.start_timeout_s:
                        synthetic.append(
                            self._synthetic(
                                t,
                                TaskStatus.FAILURE,
                                ErrorType.START_TIMEOUT,
                                f"party {t.party} did not start within {self.start_timeout_s:.0f} s "
                                "(worker offline or busy?)",
                            )
                        )
                    else:
                        fetch.append((t.party, t.celery_task_id))
            # tasks left non-terminal under a finished job (revoked before they started …)
            stale = s.scalars(
                select(SecretflowTask)
                .join(Job, Job.id == SecretflowTask.job_id)
                .where(
                    Job.status.in_(list(TERMINAL_JOB_STATES)),
                    SecretflowTask.status.in_(
                        ["PENDING", "RECEIVED", "RUNNING", "PROGRESS", "RETRY"]
                    ),
                )
            )
            for t in stale:
                age = (now - _aware(t.created_at)).total_seconds()
                if age > 60:
                    synthetic.append(
                        self._synthetic(
                            t, TaskStatus.CANCELLED, ErrorType.REVOKED, "revoked by the coordinator"
                        )
                    )
        for job_id in to_cancel_timed_out:
            self._time_out(job_id)
        # lost events: a task the node finished whose final event never arrived
        synthetic.extend(self._lost_final_events(fetch, mono))
        if synthetic:
            self.apply(synthetic)
        with transaction(self.sessions) as s:
            for job in s.scalars(select(Job).where(Job.status.in_(list(ACTIVE)))):
                job.last_reconciled_at = now
        self.tick()

    def _lost_final_events(self, tasks: list[tuple[str, str]], mono: float) -> list[StatusEvent]:
        """Final events made from Celery results — only for what the stream really lost.

        A node writes its final event to the stream *before* Celery stores the result, so a
        final result with the event not yet applied usually means the listener is a moment
        behind. The result stands in for the event only when it has been final for the grace
        period and the party's stream has nothing left for our group to read or acknowledge.
        """
        out: list[StatusEvent] = []
        waiting = {trid for _p, trid in tasks}
        for trid in list(self._final_seen):
            if trid not in waiting:  # the node's own event arrived, or the job ended
                del self._final_seen[trid]
        backlog: dict[str, int | None] = {}
        for party, trid in tasks:
            got = self._celery_result(party, trid)
            if got is None:
                continue
            state = got[0]
            if state not in ("SUCCESS", "FAILURE", "REVOKED"):
                continue
            first = self._final_seen.setdefault(trid, mono)
            if mono - first < self.result_fallback_grace_s:
                continue
            if party not in backlog:
                backlog[party] = self.clients.stream_backlog(party, self.stream_group)
            if backlog[party] != 0:  # unread entries (or cannot tell): the event may be there
                continue
            ev = self._from_celery(party, trid)
            if ev is not None:
                log.warning(
                    "%s: final status event lost; taken from the Celery result (%s)", trid, state
                )
                out.append(ev)
        return out

    def _from_celery(self, party: str, trid: str) -> StatusEvent | None:
        got = self._celery_result(party, trid)
        if got is None:
            return None
        state, value = got
        if state not in ("SUCCESS", "FAILURE", "REVOKED"):
            return None
        with self.sessions() as s:
            t = s.scalars(select(SecretflowTask).where(SecretflowTask.celery_task_id == trid)).one()
            if state == "SUCCESS" and isinstance(value, dict):
                ev = self._synthetic(t, TaskStatus.SUCCESS, ErrorType.INTERNAL, "")
                ev.data = EventData(
                    stage="task_finished",
                    progress=1.0,
                    result=value.get("result"),
                    performance_metrics=value.get("performance_metrics"),
                )
                return ev
            if state == "REVOKED":
                return self._synthetic(t, TaskStatus.CANCELLED, ErrorType.REVOKED, "revoked")
            if isinstance(value, NodeTaskError) and isinstance(value.result.get("error"), dict):
                err = ErrorInfo.model_validate(value.result["error"])
                ev = self._synthetic(t, TaskStatus.FAILURE, err.type, err.message)
                ev.data.error = err
                return ev
            return self._synthetic(
                t,
                TaskStatus.FAILURE,
                ErrorType.INTERNAL,
                f"party {t.party}'s task failed: {type(value).__name__}: {value}",
            )

    def _time_out(self, job_id: str) -> None:
        now = utcnow()
        with transaction(self.sessions) as s:
            job = s.get(Job, job_id, with_for_update=True)
            if job is None or job.status in TERMINAL_JOB_STATES:
                return
            job.status, job.finished_at = JobState.TIMED_OUT, now
            job.error = f"deadline {_aware(job.deadline).isoformat()} passed"
            victims, execution_id = _unfinished(job), job.execution_id
        self._stop_tasks(job_id, victims, execution_id)


def _unfinished(job: Job) -> list[tuple[str, str]]:
    """(party, celery task id) of the current attempt's tasks that have not finished."""
    return [
        (t.party, t.celery_task_id)
        for t in job.tasks
        if t.execution_id == job.execution_id and t.status not in TERMINAL_STATUSES
    ]
