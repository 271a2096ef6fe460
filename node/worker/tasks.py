"""Celery task layer: execute_task (SecretFlow jobs), hello, health."""

from __future__ import annotations

import contextlib
import datetime as dt
import shutil
import signal
import socket
import threading
import time
from typing import Any

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
from node.contract import clients as contract_clients
from node.contract import (
    task_request_id as make_trid,
)
from node.dataroot.paths import release_output
from node.jobtypes.table import JobRefused, get_job
from node.settings import NodeSettings, get_settings
from node.worker import replay
from node.worker.celery_app import app
from node.worker.notifier import StatusNotifier

_redis: redis.Redis | None = None


def redis_client(settings: NodeSettings) -> redis.Redis:
    global _redis
    if _redis is None:
        _redis = contract_clients.redis_client(settings.broker_url, settings.redis_ca_file)
    return _redis


def preflight(task_request_id: str, params: TaskParams, settings: NodeSettings) -> dict[str, Any]:
    """Everything a node refuses before any SecretFlow work; returns the job's prepared config."""
    sf = params.sf_init_config
    if sf.self_party != settings.party:
        raise JobRefused(
            f"self_party is {sf.self_party!r} but this node is {settings.party!r}; "
            "the task was sent to the wrong party's queue",
            ErrorType.WRONG_PARTY,
        )
    expected = make_trid(params.execution_id, settings.party)
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
    job = get_job(params.task_type)
    if job.needs_spu and params.spu_config is None:
        raise JobRefused(
            f"task type {params.task_type!r} needs spu_config", ErrorType.INVALID_PARAMS
        )
    return job.prepare(params, settings)


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


def _error_result(ids: dict[str, str], party: str, started: dt.datetime, err: ErrorInfo) -> dict:
    return TaskResult(
        status=ResultStatus.ERROR,
        error=err,
        task_metadata=TaskMetadata(**ids, party=party, started_at=started, completed_at=utcnow()),
    ).model_dump(mode="json")


@app.task(name=TASK_EXECUTE, bind=True)
def execute_task(self, task_request_id: str, task_params: dict) -> dict:
    settings = get_settings()
    client = redis_client(settings)
    started = utcnow()
    ids = _ids_from_raw(task_request_id, task_params)
    notifier = StatusNotifier(
        client,
        task_request_id=task_request_id,
        party=settings.party,
        task_name=TASK_EXECUTE,
        worker=f"{settings.worker_name}/{socket.gethostname()}",
        task_id=ids["task_id"],
        subtask_id=ids["subtask_id"],
        execution_id=ids["execution_id"],
    )

    def refuse(kind: ErrorType, message: str):
        err = ErrorInfo(type=kind, message=f"party {settings.party} refused the task: {message}")
        result = _error_result(ids, settings.party, started, err)
        notifier.emit(TaskStatus.FAILURE, Stage.TASK_FINISHED, error=err)
        raise NodeTaskError(err.message, result)

    try:
        params = TaskParams.model_validate(task_params)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "task_params"
        notifier.emit(TaskStatus.RECEIVED, Stage.TASK_RECEIVED, progress=0.0)
        refuse(ErrorType.INVALID_PARAMS, f"{where}: {first['msg']}")
    if not replay.claim(client, task_request_id, params.deadline):
        # the same signed message again: no event, no result — the first run's stand
        replay.refused(client, settings.party, "Replay", task_request_id)
        raise Ignore()
    notifier.emit(TaskStatus.RECEIVED, Stage.TASK_RECEIVED, progress=0.0)
    try:
        prepared = preflight(task_request_id, params, settings)
    except JobRefused as exc:
        refuse(exc.type, str(exc))
    finally:
        heap.release()  # the table check's blocks and hashes: not kept while the job runs

    from node.launch import runner

    cancelled = threading.Event()
    previous = signal.getsignal(signal.SIGTERM)
    with contextlib.suppress(ValueError):  # only possible in the main thread (prefork pool)
        signal.signal(signal.SIGTERM, lambda *_: cancelled.set())
    deadline_mono = time.monotonic() + (params.deadline - utcnow()).total_seconds()
    notifier.emit(TaskStatus.RUNNING, None, progress=0.05)
    try:
        outcome = runner.run_job(
            params,
            prepared,
            settings,
            on_stage=lambda stage, progress: notifier.emit(
                TaskStatus.PROGRESS, stage, progress=progress
            ),
            cancelled=cancelled,
            deadline_monotonic=deadline_mono,
        )
    except SoftTimeLimitExceeded:
        outcome = runner.Outcome(
            runner.OutcomeStatus.ERROR,
            error=ErrorInfo(
                type=ErrorType.TIME_LIMIT_EXCEEDED, message="Celery soft time limit exceeded"
            ),
        )
    finally:
        with contextlib.suppress(ValueError):
            signal.signal(signal.SIGTERM, previous)
        if prepared.get("work_dir"):  # key-only copies, the PSI's answer: never kept
            shutil.rmtree(prepared["work_dir"], ignore_errors=True)
        if prepared.get("output_claim"):  # renamed into place, or never will be by this job
            release_output(settings.data_root, tuple(prepared["output_claim"]), ids["execution_id"])
        from node.worker import housekeeping

        housekeeping.after_job(settings)
        if params.session is None:  # a cold job: the next one finds a job process ready
            runner.ensure_spare(settings)
        else:  # jobs run in warm sessions here: an idle cold job process only holds memory
            runner.discard_spare()

    if outcome.status is runner.OutcomeStatus.SUCCESS:
        assert outcome.result is not None  # the job process sends its result with "success"
        result = outcome.result
        check = prepared.get("input_check") or {}
        if "check_s" in check:  # the table check ran before the job process: its cost too
            metrics = result.setdefault("performance_metrics", {})
            metrics["input_check_s"] = check["check_s"]
            metrics["total_s"] = round(metrics.get("total_s", 0.0) + check["check_s"], 3)
        notifier.emit(
            TaskStatus.SUCCESS,
            Stage.TASK_FINISHED,
            progress=1.0,
            result=result["result"],
            performance_metrics=result.get("performance_metrics"),
        )
        return result
    assert outcome.error is not None  # every other outcome carries its cause
    err = outcome.error
    err = ErrorInfo(
        type=err.type, message=f"party {settings.party}: {err.message}", details=err.details
    )
    result = _error_result(ids, settings.party, started, err)
    if outcome.status is runner.OutcomeStatus.CANCELLED:
        notifier.emit(TaskStatus.CANCELLED, Stage.TASK_FINISHED, error=err)
    else:
        notifier.emit(TaskStatus.FAILURE, Stage.TASK_FINISHED, error=err)
    raise NodeTaskError(err.message, result)


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
