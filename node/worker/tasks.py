"""Celery task layer: execute_task (SecretFlow jobs), hello, health."""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any, NoReturn

import redis
from celery.exceptions import Ignore, SoftTimeLimitExceeded
from pydantic import ValidationError

from node import heap
from node.contract import (
    MAX_DEADLINE_AHEAD_S,
    TASK_EXECUTE,
    TASK_HEALTH,
    TASK_HELLO,
    TASK_LIST_DATASETS,
    ErrorInfo,
    ErrorType,
    NodeTaskError,
    ResultStatus,
    Stage,
    TaskMetadata,
    TaskParams,
    TaskResult,
    TaskStatus,
    utcnow,
)
from node.contract import (
    task_request_id as request_id_of,
)
from node.contract.clients import redis_client
from node.jobtypes.spec import JobRefused, JobType, Prepared
from node.jobtypes.table import get_job, node_job_types
from node.launch import failures
from node.launch.child_spec import JobChild, JobSpec
from node.launch.jobprocess import SPARE
from node.launch.runner import Outcome, OutcomeStatus, busy_port, cancel_on_sigterm, run_job
from node.ops import refusals
from node.sessions.client import HostUnavailable, SessionJob, list_sessions, release_peers
from node.settings import NodeSettings, get_settings
from node.worker import housekeeping, replay
from node.worker.celery_app import app
from node.worker.notifier import StatusNotifier

log = logging.getLogger("partyline.worker")
# how long a refusing party's driver may take to release its peers (they wait for it in the SPU
# link's first exchange: a peer still checking a big table holds it up to its check's time)
RELEASE_TIMEOUT_S = 120.0

_redis: redis.Redis | None = None


def worker_redis(settings: NodeSettings) -> redis.Redis:
    """This pool process's one client of the party's Redis (made on first use)."""
    global _redis
    if _redis is None:
        _redis = redis_client(settings.broker_url, settings.redis_ca_file)
    return _redis


def preflight(task_request_id: str, params: TaskParams, settings: NodeSettings) -> JobType:
    """What a node refuses before it looks at the job itself; returns the job's type (its
    `prepare` checks the rest: node/jobtypes)."""
    sf = params.sf_init_config
    if sf.self_party != settings.party:
        raise JobRefused(
            f"self_party is {sf.self_party!r} but this node is {settings.party!r}; "
            "the task was sent to the wrong party's queue",
            ErrorType.WRONG_PARTY,
        )
    expected = request_id_of(params.execution_id, settings.party)
    if task_request_id != expected:
        raise JobRefused(
            f"task_request_id {task_request_id!r} should be {expected!r}", ErrorType.INVALID_PARAMS
        )
    strangers = [p for p in sf.parties if p != settings.party and p not in settings.allowed_peers]
    if strangers:
        raise JobRefused(
            f"party {', '.join(strangers)} is not among this node's allowed peers "
            f"({', '.join(settings.allowed_peers) or 'none'})",
            ErrorType.PEER_NOT_ALLOWED,
        )
    if params.deadline <= utcnow():
        raise JobRefused(
            f"deadline {params.deadline.isoformat()} has passed; not starting",
            ErrorType.DEADLINE_PASSED,
        )
    if (params.deadline - utcnow()).total_seconds() > MAX_DEADLINE_AHEAD_S:
        raise JobRefused(
            f"deadline {params.deadline.isoformat()} is more than "
            f"{MAX_DEADLINE_AHEAD_S // 86400} days ahead",
            ErrorType.INVALID_PARAMS,
        )
    job = get_job(params.task_type, node_job_types(settings))
    if job.needs_spu and params.spu_config is None:
        raise JobRefused(
            f"task type {params.task_type!r} needs spu_config", ErrorType.INVALID_PARAMS
        )
    return job


def _ids_from_raw(task_request_id: str, raw: Any) -> dict[str, str]:
    """Best-effort ids and task type of a task whose params may not even validate."""
    raw = raw if isinstance(raw, dict) else {}
    task_config = raw.get("task_config") if isinstance(raw.get("task_config"), dict) else {}
    return {
        "task_id": str(raw.get("task_id") or "unknown"),
        "subtask_id": str(raw.get("subtask_id") or "unknown"),
        "execution_id": str(
            raw.get("execution_id") or task_request_id.rpartition(".")[0] or "unknown"
        ),
        "task_type": str(task_config.get("task_type") or "unknown"),
    }


@app.task(name=TASK_EXECUTE, bind=True)
def execute_task(self, task_request_id: str, task_params: dict) -> dict:
    """A job from its task message to its result: refused before any SecretFlow work, or run
    in its child (cold or warm) and reported stage by stage."""
    settings = get_settings()
    client = worker_redis(settings)
    job = _TaskRun(task_request_id, task_params, settings, client)
    params = job.validate(task_params)
    if not replay.claim(client, task_request_id, params.deadline):
        # the same signed message again: no event, no result — the first run's stand
        refusals.refused(client, settings.party, "Replay", task_request_id)
        raise Ignore()
    with cancel_on_sigterm() as cancelled:
        return _execute(job, params, cancelled)


def _execute(job: _TaskRun, params: TaskParams, cancelled: threading.Event) -> dict:
    settings = job.settings
    job.notifier.emit(TaskStatus.RECEIVED, Stage.TASK_RECEIVED, progress=0.0)
    try:
        job_type = preflight(job.task_request_id, params, settings)
    except JobRefused as exc:
        job.refuse(exc.type, str(exc))
    if params.session is None:  # a cold job: its process imports SecretFlow during `prepare`
        _start_spare(settings)
    try:
        prepared = job_type.prepare(params, settings)
    except JobRefused as exc:  # its own checks: in a warm session the peers are released
        job.refuse(exc.type, str(exc), releasing=_releasable(params, job_type, settings))
    finally:
        heap.release()  # the table check's blocks and hashes: not kept while the job runs
    try:
        outcome = _run(job, params, prepared, cancelled)
    finally:
        prepared.clean_up(settings, job.ids["execution_id"])
        housekeeping.after_job(settings)
        if params.session is None:  # a cold job: the next one finds a job process ready
            SPARE.keep(settings)
        else:  # jobs run in warm sessions here: an idle cold job process only holds memory
            SPARE.discard()
    return job.report(outcome, prepared)


def _start_spare(settings: NodeSettings) -> None:
    try:
        SPARE.keep(settings)
    except OSError:  # the job starts its process itself later, and says why if it cannot
        log.warning("the spare job process could not be started ahead", exc_info=True)


def _releasable(params: TaskParams, job_type: JobType, settings: NodeSettings) -> TaskParams | None:
    """The params of a refused job whose peers this party can release (docs/architecture.md,
    "Warm sessions"): its job type can, and its warm session runs here, idle."""
    if params.session is None or not job_type.releases_peers:
        return None
    try:
        here = list_sessions(settings)
    except (HostUnavailable, OSError, ValueError):
        return None
    idle = any(s.get("id") == params.session.id and s.get("busy") is None for s in here)
    return params if idle else None


def open_child(params: TaskParams, settings: NodeSettings) -> JobChild | ErrorInfo:
    """The child that runs this job — a job in its warm session, or a cold job process (the
    spare) — or why there can be none now."""
    if params.session is not None:  # the session host checks the ports of a new session
        try:
            return SessionJob(settings)
        except HostUnavailable as exc:  # (restarting): its sessions are gone; a retry starts anew
            return ErrorInfo(type=ErrorType.SESSION_LOST, message=str(exc))
    busy = busy_port(params, settings)
    if busy is not None:  # a listener of an earlier job still holds it: say so, at once
        return failures.port_in_use(*busy)
    return SPARE.take(settings)


def _run(
    job: _TaskRun, params: TaskParams, prepared: Prepared, cancelled: threading.Event
) -> Outcome:
    """The job in its child, supervised until it ends or `cancelled` is set."""
    if cancelled.is_set():  # revoked while its table was checked: nothing started
        return Outcome(
            OutcomeStatus.CANCELLED,
            error=ErrorInfo(
                type=ErrorType.CANCELLED, message="task cancelled before its job began"
            ),
        )
    deadline_mono = time.monotonic() + (params.deadline - utcnow()).total_seconds()
    job.notifier.emit(TaskStatus.RUNNING, None, progress=0.05)
    try:
        return run_job(
            params,
            prepared.model_dump(mode="json"),
            job.settings,
            lambda: open_child(params, job.settings),
            on_stage=lambda stage, progress: job.notifier.emit(
                TaskStatus.PROGRESS, stage, progress=progress
            ),
            cancelled=cancelled,
            deadline_monotonic=deadline_mono,
        )
    except SoftTimeLimitExceeded:
        return Outcome.failed(
            ErrorInfo(type=ErrorType.TIME_LIMIT_EXCEEDED, message="Celery soft time limit exceeded")
        )


class _TaskRun:
    """One execute task's ids, its status notifier, and its endings (result or NodeTaskError)."""

    def __init__(
        self, task_request_id: str, raw: Any, settings: NodeSettings, client: redis.Redis
    ) -> None:
        self.settings = settings
        self.task_request_id = task_request_id
        self.started = utcnow()
        self.ids = _ids_from_raw(task_request_id, raw)
        self.notifier = StatusNotifier(
            client,
            task_request_id=task_request_id,
            party=settings.party,
            task_name=TASK_EXECUTE,
            worker=f"{settings.worker_name}/{socket.gethostname()}",
            task_id=self.ids["task_id"],
            subtask_id=self.ids["subtask_id"],
            execution_id=self.ids["execution_id"],
        )

    def validate(self, raw: dict) -> TaskParams:
        try:
            return TaskParams.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "task_params"
            self.notifier.emit(TaskStatus.RECEIVED, Stage.TASK_RECEIVED, progress=0.0)
            self.refuse(ErrorType.INVALID_PARAMS, f"{where}: {first['msg']}")

    def refuse(
        self, kind: ErrorType, message: str, *, releasing: TaskParams | None = None
    ) -> NoReturn:
        """The task refused, said at once; with `releasing` (a warm job's params) the session's
        driver then releases the peers waiting for this party, and the session stays."""
        err = ErrorInfo(
            type=kind,
            message=f"party {self.settings.party} refused the task: {message}",
            releases_session=releasing is not None,
        )
        self.notifier.emit(TaskStatus.FAILURE, Stage.TASK_FINISHED, error=err)
        if releasing is not None:
            self._release(releasing, err)
        raise NodeTaskError(err.message, self._error_result(err))

    def _release(self, params: TaskParams, err: ErrorInfo) -> None:
        job_dir = self.settings.state_dir / "jobs" / f"{params.execution_id}.{params.party}"
        job_dir.mkdir(parents=True, exist_ok=True)
        spec = JobSpec(
            params=params,
            prepared={},
            settings=self.settings.for_job_process(),
            log_path=str(job_dir / "job.log"),
            refused=err,
        )
        timeout = min(RELEASE_TIMEOUT_S, max(1.0, (params.deadline - utcnow()).total_seconds()))
        why = release_peers(self.settings, spec, timeout)
        if why is not None:  # the coordinator's timers end the peers' part
            log.warning("job %s: the peers were not released: %s", params.execution_id, why)

    def report(self, outcome: Outcome, prepared: Prepared) -> dict:
        """The task's result on success; on any other ending NodeTaskError with its cause."""
        if outcome.status is OutcomeStatus.SUCCESS:
            assert outcome.result is not None  # the job process sends its result with "success"
            return self._succeeded(outcome.result, prepared)
        assert outcome.error is not None  # every other outcome carries its cause
        cause = outcome.error
        err = ErrorInfo(
            type=cause.type,
            message=f"party {self.settings.party}: {cause.message}",
            details=cause.details,
        )
        status = (
            TaskStatus.CANCELLED
            if outcome.status is OutcomeStatus.CANCELLED
            else TaskStatus.FAILURE
        )
        self.notifier.emit(status, Stage.TASK_FINISHED, error=err)
        raise NodeTaskError(err.message, self._error_result(err))

    def _succeeded(self, result: dict, prepared: Prepared) -> dict:
        check = prepared.input_check or {}
        if "check_s" in check:  # the table check ran before the job process: its cost too
            metrics = result.setdefault("performance_metrics", {})
            metrics["input_check_s"] = check["check_s"]
            metrics["total_s"] = round(metrics.get("total_s", 0.0) + check["check_s"], 3)
        self.notifier.emit(
            TaskStatus.SUCCESS,
            Stage.TASK_FINISHED,
            progress=1.0,
            result=result["result"],
            performance_metrics=result.get("performance_metrics"),
        )
        return result

    def _error_result(self, err: ErrorInfo) -> dict:
        return TaskResult(
            status=ResultStatus.ERROR,
            error=err,
            task_metadata=TaskMetadata(
                **self.ids, party=self.settings.party, started_at=self.started,
                completed_at=utcnow(),
            ),
        ).model_dump(mode="json")  # fmt: skip


@app.task(name=TASK_HELLO)
def hello_task(name: str | None = None) -> dict:
    settings = get_settings()
    return {
        "message": f"hello{' ' + name if name else ''} from {settings.party}",
        "party": settings.party,
        "worker": settings.worker_name,
        "time": utcnow().isoformat(),
    }


@app.task(name=TASK_HEALTH)
def health_task() -> dict:
    from node.ops.health import run_checks

    return run_checks(get_settings()).as_dict()


@app.task(name=TASK_LIST_DATASETS)
def list_datasets_task() -> dict:
    from node.ops.health import list_datasets

    return {"party": get_settings().party, "datasets": list_datasets(get_settings())}
