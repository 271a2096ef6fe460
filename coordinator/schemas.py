"""API schemas for jobs (request/response families). Validation errors name the field."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from pathlib import PurePosixPath
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    computed_field,
    field_validator,
    model_validator,
)

from coordinator.jobkinds.spec import JobRequest
from node.contract import (
    MAX_PSI_PARTIES,
    PARTY_RE,
    DuplicateMode,
    check_psi_party_count,
    normalize_psi_protocol,
    psi_protocols_for,
)


def dataset_name(value: str, where: str) -> str:
    """Dataset names are relative to each node's data root: no absolute paths, no '..'."""
    if not value or not value.strip():
        raise ValueError(f"{where} is empty")
    if "\x00" in value or "\\" in value:
        raise ValueError(f"{where} {value!r} contains a forbidden character")
    path = PurePosixPath(value)
    if path.is_absolute():
        raise ValueError(f"{where} {value!r} is absolute; give a name inside the party's data root")
    if ".." in path.parts:
        raise ValueError(
            f"{where} {value!r} contains '..'; give a name inside the party's data root"
        )
    return value


class PSIPartyInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keys: list[str] = Field(min_length=1, description="key column(s) in this party's CSV")
    input: str = Field(description="CSV name inside this party's data root")
    output: str = Field(description="output CSV name inside this party's data root")

    @field_validator("keys")
    @classmethod
    def _keys(cls, v: list[str]) -> list[str]:
        if any(not k.strip() for k in v):
            raise ValueError("key column names must not be empty")
        if len(set(v)) != len(v):
            raise ValueError("key columns are repeated")
        return v

    @field_validator("input", "output")
    @classmethod
    def _paths(cls, v: str, info: ValidationInfo) -> str:
        return dataset_name(v, info.field_name or "path")


class PSIJobCreate(JobRequest):
    """A PSI request: which parties, what each contributes, who receives the result."""

    model_config = ConfigDict(extra="forbid")

    parties: dict[str, PSIPartyInput] = Field(description="party name → keys, input, output")
    receiver: str
    protocol: str | None = Field(
        default=None,
        description=(
            "RR22, ECDH or KKRT between two parties; ECDH_3PC (three), ECDH_NPC or KKRT_NPC "
            "(three or more). Unset: RR22 for two parties, ECDH_3PC for three, ECDH_NPC for more "
            "(the one that reveals least; what each reveals: GET /api/v1/jobs/kinds)"
        ),
    )
    broadcast_result: bool = False
    sort: bool = True
    duplicates: DuplicateMode = Field(
        default=DuplicateMode.DISTINCT,
        description=(
            "a key that repeats within a table: 'distinct' (PSI of the distinct keys, one output "
            "row per common key — its first row), 'join' (every row of a common key), "
            "'refuse' (the job fails naming the first repeated key and its lines)"
        ),
    )
    overwrite: bool = Field(
        default=False,
        description="replace an output file that already exists (refused otherwise: it may be "
        "another dataset)",
    )

    @field_validator("parties")
    @classmethod
    def _parties(cls, v: dict[str, PSIPartyInput]) -> dict[str, PSIPartyInput]:
        bad = [p for p in v if not PARTY_RE.fullmatch(p)]
        if bad:
            raise ValueError(f"invalid party name(s): {', '.join(map(repr, bad))}")
        if not 2 <= len(v) <= MAX_PSI_PARTIES:
            raise ValueError(f"a PSI runs between 2 and {MAX_PSI_PARTIES} parties, got {len(v)}")
        return v

    @field_validator("protocol")
    @classmethod
    def _protocol(cls, v: str | None) -> str | None:
        return None if v is None else normalize_psi_protocol(v)

    @model_validator(mode="after")
    def _receiver(self) -> PSIJobCreate:
        if self.receiver not in self.parties:
            raise ValueError(
                f"receiver {self.receiver!r} is not one of the parties ({', '.join(self.parties)})"
            )
        return self

    @model_validator(mode="after")
    def _protocol_for_parties(self) -> PSIJobCreate:
        if self.protocol is None:
            self.protocol = psi_protocols_for(len(self.parties))[0]
        check_psi_party_count(self.protocol, len(self.parties))
        return self

    def party_names(self) -> list[str]:
        return sorted(self.parties)

    def check_known(self, known: Collection[str]) -> None:
        """Raise ValueError naming any party the registry does not know."""
        unknown = [p for p in self.parties if p not in known]
        if unknown:
            raise ValueError(
                f"unknown party {', '.join(map(repr, unknown))}; the registry has: "
                f"{', '.join(sorted(known))}"
            )


# --- responses ---------------------------------------------------------------------------------
def _utc(v: dt.datetime) -> dt.datetime:
    """Every time the API shows carries its zone (SQLite hands stored UTC times back naive)."""
    return v.replace(tzinfo=dt.UTC) if v.tzinfo is None else v.astimezone(dt.UTC)


UtcDateTime = Annotated[dt.datetime, AfterValidator(_utc)]


class PartyTaskOut(BaseModel):
    """One party's task in one attempt."""

    model_config = ConfigDict(from_attributes=True)

    party: str
    execution_id: str
    task_request_id: str
    status: str
    stage: str | None = None
    progress: float | None = None
    error: dict | None = None
    result: dict | None = None
    performance_metrics: dict | None = None
    created_at: UtcDateTime
    started_at: UtcDateTime | None = None
    finished_at: UtcDateTime | None = None

    @computed_field(deprecated="read task_request_id")  # type: ignore[prop-decorator]
    @property
    def celery_task_id(self) -> str:
        """The task request id under its first name, for clients written before the rename."""
        return self.task_request_id


class TimelineEntry(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    event_id: str  # "coord-…" for an event the coordinator made (timer, lost-event fallback)
    party: str
    execution_id: str
    seq: int
    status: str
    stage: str | None = None
    data: dict = {}
    timestamp: UtcDateTime


class JobOut(BaseModel):
    """A job as listed: overall state and one state per party of the current attempt."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    kind: str
    status: str
    parties: list[str]
    receiver: str | None = None
    protocol: str | None = None
    party_status: dict[str, str] = {}
    # what went wrong; while a queued job waits for a party: "waiting: <waiting_for>", then
    # " | " and the error of its failed attempt, if any
    error: str | None = None
    waiting_for: str | None = None  # why a queued job is not sent yet
    failed_party: str | None = None
    attempt: int
    max_attempts: int
    execution_id: str | None = None
    # the warm federation session the current attempt runs in (None: a job process of its own)
    session_id: str | None = None
    deadline: UtcDateTime | None = None
    created_at: UtcDateTime
    dispatched_at: UtcDateTime | None = None
    finished_at: UtcDateTime | None = None
    last_reconciled_at: UtcDateTime | None = None


class JobDetail(JobOut):
    request: dict
    learns: dict[str, str] = {}  # party → what it learns of the others' data in this job
    tasks: list[PartyTaskOut] = []  # every attempt, newest last
    # the newest events (at most TIMELINE_PAGE), in time order; all of them: /timeline
    timeline: list[TimelineEntry] = []
    timeline_total: int = 0
    result: dict | None = None


class TimelinePage(BaseModel):
    """A page of a job's timeline, in time order; `offset` counts from the oldest event."""

    items: list[TimelineEntry]
    total: int
    offset: int
    limit: int


class JobsPage(BaseModel):
    items: list[JobOut]
    total: int
    offset: int
    limit: int


class JobResultOut(BaseModel):
    """Counts, paths and timings only — never data rows."""

    job_id: str
    status: str
    intersection_count: int | None = None
    receiver: str | None = None
    parties: dict[str, dict] = {}
    duration_s: float | None = None


class CacheOut(BaseModel):
    """An unbalanced PSI cache (GET /api/v1/caches): whose table, for which peer, how big, how
    old, and the job that made it (a query names it as `made_by`)."""

    cache: str
    server: str
    client: str  # the one party that may query it
    table: str  # the server's table it was made of (a query is refused once it changed)
    keys: list[str]
    rows: int | None = None  # the server's distinct keys
    server_bytes: int | None = None  # each half's size on disk
    client_bytes: int | None = None
    made_by: str
    made_at: UtcDateTime
    age_s: float


class LinkOut(BaseModel):
    """One link check a node ran from its side (`python -m node health`, node/ops/probe.py): did
    `party` reach `peer`'s mTLS probe at `address`, and did it present `peer`'s certificate."""

    party: str
    peer: str
    address: str
    outcome: str  # node.ops.probe.LinkOutcome: ok, wrong_party, unreachable, timeout, untrusted, …
    ok: bool
    warn: bool = False
    message: str  # one line; a failure says what to do
    peer_cn: str | None = None  # the party the peer's certificate names
    days_left: int | None = None  # the peer certificate's days to expiry


class PartyOut(BaseModel):
    name: str
    description: str = ""
    broker: str  # URL without the password
    fed_host: str
    spu_host: str
    slots: int
    reachable: bool | None = None
    worker_alive: bool | None = None
    health: dict | None = None
    links: list[LinkOut] = []  # from `health`: this party's checks of its peers' probes
    cert_days_left: int | None = None  # from `health`: this party's own certificate
    error: str | None = None


class DatasetOut(BaseModel):
    name: str
    size: int | None = None
    columns: list[str] = []


class DatasetsOut(BaseModel):
    party: str
    datasets: list[DatasetOut]
