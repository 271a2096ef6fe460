"""What a node reports: status events on its stream, task results, worker heartbeats."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from node.contract.errors import ErrorInfo
from node.contract.names import TASK_EXECUTE, utcnow


class PerformanceMetrics(BaseModel):
    input_check_s: float = 0.0  # the streaming check of the input table (before the job)
    cluster_init_s: float = 0.0
    device_init_s: float = 0.0
    algorithm_s: float = 0.0
    teardown_s: float = 0.0
    total_s: float = 0.0
    # a warm session's job: the session, and which of its jobs this was (1: it started the
    # session and paid for sf.init and the SPU runtime); None / 0 for a cold job
    session_id: str | None = None
    session_job: int = 0


class TaskMetadata(BaseModel):
    task_id: str
    subtask_id: str
    execution_id: str
    party: str
    task_type: str
    started_at: dt.datetime
    completed_at: dt.datetime
    devices_used: list[str] = Field(default_factory=list)


class ResultStatus(StrEnum):
    """A task's result: the PSI's answer, or an error (a cancelled task is an error too)."""

    SUCCESS = "success"
    ERROR = "error"


class TaskResult(BaseModel):
    status: ResultStatus
    result: dict[str, Any] = Field(default_factory=dict)
    error: ErrorInfo | None = None
    performance_metrics: PerformanceMetrics = Field(default_factory=PerformanceMetrics)
    task_metadata: TaskMetadata


# --- status events ----------------------------------------------------------------------------
class TaskStatus(StrEnum):
    RECEIVED = "RECEIVED"
    RUNNING = "RUNNING"
    PROGRESS = "PROGRESS"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    RETRY = "RETRY"
    CANCELLED = "CANCELLED"


TERMINAL_STATUSES = frozenset({TaskStatus.SUCCESS, TaskStatus.FAILURE, TaskStatus.CANCELLED})


class Stage(StrEnum):
    TASK_RECEIVED = "task_received"
    CLUSTER_INITIALIZED = "cluster_initialized"
    DEVICES_READY = "devices_ready"
    ALGORITHM_RUNNING = "algorithm_running"
    ALGORITHM_DONE = "algorithm_done"
    TASK_FINISHED = "task_finished"


class EventData(BaseModel):
    stage: str | None = None
    progress: float | None = None
    result: dict[str, Any] | None = None
    error: ErrorInfo | None = None
    # on SUCCESS: the same timings as TaskResult.performance_metrics, so that a job's result is
    # complete the moment its last event is applied (no wait for the Celery result backend)
    performance_metrics: dict[str, Any] | None = None


class StatusEvent(BaseModel):
    event_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    seq: int
    task_request_id: str
    task_id: str
    subtask_id: str
    execution_id: str
    party: str
    status: TaskStatus
    timestamp: dt.datetime = Field(default_factory=utcnow)
    data: EventData = Field(default_factory=EventData)
    worker_container: str = ""
    task_name: str = TASK_EXECUTE

    def to_stream_fields(self) -> dict[str, str]:
        """Flat str→str mapping for XADD: one field holding the JSON event."""
        return {"event": self.model_dump_json()}

    @classmethod
    def from_stream_fields(cls, fields: Mapping[Any, Any]) -> StatusEvent:
        raw = fields.get("event") if "event" in fields else fields.get(b"event")
        if not isinstance(raw, str | bytes):
            raise ValueError("a status stream entry without an 'event' field")
        return cls.model_validate_json(raw)


class WorkerHeartbeat(BaseModel):
    """What a worker writes at HEARTBEAT_KEY every HEARTBEAT_INTERVAL_S (expires after TTL)."""

    party: str
    worker: str
    pid: int
    at: dt.datetime
    active: list[str] = Field(default_factory=list)
    # what this worker finds broken in its own stack, one line each ("Ray head: nothing listens
    # on 10.0.0.5:6379"); empty = ready. The coordinator holds new jobs of a party with problems.
    problems: list[str] = Field(default_factory=list)

    @classmethod
    def from_json(cls, raw: str | bytes) -> WorkerHeartbeat:
        return cls.model_validate_json(raw)
