"""The party registry's models: one YAML file names every party of a federation.

For each party: the coordinator's broker URL (its Redis), the public hosts and port ranges peers
use for the cross-silo (gRPC) and SPU (brpc) links, and how many jobs it runs at once. The
schema is documented in docs/topology.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    PlainValidator,
    PrivateAttr,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from coordinator.params import PartyEndpoints
from coordinator.topology.fields import (
    PortRange,
    PortRangeField,
    _check_broker_url,
    _check_host,
    _context,
    _redact,
    host_key,
    interpolate,
)
from node.contract import ID_RE, PARTY_RE, PLAINTEXT_REDIS_HINT, is_loopback_host


# --- errors -----------------------------------------------------------------------------------
def _fail(*errors: tuple[tuple[str | int, ...], str, Any]) -> ValidationError:
    """A ValidationError with explicit field locations (so the loader can find their lines)."""
    return ValidationError.from_exception_data(
        "Topology",
        [
            InitErrorDetails(
                type=PydanticCustomError("topology", "{message}", {"message": msg}),
                loc=loc,
                input=value,
            )
            for loc, msg, value in errors
        ],
    )


# --- models -----------------------------------------------------------------------------------
class _PartyFields(BaseModel):
    """Fields a party may take from `defaults`; ${VAR} is expanded in every string of them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    redis_ca_file: Path | None = None
    fed_host: str | None = None
    spu_host: str | None = None
    fed_ports: PortRangeField | None = None
    spu_ports: PortRangeField | None = None
    slots: int | None = None

    @field_validator(
        "redis_ca_file", "fed_host", "spu_host", "fed_ports", "spu_ports", mode="before"
    )
    @classmethod
    def _expand(cls, v: Any, info: ValidationInfo) -> Any:
        return interpolate(v, _context(info)[0]) if isinstance(v, str) else v

    @field_validator("redis_ca_file", mode="before")
    @classmethod
    def _ca_path(cls, v: Any, info: ValidationInfo) -> Any:
        if isinstance(v, str):
            if not v.strip():
                raise ValueError("is empty")
            v = Path(v).expanduser()
        if isinstance(v, Path) and not v.is_absolute():
            v = _context(info)[1] / v
        return v

    @field_validator("redis_ca_file")
    @classmethod
    def _ca_exists(cls, v: Path | None) -> Path | None:
        if v is not None and not v.is_file():
            what = "is not a file" if v.exists() else "does not exist"
            raise ValueError(f"CA file {v} {what}")
        return v

    @field_validator("fed_host", "spu_host")
    @classmethod
    def _host(cls, v: str | None) -> str | None:
        return None if v is None else _check_host(v)

    @field_validator("slots", mode="before")
    @classmethod
    def _slots(cls, v: Any) -> Any:
        if v is None:
            return v
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"must be a whole number, got {v!r}")
        if v < 1:
            raise ValueError(f"must be at least 1, got {v}")
        return v


class PartyDefaults(_PartyFields):
    """`defaults:` — values every party takes unless it sets its own."""


class PartySpec(_PartyFields):
    """One party: how the coordinator reaches its broker and how peers reach its links."""

    broker_url: SecretStr
    fed_host: str
    spu_host: str | None = None  # filled in with fed_host: always a str once validated
    fed_ports: PortRangeField
    spu_ports: PortRangeField
    slots: int = 1
    description: str = ""
    # a redis:// (no TLS) broker on another host is refused unless this says it is intended
    allow_plaintext_redis: bool = False

    @field_validator("broker_url", mode="before")
    @classmethod
    def _broker(cls, v: Any, info: ValidationInfo) -> Any:
        if isinstance(v, SecretStr):
            v = v.get_secret_value()
        if not isinstance(v, str):
            raise ValueError(f"must be a URL string, got {type(v).__name__}")
        return SecretStr(_check_broker_url(interpolate(v, _context(info)[0])))

    @model_validator(mode="after")
    def _consistent(self) -> PartySpec:
        if self.spu_host is None:
            object.__setattr__(self, "spu_host", self.fed_host)  # frozen model
        errors: list[tuple[tuple[str | int, ...], str, Any]] = []
        if self.broker_tls and self.redis_ca_file is None:
            errors.append(
                (
                    ("redis_ca_file",),
                    "required when broker_url is rediss:// (the CA that signed the party's "
                    "Redis certificate)",
                    None,
                )
            )
        if (
            not self.broker_tls
            and not is_loopback_host(self.broker_host)
            and not self.allow_plaintext_redis
        ):
            errors.append(
                (
                    ("broker_url",),
                    f"redis:// (no TLS) to {self.broker_host}, another host: "
                    f"{PLAINTEXT_REDIS_HINT} (allow_plaintext_redis: true)",
                    None,
                )
            )
        common = self.fed_ports.overlap(self.spu_ports)
        if common is not None:
            errors.append(
                (
                    ("spu_ports",),
                    f"{self.spu_ports} overlaps fed_ports {self.fed_ports} (ports {common})",
                    str(self.spu_ports),
                )
            )
        for name in ("fed_ports", "spu_ports"):
            rng: PortRange = getattr(self, name)
            if len(rng) < self.slots:
                errors.append(
                    (
                        (name,),
                        f"{rng} has {len(rng)} ports but slots is {self.slots}; every "
                        "concurrent job needs its own port",
                        str(rng),
                    )
                )
        if errors:
            raise _fail(*errors)
        return self

    # --- accessors ----------------------------------------------------------------------------
    @property
    def broker_tls(self) -> bool:
        return self.broker_url.get_secret_value().startswith("rediss://")

    @property
    def broker_host(self) -> str:
        return urlsplit(self.broker_url.get_secret_value()).hostname or ""

    @property
    def broker_port(self) -> int:
        return urlsplit(self.broker_url.get_secret_value()).port or 6379

    @property
    def broker_url_redacted(self) -> str:
        """The broker URL with the password replaced by *** (for logs and the UI)."""
        return _redact(self.broker_url.get_secret_value())

    def fed_address(self, port: int) -> str:
        if port not in self.fed_ports:
            raise ValueError(f"fed port {port} is outside {self.fed_ports}")
        return f"{self.fed_host}:{port}"

    def spu_address(self, port: int) -> str:
        if port not in self.spu_ports:
            raise ValueError(f"spu port {port} is outside {self.spu_ports}")
        return f"{self.spu_host}:{port}"


def _check_party_name(name: Any) -> str:
    if isinstance(name, bool):
        raise ValueError(f"YAML reads this party name as {name}; put it in quotes")
    if not isinstance(name, str) or not PARTY_RE.fullmatch(name):
        raise ValueError(
            f"invalid party name {name!r}: lower-case letter first, then up to 31 of a-z 0-9 _ -"
        )
    return name


PartyName = Annotated[str, PlainValidator(_check_party_name)]


class Topology(BaseModel):
    """A validated party registry. Build it with `load_topology(path)`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1] = 1
    federation: str
    defaults: PartyDefaults | None = None
    parties: dict[PartyName, PartySpec]

    _source: Path | None = PrivateAttr(default=None)

    @field_validator("federation")
    @classmethod
    def _federation(cls, v: str) -> str:
        if not ID_RE.fullmatch(v):
            raise ValueError(f"invalid federation name {v!r}: letters, digits, _ . - only")
        return v

    @model_validator(mode="before")
    @classmethod
    def _apply_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get("parties"), dict):
            return data
        defaults = data.get("defaults")
        defaults = defaults if isinstance(defaults, dict) else {}
        parties = {
            name: ({**defaults, **(spec or {})} if isinstance(spec, dict) or spec is None else spec)
            for name, spec in data["parties"].items()
        }
        return {**data, "parties": parties}

    @model_validator(mode="after")
    def _cross_party(self) -> Topology:
        if len(self.parties) < 2:
            found = ", ".join(self.parties) or "none"
            raise _fail(
                (
                    ("parties",),
                    f"a federation needs at least 2 parties, found {len(self.parties)} ({found})",
                    None,
                )
            )
        # Every port a party listens on, per host; parties on one host must not share any.
        claims: list[tuple[str, str, str, PortRange]] = []
        for name, spec in self.parties.items():
            claims.append((name, "fed_ports", spec.fed_host, spec.fed_ports))
            claims.append((name, "spu_ports", spec.spu_host or spec.fed_host, spec.spu_ports))
            broker = PortRange(spec.broker_port, spec.broker_port)
            claims.append((name, "broker_url", spec.broker_host, broker))
        errors: list[tuple[tuple[str | int, ...], str, Any]] = []
        for i, (party, field, host, rng) in enumerate(claims):
            for other, ofield, ohost, orng in claims[:i]:
                same_party_ranges = party == other and {field, ofield} <= {"fed_ports", "spu_ports"}
                if same_party_ranges or host_key(host) != host_key(ohost):
                    continue  # (a party's own fed/spu overlap is reported by PartySpec)
                common = rng.overlap(orng)
                if common is None:
                    continue
                mine = f"Redis port {rng}" if field == "broker_url" else str(rng)
                whose = "its own" if other == party else f"party {other}'s"
                theirs = f"Redis port {orng}" if ofield == "broker_url" else f"{ofield} {orng}"
                where = host if host == ohost else f"{host} / {ohost}"
                port_s = "port" if len(common) == 1 else "ports"
                errors.append(
                    (
                        ("parties", party, field),
                        f"{mine} overlaps {whose} {theirs} on the same host ({where}): "
                        f"{port_s} {common}",
                        str(rng),
                    )
                )
        if errors:
            raise _fail(*errors)
        return self

    # --- accessors ----------------------------------------------------------------------------
    @property
    def names(self) -> tuple[str, ...]:
        """Party names in file order."""
        return tuple(self.parties)

    @property
    def slots(self) -> dict[str, int]:
        """Concurrent-job capacity per party (the `slots` argument of scheduling.dispatchable)."""
        return {name: spec.slots for name, spec in self.parties.items()}

    @property
    def source(self) -> Path | None:
        """The file this topology was loaded from, if any."""
        return self._source

    def party(self, name: str) -> PartySpec:
        try:
            return self.parties[name]
        except KeyError:
            raise KeyError(
                f"unknown party {name!r}; known parties: {', '.join(self.parties)}"
            ) from None

    def endpoints(self, ports: Mapping[str, JobPorts]) -> dict[str, PartyEndpoints]:
        """Public endpoints of one job (for coordinator.params.psi_template)."""
        out = {}
        for name, jp in ports.items():
            spec = self.party(name)
            if jp.spu is None:
                raise ValueError(f"party {name}'s job ports have no SPU port")
            spec.fed_address(jp.fed)  # raises if outside the party's ranges
            spec.spu_address(jp.spu)
            out[name] = PartyEndpoints(
                spec.fed_host, jp.fed, spec.spu_host or spec.fed_host, jp.spu
            )
        return out


# --- per-job ports ----------------------------------------------------------------------------
@dataclass(frozen=True)
class JobPorts:
    """The fed (gRPC) and SPU (brpc) port one party listens on for one job (a job restored
    after a restart whose kind needs no SPU device has no SPU port on record: None)."""

    fed: int
    spu: int | None
