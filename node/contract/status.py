"""What a node reports: status events on its stream, task results, worker heartbeats."""

from __future__ import annotations

import datetime as dt
import math
import uuid
from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, Field, StringConstraints

from node.contract.errors import ErrorInfo
from node.contract.names import ID_RE, PARTY_RE, TASK_EXECUTE, utcnow

# --- what a stored status event may hold ----------------------------------------------------
# The coordinator stores events in columns of fixed size (coordinator/models.py): a number or a
# string outside them would fail the insert — and with it every other event of the transaction.
# So the contract itself bounds every field; an entry outside is refused as Malformed.
SEQ_MAX = 2**31 - 1  # a 32-bit Integer column (PostgreSQL)
# a node's own seqs stay below this; the coordinator's own events (timers, fallbacks) use
# COORDINATOR_SEQ_BASE + the task's seq, so they outrank every node event and still fit SEQ_MAX
COORDINATOR_SEQ_BASE = 1_000_000_000
NODE_SEQ_MAX = COORDINATOR_SEQ_BASE - 1
ID_MAX = 64  # task_id, subtask_id, execution_id, event_id columns
TASK_REQUEST_ID_MAX = 128
STAGE_MAX = 32
LABEL_MAX = 256  # worker_container, task_name (logged, not stored in a column)
JSON_INT_MAX = 2**63 - 1  # integers inside `data`
_EVENT_ID_RE = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


def _storable_text(v: str) -> str:
    """A string every database stores: UTF-8 encodable (no lone surrogates), no NUL."""
    if "\x00" in v:
        raise ValueError("contains a NUL character")
    v.encode("utf-8")  # UnicodeEncodeError is a ValueError
    return v


def _finite_json(v: Any, depth: int = 0) -> Any:
    """A JSON value every database's JSON column takes: finite numbers, storable strings,
    nesting at most 32 deep."""
    if depth > 32:
        raise ValueError("nested more than 32 deep")
    if isinstance(v, dict):
        for k, item in v.items():
            _storable_text(k)
            _finite_json(item, depth + 1)
    elif isinstance(v, list):
        for item in v:
            _finite_json(item, depth + 1)
    elif isinstance(v, str):
        _storable_text(v)
    elif isinstance(v, float) and not math.isfinite(v):
        raise ValueError("a number that is not finite")
    elif isinstance(v, int) and not -JSON_INT_MAX <= v <= JSON_INT_MAX:
        raise ValueError("an integer beyond 64 bits")
    elif v is not None and not isinstance(v, bool | int | float):
        raise ValueError(f"not a JSON value: {type(v).__name__}")
    return v


def _progress(v: float | None) -> float | None:
    if v is not None and not (math.isfinite(v) and 0.0 <= v <= 1.0):
        raise ValueError("progress must be a finite number in [0, 1]")
    return v


def _utc(v: dt.datetime) -> dt.datetime:
    if v.tzinfo is None:
        raise ValueError("timestamp must carry a time zone")
    try:
        return v.astimezone(dt.UTC)
    except OverflowError:
        raise ValueError("timestamp out of range") from None


Text = Annotated[str, AfterValidator(_storable_text)]
Ident = Annotated[str, StringConstraints(pattern=f"^(?:{ID_RE.pattern})$", max_length=ID_MAX)]
EventId = Annotated[str, StringConstraints(pattern=_EVENT_ID_RE, max_length=ID_MAX)]
TaskRequestId = Annotated[
    str, StringConstraints(pattern=f"^(?:{ID_RE.pattern})$", max_length=TASK_REQUEST_ID_MAX)
]
PartyName = Annotated[str, StringConstraints(pattern=f"^(?:{PARTY_RE.pattern})$")]
StoredJson = Annotated[dict[str, Any] | None, AfterValidator(_finite_json)]


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
    stage: Annotated[Text, Field(max_length=STAGE_MAX)] | None = None
    progress: Annotated[float | None, AfterValidator(_progress)] = None
    result: StoredJson = None
    error: ErrorInfo | None = None
    # on SUCCESS: the same timings as TaskResult.performance_metrics, so that a job's result is
    # complete the moment its last event is applied (no wait for the Celery result backend)
    performance_metrics: StoredJson = None


class StatusEvent(BaseModel):
    """One event of a task. Every field is bounded to what the coordinator stores (above)."""

    event_id: EventId = Field(default_factory=lambda: uuid.uuid4().hex)
    seq: int = Field(ge=1, le=SEQ_MAX)
    task_request_id: TaskRequestId
    task_id: Ident
    subtask_id: Ident
    execution_id: Ident
    party: PartyName
    status: TaskStatus
    timestamp: Annotated[dt.datetime, AfterValidator(_utc)] = Field(default_factory=utcnow)
    data: EventData = Field(default_factory=EventData)
    worker_container: Annotated[Text, Field(max_length=LABEL_MAX)] = ""
    task_name: Annotated[Text, Field(max_length=LABEL_MAX)] = TASK_EXECUTE

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

    party: PartyName
    worker: Annotated[Text, Field(max_length=LABEL_MAX)]
    pid: int = Field(ge=0, le=2**31 - 1)
    at: dt.datetime
    active: list[TaskRequestId] = Field(default_factory=list, max_length=256)
    # what this worker finds broken in its own stack, one line each ("Ray head: nothing listens
    # on 10.0.0.5:6379"); empty = ready. The coordinator holds new jobs of a party with problems.
    problems: list[Annotated[Text, Field(max_length=1000)]] = Field(
        default_factory=list, max_length=32
    )

    @classmethod
    def from_json(cls, raw: str | bytes) -> WorkerHeartbeat:
        return cls.model_validate_json(raw)
