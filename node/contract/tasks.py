"""What the coordinator sends to every party: TaskParams and the PSI task config."""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from node.contract.names import ID_RE, PARTY_RE

# --- PSI protocols ----------------------------------------------------------------------------
# SPU's names: PSI v2's two-party protocols, and the legacy bucket PSI's types for three parties
# or more (ECDH_PSI_3PC for exactly three). What each reveals: coordinator/jobkinds/psi.py and
# docs/node.md, "Who learns what".
PSI_PROTOCOLS = (
    "PROTOCOL_RR22",
    "PROTOCOL_ECDH",
    "PROTOCOL_KKRT",
    "ECDH_PSI_3PC",
    "ECDH_PSI_NPC",
    "KKRT_PSI_NPC",
)
MAX_PSI_PARTIES = 8  # the most parties one PSI may have (tested up to 5)
# protocol → the party counts it runs with (min, max), as the installed SPU runs them
PSI_PARTY_COUNTS: dict[str, tuple[int, int]] = {
    "PROTOCOL_RR22": (2, 2),
    "PROTOCOL_ECDH": (2, 2),
    "PROTOCOL_KKRT": (2, 2),
    "ECDH_PSI_3PC": (3, 3),  # SPU: "only three parties supported"
    "ECDH_PSI_NPC": (3, MAX_PSI_PARTIES),
    "KKRT_PSI_NPC": (3, MAX_PSI_PARTIES),
}
_PROTOCOL_ALIASES = {
    "RR22": "PROTOCOL_RR22",
    "RR22_FAST": "PROTOCOL_RR22",
    "RR22_FAST_PSI_2PC": "PROTOCOL_RR22",
    "ECDH": "PROTOCOL_ECDH",
    "ECDH_PSI_2PC": "PROTOCOL_ECDH",
    "KKRT": "PROTOCOL_KKRT",
    "KKRT_PSI_2PC": "PROTOCOL_KKRT",
    "ECDH_3PC": "ECDH_PSI_3PC",
    "ECDH_NPC": "ECDH_PSI_NPC",
    "KKRT_NPC": "KKRT_PSI_NPC",
}


def normalize_psi_protocol(name: str) -> str:
    """Map any accepted spelling (PROTOCOL_RR22, RR22, KKRT_PSI_2PC, ECDH_3PC, …) to SPU's name."""
    key = str(name).strip().upper()
    if key in PSI_PROTOCOLS:
        return key
    if key in _PROTOCOL_ALIASES:
        return _PROTOCOL_ALIASES[key]
    accepted = sorted(set(PSI_PROTOCOLS) | set(_PROTOCOL_ALIASES))
    raise ValueError(f"unknown PSI protocol {name!r}; accepted: {', '.join(accepted)}")


def short_psi_protocol(protocol: str) -> str:
    """The name people write: RR22, ECDH, KKRT, ECDH_3PC, ECDH_NPC, KKRT_NPC."""
    return protocol.removeprefix("PROTOCOL_").replace("_PSI_", "_")


def psi_protocols_for(parties: int) -> list[str]:
    """The protocols that run between this many parties, the default first (PSI_PROTOCOLS'
    order: for two parties the fastest, for three or more the one that reveals least)."""
    return [p for p in PSI_PROTOCOLS if _runs(p, parties)]


def check_psi_party_count(protocol: str, parties: int) -> None:
    """ValueError unless `protocol` runs between `parties` parties, saying which counts each
    protocol supports."""
    if not 2 <= parties <= MAX_PSI_PARTIES:
        raise ValueError(f"a PSI runs between 2 and {MAX_PSI_PARTIES} parties, got {parties}")
    if _runs(protocol, parties):
        return
    lo, hi = PSI_PARTY_COUNTS[protocol]
    runs = str(lo) if lo == hi else f"{lo} to {hi}"
    others = ", ".join(short_psi_protocol(p) for p in psi_protocols_for(parties))
    raise ValueError(
        f"protocol {short_psi_protocol(protocol)} runs with {runs} parties, got {parties}; "
        f"for {parties} parties use {others}"
    )


def _runs(protocol: str, parties: int) -> bool:
    lo, hi = PSI_PARTY_COUNTS[protocol]
    return lo <= parties <= hi


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
        try:
            check_psi_party_count(self.protocol, len(parties))
        except ValueError as exc:
            raise ValueError(f"task_config.protocol: {exc}") from None
        return self


class SessionRef(_Strict):
    """The warm federation session a job runs in (docs/architecture.md, "Warm sessions").

    The parties' drivers (connected to their own Ray heads), RayFed's proxies and the SPU
    runtime with its link stay up between the jobs of one party set, so a job pays only for its
    own work. The coordinator names the session and gives every job of it the same ports; a
    node runs one job of a session at a time, and a session whose job did not succeed is never
    used again (the coordinator starts another, on other ports)."""

    id: str
    # a node closes the session after this long without a job; the coordinator stops sending
    # jobs to it well before (SESSION_IDLE_MARGIN_S), so a job never finds it closed
    idle_timeout_s: float = Field(default=600.0, ge=30.0, le=86_400.0)

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not ID_RE.fullmatch(v):
            raise ValueError(f"session.id {v!r} must match {ID_RE.pattern}")
        return v


SESSION_IDLE_MARGIN_S = 60.0


class TaskParams(_Strict):
    """What the coordinator sends to every party (only `self_party` differs between them)."""

    task_id: str
    subtask_id: str
    execution_id: str
    deadline: dt.datetime  # required: a task never waits or runs forever (≤ MAX_DEADLINE_AHEAD_S)
    sf_init_config: SFInitConfig
    spu_config: SPUConfig | None = None
    task_config: dict[str, Any]
    session: SessionRef | None = None  # None: a job process of its own (a cold job)

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
