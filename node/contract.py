"""The wire contract between the coordinator and every node (DESIGN §4).

Both sides import this module; it must stay light: pydantic only — no secretflow, celery or ray.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# --- queues, streams, task names --------------------------------------------------------------
SECRETFLOW_QUEUE = "secretflow_queue"
DEFAULT_QUEUE = "default"
WEB_QUEUE = "web_queue"
QUEUES = (SECRETFLOW_QUEUE, DEFAULT_QUEUE, WEB_QUEUE)

STATUS_STREAM = "task_status_stream"
STATUS_CHANNEL = "task_status_events"

TASK_EXECUTE = "tasks.secretflow.execute_task"
TASK_HELLO = "tasks.secretflow.hello.hello_task"
TASK_HEALTH = "tasks.node.health"
TASK_LIST_DATASETS = "tasks.node.list_datasets"

TASK_QUEUES = {
    TASK_EXECUTE: SECRETFLOW_QUEUE,
    TASK_HELLO: WEB_QUEUE,
    TASK_HEALTH: WEB_QUEUE,
    TASK_LIST_DATASETS: WEB_QUEUE,
}

# each worker's liveness, refreshed in the party's own Redis: the coordinator watches "sf",
# `python -m node health` reads both (it cannot send a task: only the coordinator signs tasks)
WORKER_ROLES = ("sf", "web")
HEARTBEAT_KEY = "node_heartbeat:{role}"
HEARTBEAT_INTERVAL_S = 5
HEARTBEAT_TTL_S = 15
# how far ahead a task's deadline may be: the node refuses a later one (and the coordinator
# never sends one), so its record of executed task ids (node.replay) can expire safely
MAX_DEADLINE_AHEAD_S = 7 * 24 * 3600

PARTY_RE = re.compile(r"[a-z][a-z0-9_-]{0,31}")  # always used with fullmatch
ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")  # always used with fullmatch


def task_request_id(execution_id: str, party: str) -> str:
    """Celery task id of one party's task in one attempt."""
    return f"{execution_id}.{party}"


def new_execution_id() -> str:
    return f"exe-{uuid.uuid4().hex[:16]}"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# --- PSI protocols ----------------------------------------------------------------------------
PSI_PROTOCOLS = ("PROTOCOL_RR22", "PROTOCOL_ECDH", "PROTOCOL_KKRT")
_PROTOCOL_ALIASES = {
    "RR22": "PROTOCOL_RR22",
    "RR22_FAST": "PROTOCOL_RR22",
    "RR22_FAST_PSI_2PC": "PROTOCOL_RR22",
    "ECDH": "PROTOCOL_ECDH",
    "ECDH_PSI_2PC": "PROTOCOL_ECDH",
    "KKRT": "PROTOCOL_KKRT",
    "KKRT_PSI_2PC": "PROTOCOL_KKRT",
}


def normalize_psi_protocol(name: str) -> str:
    """Map any accepted spelling (PROTOCOL_RR22, RR22, KKRT_PSI_2PC, …) to SPU's name."""
    key = str(name).strip().upper()
    if key in PSI_PROTOCOLS:
        return key
    if key in _PROTOCOL_ALIASES:
        return _PROTOCOL_ALIASES[key]
    accepted = sorted(set(PSI_PROTOCOLS) | set(_PROTOCOL_ALIASES))
    raise ValueError(f"unknown PSI protocol {name!r}; accepted: {', '.join(accepted)}")


# --- task params ------------------------------------------------------------------------------
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _check_address(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not (0 < int(port) < 65536):
        raise ValueError(f"address must be HOST:PORT, got {value!r}")
    return value


class PartyAddress(_Strict):
    address: str

    _addr = field_validator("address")(classmethod(lambda cls, v: _check_address(v)))


class SFInitConfig(_Strict):
    mode: Literal["production"] = "production"
    parties: list[str] = Field(min_length=2)
    self_party: str
    cluster: dict[str, PartyAddress]
    cross_silo_comm_backend: Literal["grpc"] = "grpc"

    @model_validator(mode="after")
    def _consistent(self) -> SFInitConfig:
        for p in self.parties:
            if not PARTY_RE.fullmatch(p):
                raise ValueError(f"sf_init_config.parties: invalid party name {p!r}")
        if len(set(self.parties)) != len(self.parties):
            raise ValueError("sf_init_config.parties: duplicate party")
        if self.self_party not in self.parties:
            raise ValueError(f"sf_init_config.self_party {self.self_party!r} is not in parties")
        if set(self.cluster) != set(self.parties):
            raise ValueError("sf_init_config.cluster must name exactly the parties")
        return self


class SPUNode(_Strict):
    party: str
    address: str

    _addr = field_validator("address")(classmethod(lambda cls, v: _check_address(v)))


class SPUClusterDef(_Strict):
    nodes: list[SPUNode] = Field(min_length=2)
    runtime_config: dict[str, Any] = Field(
        default_factory=lambda: {"protocol": "SEMI2K", "field": "FM128"}
    )


class SPUConfig(_Strict):
    cluster_def: SPUClusterDef
    link_desc: dict[str, int] = Field(
        default_factory=lambda: {"connect_retry_times": 60, "connect_retry_interval_ms": 1000}
    )


class DuplicateMode(StrEnum):
    """What a PSI does with a key that repeats within one party's table."""

    REFUSE = "refuse"  # refuse the table, naming the first repeated key and its lines
    DISTINCT = "distinct"  # PSI of the distinct keys; the output has the first row of each key
    JOIN = "join"  # inner join: the output has every row of a key that is in the intersection


class PSITaskConfig(_Strict):
    task_type: Literal["psi"] = "psi"
    keys: dict[str, list[str]]
    input_paths: dict[str, str]
    output_paths: dict[str, str]
    receiver: str
    protocol: str = "PROTOCOL_RR22"
    sort: bool = True
    broadcast_result: bool = False
    duplicates: DuplicateMode = DuplicateMode.DISTINCT
    overwrite: bool = False  # an output file that already exists is refused unless this is set

    @field_validator("protocol")
    @classmethod
    def _protocol(cls, v: str) -> str:
        return normalize_psi_protocol(v)

    @field_validator("keys")
    @classmethod
    def _keys(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        for party, cols in v.items():
            if not cols or any(not c or not isinstance(c, str) for c in cols):
                raise ValueError(
                    f"task_config.keys[{party!r}] must be a non-empty list of column names"
                )
        return v

    @model_validator(mode="after")
    def _parties(self) -> PSITaskConfig:
        parties = set(self.keys)
        for name in ("input_paths", "output_paths"):
            if set(getattr(self, name)) != parties:
                raise ValueError(
                    f"task_config.{name} must name the same parties as task_config.keys"
                )
        if self.receiver not in parties:
            raise ValueError(f"task_config.receiver {self.receiver!r} is not one of the parties")
        if len(parties) != 2:
            raise ValueError("PSI needs exactly two parties")
        return self


class TaskParams(_Strict):
    """What the coordinator sends to every party (only `self_party` differs between them)."""

    task_id: str
    subtask_id: str
    execution_id: str
    deadline: dt.datetime  # required: a task never waits or runs forever (≤ MAX_DEADLINE_AHEAD_S)
    sf_init_config: SFInitConfig
    spu_config: SPUConfig | None = None
    task_config: dict[str, Any]

    @field_validator("task_id", "subtask_id", "execution_id")
    @classmethod
    def _ids(cls, v: str, info) -> str:
        if not ID_RE.fullmatch(v):
            raise ValueError(f"{info.field_name} {v!r} must match {ID_RE.pattern}")
        return v

    @field_validator("deadline")
    @classmethod
    def _tz(cls, v: dt.datetime) -> dt.datetime:
        if v.tzinfo is None:
            raise ValueError("deadline must carry a time zone (UTC ISO-8601, e.g. ...Z)")
        return v

    @field_validator("task_config")
    @classmethod
    def _task_type(cls, v: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(v.get("task_type"), str) or not v["task_type"]:
            raise ValueError("task_config.task_type is required")
        return v

    @model_validator(mode="after")
    def _spu(self) -> TaskParams:
        if self.spu_config is not None:
            spu_parties = [n.party for n in self.spu_config.cluster_def.nodes]
            if sorted(spu_parties) != sorted(self.sf_init_config.parties):
                raise ValueError("spu_config.cluster_def.nodes must name exactly the parties")
        return self

    @property
    def party(self) -> str:
        return self.sf_init_config.self_party

    @property
    def task_type(self) -> str:
        return self.task_config["task_type"]


# --- errors -----------------------------------------------------------------------------------
class ErrorType(StrEnum):
    """Why a party's task failed — one short, typed cause (both sides import this; no word
    matching on messages anywhere). The value is what the API and the UI show."""

    # refused before any SecretFlow work: the request or the data must change (never retried)
    INVALID_PARAMS = "InvalidTaskParams"
    WRONG_PARTY = "WrongParty"
    PEER_NOT_ALLOWED = "PeerNotAllowed"
    DEADLINE_PASSED = "DeadlinePassed"
    UNKNOWN_TASK_TYPE = "UnknownTaskType"
    PATH_OUTSIDE_DATA_ROOT = "PathOutsideDataRoot"
    DATASET_NOT_FOUND = "DatasetNotFound"
    OUTPUT_EXISTS = "OutputExists"
    KEY_COLUMN_MISSING = "KeyColumnMissing"
    EMPTY_TABLE = "EmptyTable"
    DUPLICATE_KEYS = "DuplicateKeys"
    MALFORMED_CSV = "MalformedCsv"
    TASK_REFUSED = "TaskRefused"  # any other refusal of the node's preflight
    TASK_REVOKED = "TaskRevoked"  # the coordinator had revoked this task before it started
    # this party's own stack
    RAY_HEAD_UNREACHABLE = "RayHeadUnreachable"
    RUNNER_START_ERROR = "RunnerStartError"
    JOB_PROCESS_CRASHED = "JobProcessCrashed"
    TIME_LIMIT_EXCEEDED = "TimeLimitExceeded"
    PORT_IN_USE = "PortInUse"  # the job's fed/SPU port is taken on this host (e.g. still closing)
    # the links between the parties
    PEER_CONNECT_TIMEOUT = "PeerConnectTimeout"  # the peer never joined this job in time
    PEER_UNREACHABLE = "PeerUnreachable"  # the peer's link port refused / could not be reached
    PEER_LOST = "PeerLost"  # the peer went away in the middle of the job
    TLS_HANDSHAKE = "TLSHandshakeError"  # certificate / CA problem: an operator must fix it
    # the computation itself
    PSI_FAILED = "PSIError"
    # ended on purpose
    CANCELLED = "Cancelled"
    # made by the coordinator (a party that cannot report for itself)
    WORKER_LOST = "WorkerLost"
    START_TIMEOUT = "StartTimeout"
    BROKER_UNREACHABLE = "BrokerUnreachable"
    REVOKED = "Revoked"
    INTERNAL = "InternalError"


# failures a new attempt of the whole job may cure (a party or link that was briefly away);
# never a refusal, a data problem, a certificate problem or a bug
RETRYABLE = frozenset(
    {
        ErrorType.PEER_CONNECT_TIMEOUT,
        ErrorType.PEER_UNREACHABLE,
        ErrorType.PEER_LOST,
        ErrorType.WORKER_LOST,
        ErrorType.START_TIMEOUT,
        ErrorType.RAY_HEAD_UNREACHABLE,
        ErrorType.PORT_IN_USE,  # the next attempt gets other ports
    }
)
# causes that point at another party than the one reporting them: when that other party
# reports a cause of its own, its report is the true one
PEER_CAUSED = frozenset(
    {
        ErrorType.PEER_CONNECT_TIMEOUT,
        ErrorType.PEER_UNREACHABLE,
        ErrorType.PEER_LOST,
        ErrorType.REVOKED,
        ErrorType.CANCELLED,
    }
)

_ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")
MESSAGE_MAX = 300
DETAILS_MAX = 16_000
# what the coordinator accepts from a party: a longer status event or Celery result is refused
# and counted, never stored (a node's own events stay far below: details are cut at DETAILS_MAX)
MAX_STATUS_EVENT_BYTES = 128 * 1024
MAX_RESULT_BYTES = 256 * 1024


def strip_ansi(text: str) -> str:
    """Text without terminal colour/control sequences (Ray and SPU colour their logs)."""
    return _ANSI_RE.sub("", text)


def is_loopback_host(host: str) -> bool:
    """True for this machine only (localhost, 127.0.0.0/8, ::1): where a plain redis:// URL is
    acceptable without saying so."""
    import ipaddress

    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


PLAINTEXT_REDIS_HINT = (
    "its password and every task would cross the network unencrypted; use rediss:// (TLS), or "
    "allow plaintext explicitly for a private network"
)


def one_line(text: str, limit: int = MESSAGE_MAX) -> str:
    """A message fit for a headline: no ANSI codes, no line breaks, at most `limit` chars."""
    flat = " ".join(strip_ansi(str(text)).split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def _error_type(value: Any) -> ErrorType:
    if isinstance(value, ErrorType):
        return value
    try:
        return ErrorType(str(value))
    except ValueError:
        return ErrorType.INTERNAL


# --- results ----------------------------------------------------------------------------------
class ErrorInfo(BaseModel):
    """A failure: `type` (typed cause), `message` (one readable line naming the party and what
    to do), `details` (the trace or log excerpt behind it, for the folded view — never ANSI)."""

    type: ErrorType
    message: str
    details: str | None = None

    @field_validator("type", mode="before")
    @classmethod
    def _type(cls, v: Any) -> ErrorType:
        return _error_type(v)  # an unknown cause from an older node is still an error

    @field_validator("message")
    @classmethod
    def _message(cls, v: str) -> str:
        return one_line(v)

    @field_validator("details")
    @classmethod
    def _details(cls, v: str | None) -> str | None:
        if v is None:
            return None
        v = strip_ansi(v).strip()
        return v[-DETAILS_MAX:] if v else None

    @property
    def retryable(self) -> bool:
        return self.type in RETRYABLE


class PerformanceMetrics(BaseModel):
    input_check_s: float = 0.0  # the streaming check of the input table (before the job)
    cluster_init_s: float = 0.0
    device_init_s: float = 0.0
    algorithm_s: float = 0.0
    teardown_s: float = 0.0
    total_s: float = 0.0


class TaskMetadata(BaseModel):
    task_id: str
    subtask_id: str
    execution_id: str
    party: str
    task_type: str
    started_at: dt.datetime
    completed_at: dt.datetime
    devices_used: list[str] = Field(default_factory=list)


class TaskResult(BaseModel):
    status: Literal["success", "error"]
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
    def from_stream_fields(cls, fields: dict) -> StatusEvent:
        raw = fields.get("event") if "event" in fields else fields.get(b"event")
        if isinstance(raw, bytes):
            raw = raw.decode()
        return cls.model_validate_json(raw)


class NodeTaskError(Exception):
    """Raised by a node task that ended in error/cancel; args = (message, TaskResult dict).

    Celery stores it as the task's FAILURE; a client that imports this module gets it back
    with the full result (status "error", error {type, message}, metrics, metadata).
    """

    def __init__(self, message: str, result: dict | None = None) -> None:
        super().__init__(message, result or {})
        self.message = message
        self.result = result or {}

    def __str__(self) -> str:
        return self.message


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
