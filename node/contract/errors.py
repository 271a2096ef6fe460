"""Why a task failed: the typed cause, the one-line message, the details behind it."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, field_validator


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
    CACHE_NOT_FOUND = "UbCacheNotFound"  # an unbalanced PSI's cache is not at this party
    CACHE_STALE = "UbCacheStale"  # … or no longer matches its table, its peer or its job
    CACHE_LIMIT = "UbCacheLimit"  # this party holds NODE_MAX_UB_CACHES caches already
    TASK_REFUSED = "TaskRefused"  # any other refusal of the node's preflight
    TASK_REVOKED = "TaskRevoked"  # the coordinator had revoked this task before it started
    # this party's own stack
    RAY_HEAD_UNREACHABLE = "RayHeadUnreachable"
    RUNNER_START_ERROR = "RunnerStartError"
    JOB_PROCESS_CRASHED = "JobProcessCrashed"
    TIME_LIMIT_EXCEEDED = "TimeLimitExceeded"
    PORT_IN_USE = "PortInUse"  # the job's fed/SPU port is taken on this host (e.g. still closing)
    SESSION_LOST = "SessionLost"  # the warm session the job was sent to has ended at this party
    # the links between the parties
    PEER_CONNECT_TIMEOUT = "PeerConnectTimeout"  # the peer never joined this job in time
    PEER_UNREACHABLE = "PeerUnreachable"  # the peer's link port refused / could not be reached
    PEER_LOST = "PeerLost"  # the peer went away in the middle of the job
    PEER_REFUSED = "PeerRefused"  # a peer refused its part before any work (its own cause)
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
        ErrorType.SESSION_LOST,  # the next attempt gets a new session
    }
)
# causes that point at another party than the one reporting them: when that other party
# reports a cause of its own, its report is the true one
PEER_CAUSED = frozenset(
    {
        ErrorType.PEER_CONNECT_TIMEOUT,
        ErrorType.PEER_UNREACHABLE,
        ErrorType.PEER_LOST,
        ErrorType.PEER_REFUSED,
        ErrorType.REVOKED,
        ErrorType.CANCELLED,
    }
)

_ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")
MESSAGE_MAX = 300
DETAILS_MAX = 16_000


def strip_ansi(text: str) -> str:
    """Text without terminal colour/control sequences (Ray and SPU colour their logs)."""
    return _ANSI_RE.sub("", text)


def storable(text: str) -> str:
    """`text` as every database stores it: no NUL, no lone surrogates (replaced by '?')."""
    return text.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")


def one_line(text: str, limit: int = MESSAGE_MAX) -> str:
    """A message fit for a headline: no ANSI codes, no line breaks, at most `limit` chars."""
    flat = " ".join(storable(strip_ansi(str(text))).split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def _error_type(value: Any) -> ErrorType:
    if isinstance(value, ErrorType):
        return value
    try:
        return ErrorType(str(value))
    except ValueError:
        return ErrorType.INTERNAL


class ErrorInfo(BaseModel):
    """A failure: `type` (typed cause), `message` (one readable line naming the party and what
    to do), `details` (the trace or log excerpt behind it, for the folded view — never ANSI)."""

    type: ErrorType
    message: str
    details: str | None = None
    # a refusal before any work in a warm session whose peers this party releases (their
    # drivers end the job with PeerRefused and stay up): the coordinator lets them end and
    # keeps the session (docs/architecture.md, "Warm sessions")
    releases_session: bool = False

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
        v = storable(strip_ansi(v)).strip()
        return v[-DETAILS_MAX:] if v else None

    @property
    def retryable(self) -> bool:
        return self.type in RETRYABLE


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
