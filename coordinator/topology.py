"""The party registry (DESIGN §5): one YAML file names every party of a federation.

For each party: the coordinator's broker URL (its Redis), the public hosts and port ranges peers
use for the cross-silo (gRPC) and SPU (brpc) links, and how many jobs it runs at once. The
coordinator, the local launcher, the compose file and the Ansible inventory all describe the
same topology. The schema is documented in docs/topology.md.

`load_topology(path)` validates the whole file and raises `TopologyError` whose message names
the file, the line and the field (``topology.yaml:7: parties.alice.fed_ports: ...``).
`pick_ports` / `PortPool` assign per-job fed and SPU ports from each party's ranges.

Pure and light: pydantic and PyYAML only; nothing here opens a connection.
"""

from __future__ import annotations

import ipaddress
import os
import re
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit, urlunsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    PlainSerializer,
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
from coordinator.settings import PLACEHOLDER_SECRETS
from node.contract import ID_RE, PARTY_RE, PLAINTEXT_REDIS_HINT, is_loopback_host

__all__ = [
    "PLACEHOLDER_PASSWORDS",
    "JobPorts",
    "PartyDefaults",
    "PartySpec",
    "PortPool",
    "PortRange",
    "PortsExhausted",
    "Topology",
    "TopologyError",
    "TopologyIssue",
    "load_topology",
    "parse_topology",
    "pick_ports",
]

MIN_PORT, MAX_PORT = 1024, 65535
MIN_RANGE_PORTS = 2
PLACEHOLDER_PASSWORDS = frozenset(
    PLACEHOLDER_SECRETS
    | {"changeme", "change_me", "password", "passwd", "secret", "redis", "default", "todo", "xxx"}
)
_RANGE_RE = re.compile(r"\s*(\d+)\s*-\s*(\d+)\s*")
_ENV_REF_RE = re.compile(r"\$\$\{|\$\{([^}]*)\}|\$\{")
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HOST_LABEL_RE = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")


# --- errors -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class TopologyIssue:
    """One problem in a topology file: where (file, 1-based line, field path) and what."""

    file: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class TopologyError(ValueError):
    """The topology file is unreadable or invalid; `issues` lists every problem found."""

    def __init__(self, issues: list[TopologyIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


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


# --- port ranges ------------------------------------------------------------------------------
@dataclass(frozen=True, order=True)
class PortRange:
    """An inclusive range of TCP ports, written ``START-END`` in the file."""

    start: int
    end: int

    @classmethod
    def parse(cls, value: Any) -> PortRange:
        if isinstance(value, PortRange):
            start, end = value.start, value.end
        else:
            m = _RANGE_RE.fullmatch(value) if isinstance(value, str) else None
            if m is None:
                raise ValueError(
                    f"expected a port range 'START-END' such as 21000-21049, got {value!r}"
                )
            start, end = int(m.group(1)), int(m.group(2))
        if start > end:
            raise ValueError(f"range {start}-{end} is empty (start > end)")
        if start < MIN_PORT or end > MAX_PORT:
            raise ValueError(f"range {start}-{end} is outside {MIN_PORT}-{MAX_PORT}")
        if end - start + 1 < MIN_RANGE_PORTS:
            raise ValueError(
                f"range {start}-{end} has 1 port; at least {MIN_RANGE_PORTS} are needed"
            )
        return cls(start, end)

    def __len__(self) -> int:
        return self.end - self.start + 1

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.end + 1))

    def __contains__(self, port: object) -> bool:
        return isinstance(port, int) and self.start <= port <= self.end

    def overlap(self, other: PortRange) -> PortRange | None:
        """The common ports, or None."""
        start, end = max(self.start, other.start), min(self.end, other.end)
        return PortRange(start, end) if start <= end else None

    def __str__(self) -> str:
        return f"{self.start}-{self.end}" if self.start != self.end else str(self.start)


PortRangeField = Annotated[
    PortRange,
    PlainValidator(PortRange.parse),
    PlainSerializer(str, return_type=str),
]


# --- field helpers ----------------------------------------------------------------------------
def _context(info: ValidationInfo) -> tuple[Mapping[str, str], Path]:
    ctx = info.context or {}
    env = ctx.get("env")
    base_dir = ctx.get("base_dir")
    return (os.environ if env is None else env), Path(base_dir) if base_dir else Path.cwd()


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Replace each ``${NAME}`` with the environment variable NAME; ``$${`` is a literal ``${``."""

    def sub(m: re.Match[str]) -> str:
        text = m.group(0)
        if text == "$${":
            return "${"
        name = m.group(1)
        if name is None:
            raise ValueError("unterminated '${' (write '$${' for a literal '${')")
        if not _ENV_NAME_RE.fullmatch(name):
            raise ValueError(f"invalid environment variable reference ${{{name}}}")
        if name not in env:
            raise ValueError(f"environment variable {name} is not set")
        return env[name]

    return _ENV_REF_RE.sub(sub, value)


def _is_loopback(host: str) -> bool:
    h = host.strip("[]").lower()
    if h == "localhost" or h.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def host_key(host: str) -> str:
    """What two hosts are compared by for port clashes: case-insensitive, loopback names as one."""
    return "loopback" if _is_loopback(host) else host.strip("[]").lower()


def _check_host(value: str) -> str:
    """A host name or IP that peers can reach; IPv6 is stored in brackets so HOST:PORT works."""
    host = value.strip()
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ip = ipaddress.ip_address(bare)
    except ValueError:
        ip = None
    if ip is not None:
        if ip.is_unspecified:
            raise ValueError(f"{host} is a listen-all address; give one peers can connect to")
        return f"[{ip.compressed}]" if ip.version == 6 else ip.compressed
    if host != bare:
        raise ValueError(f"{host!r} is not an IPv6 address")
    labels = host.rstrip(".").split(".")
    if not host or len(host) > 253 or not all(_HOST_LABEL_RE.fullmatch(lb) for lb in labels):
        raise ValueError(
            f"{value!r} is not a host name or IP address (no scheme, port or path: "
            "e.g. alice.example or 10.0.0.5)"
        )
    return host


def _check_broker_url(url: str) -> str:
    hint = "expected redis[s]://USER:PASSWORD@HOST:PORT/DB"
    special = "percent-encode / @ : # ? in the password (e.g. / as %2F)"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # never echo the URL: it holds the password
        raise ValueError(f"not a valid URL; {hint}; {special}") from None
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError(f"scheme must be redis:// or rediss://, got {parts.scheme or 'none'!r}")
    if not parts.hostname:
        raise ValueError(f"no host; {hint}")
    try:
        _check_host(parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]")
    except ValueError:
        raise ValueError(f"invalid host; {hint}; {special}") from None
    if not parts.username:
        raise ValueError(f"no user name (the coordinator's Redis ACL user); {hint}")
    if parts.password is None or not unquote(parts.password).strip():
        raise ValueError(f"no password; {hint}")
    password = unquote(parts.password).strip()
    if password.lower() in PLACEHOLDER_PASSWORDS or (
        password.startswith("<") and password.endswith(">")
    ):
        raise ValueError(
            "the password is a placeholder; put a real secret in an environment variable "
            "and write ${VAR} in its place"
        )
    if parts.path not in ("", "/") and not re.fullmatch(r"/\d+", parts.path):
        raise ValueError(f"the database must be a number such as /0; {hint}")
    if port is not None and not (0 < port < 65536):
        raise ValueError(f"port {port} is out of range")
    for value in parse_qs(parts.query).get("ssl_cert_reqs", []):
        if value.lower() not in ("required", "cert_required"):
            raise ValueError(f"ssl_cert_reqs={value} turns off certificate checks; remove it")
    return url


def _redact(url: str) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.partition(":")[0]
        netloc = f"{user}:***@{hostport}"
    return urlunsplit(parts._replace(netloc=netloc))


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
            claims.append((name, "spu_ports", spec.spu_host, spec.spu_ports))
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
            spec.fed_address(jp.fed)  # raises if outside the party's ranges
            spec.spu_address(jp.spu)
            out[name] = PartyEndpoints(spec.fed_host, jp.fed, spec.spu_host, jp.spu)
        return out


# --- loading ----------------------------------------------------------------------------------
def _key_matches(key: yaml.Node, seg: Any) -> bool:
    if not isinstance(key, yaml.ScalarNode):
        return False
    if key.tag.endswith(":bool") and isinstance(seg, int):  # `on:`/`no:` are booleans in YAML 1.1
        return (key.value.lower() in ("yes", "true", "on")) == bool(seg)
    return key.value == str(seg)


def _walk(node: yaml.Node, loc: tuple[Any, ...]) -> tuple[int, int, str]:
    """(1-based line of the deepest node `loc` reaches, how many segments of `loc` it reached,
    the dotted path as spelled in the file).

    A mapping entry's line is its key's line; a trailing "[key]" (pydantic's marker for an
    invalid dict key) counts as reached."""
    line = node.start_mark.line + 1
    names = [str(seg) for seg in loc if seg != "[key]"]
    for depth, seg in enumerate(loc):
        if seg == "[key]":
            return line, len(loc), ".".join(names)
        if isinstance(node, yaml.MappingNode):
            hit = None
            for k, v in node.value:  # the last duplicate wins, as in the constructed data
                if _key_matches(k, seg):
                    hit = (k, v)
            if hit is None:
                return line, depth, ".".join(names)
            line, node = hit[0].start_mark.line + 1, hit[1]
            names[depth] = hit[0].value
        elif isinstance(node, yaml.SequenceNode) and isinstance(seg, int) and seg < len(node.value):
            node = node.value[seg]
            line = node.start_mark.line + 1
        else:
            return line, depth, ".".join(names)
    return line, len(loc), ".".join(names)


def _duplicates(node: yaml.Node, path: str, out: list[tuple[int, str, str]]) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for k, v in node.value:
            key = k.value if isinstance(k, yaml.ScalarNode) else None
            sub = f"{path}.{key}" if path else str(key)
            if key is not None and key != "<<":
                line = k.start_mark.line + 1
                if key in seen:
                    out.append((line, sub, f"duplicate key (first defined on line {seen[key]})"))
                else:
                    seen[key] = line
            _duplicates(v, sub, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _duplicates(item, f"{path}[{i}]", out)


def _message(err: Mapping[str, Any], loc: tuple[Any, ...]) -> str:
    kind, msg = err["type"], err["msg"]
    if kind == "extra_forbidden":
        model = {1: Topology, 2: PartyDefaults}.get(len(loc), PartySpec)
        allowed = sorted(model.model_fields)
        return f"unknown field (allowed: {', '.join(allowed)})"
    if kind == "missing":
        return "required field is missing"
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return f"expected a mapping, got {type(err.get('input')).__name__}"
    if kind == "literal_error" and loc == ("version",):
        return "unsupported version; this coordinator reads version 1"
    return msg.removeprefix("Value error, ")


def parse_topology(
    text: str,
    *,
    source: str = "<topology>",
    base_dir: Path | str | None = None,
    env: Mapping[str, str] | None = None,
) -> Topology:
    """Validate topology YAML text. Relative CA paths are relative to `base_dir` (default: cwd);
    ${VAR} is read from `env` (default: os.environ)."""
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        context = exc.context or ""
        cmark = exc.context_mark
        if context and cmark is not None and mark is not None and cmark.line != mark.line:
            context += f" (line {cmark.line + 1})"
        problem = " ".join(p for p in (context, exc.problem) if p) or "invalid YAML"
        line = mark.line + 1 if mark is not None else None
        raise TopologyError(
            [TopologyIssue(source, line, "", f"YAML syntax error: {problem}")]
        ) from None
    except yaml.YAMLError as exc:
        raise TopologyError([TopologyIssue(source, None, "", f"YAML error: {exc}")]) from None
    finally:
        loader.dispose()
    if root is None:
        raise TopologyError([TopologyIssue(source, None, "", "the file is empty")])

    dups: list[tuple[int, str, str]] = []
    _duplicates(root, "", dups)
    if dups:
        raise TopologyError([TopologyIssue(source, ln, p, m) for ln, p, m in dups])

    context = {"env": env, "base_dir": Path(base_dir).absolute() if base_dir is not None else None}
    try:
        topology = Topology.model_validate(data, context=context)
    except ValidationError as exc:
        issues: dict[tuple[str, str], TopologyIssue] = {}
        for err in exc.errors(include_input=True, include_url=False):
            loc = tuple(err["loc"])
            line, reached, path = _walk(root, loc)
            # A field the party does not set itself came from `defaults:`; point there.
            if loc[:1] == ("parties",) and reached == 2 and len(loc) >= 3 and loc[2] != "[key]":
                dloc = ("defaults", *loc[2:])
                dline, dreached, dpath = _walk(root, dloc)
                if dreached == len(dloc):
                    loc, line, path = dloc, dline, dpath
            msg = _message(err, loc)
            issues.setdefault((path, msg), TopologyIssue(source, line, path, msg))
        ordered = sorted(issues.values(), key=lambda i: (i.line or 0, i.path))
        raise TopologyError(ordered) from None
    return topology


def load_topology(path: Path | str, *, env: Mapping[str, str] | None = None) -> Topology:
    """Read and validate a topology file; raises TopologyError (file:line: field: problem)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise TopologyError(
            [TopologyIssue(str(path), None, "", f"cannot read: {reason}")]
        ) from None
    topology = parse_topology(text, source=str(path), base_dir=path.absolute().parent, env=env)
    topology._source = path
    return topology


# --- per-job ports ----------------------------------------------------------------------------
@dataclass(frozen=True)
class JobPorts:
    """The fed (gRPC) and SPU (brpc) port one party listens on for one job."""

    fed: int
    spu: int


class PortsExhausted(RuntimeError):
    """Every port of a party's range is in use: the job must wait (or the range be widened)."""

    def __init__(self, party: str, kind: str, port_range: PortRange) -> None:
        self.party, self.kind, self.port_range = party, kind, port_range
        super().__init__(
            f"no free {kind} port for party {party}: all {len(port_range)} ports of "
            f"{kind}_ports {port_range} are in use"
        )


def pick_ports(
    topology: Topology,
    parties: Iterable[str],
    in_use: Mapping[str, Collection[int]] | None = None,
    after: Mapping[str, JobPorts] | None = None,
) -> dict[str, JobPorts]:
    """Pick one fed and one SPU port per party for a new job: the lowest port of each range
    that is not in `in_use[party]` — or, with `after[party]`, the first free port above that
    party's previous pick, wrapping around (round robin). Pure and deterministic;
    all-or-nothing (raises PortsExhausted naming the party and range, KeyError for an unknown
    party)."""
    in_use = in_use or {}
    after = after or {}
    out: dict[str, JobPorts] = {}
    for name in parties:
        if name in out:
            raise ValueError(f"party {name} is listed twice")
        spec = topology.party(name)
        used = in_use.get(name, ())
        picked = []
        prev = after.get(name)
        for kind, rng in (("fed", spec.fed_ports), ("spu", spec.spu_ports)):
            order: Iterable[int] = rng
            if prev is not None:
                last = prev.fed if kind == "fed" else prev.spu
                order = [*(p for p in rng if p > last), *(p for p in rng if p <= last)]
            port = next((p for p in order if p not in used), None)
            if port is None:
                raise PortsExhausted(name, kind, rng)
            picked.append(port)
        out[name] = JobPorts(*picked)
    return out


class PortPool:
    """In-memory bookkeeping around `pick_ports`: ports held per key (e.g. execution_id).

    `cooldown_s` keeps released ports out of use for a while (a listener that just closed may
    still hold its port). After a coordinator restart, `hold()` the ports of every
    non-terminal execution (from the database) before acquiring new ones.
    """

    def __init__(
        self,
        topology: Topology,
        *,
        cooldown_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        rotate: bool = False,
    ) -> None:
        """`rotate`: hand out ports round robin from a random starting point, so that a port
        comes back only after the whole range — a job's listener that is still closing, or a
        previous coordinator process's last job, is not handed the same port again."""
        self.topology = topology
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._held: dict[str, dict[str, JobPorts]] = {}
        self._cooling: list[tuple[float, str, int]] = []
        self._last: dict[str, JobPorts] | None = None
        if rotate:
            import random

            self._last = {}
            for name in topology.names:
                spec = topology.party(name)
                self._last[name] = JobPorts(
                    random.choice(list(spec.fed_ports)), random.choice(list(spec.spu_ports))
                )

    def in_use(self) -> dict[str, set[int]]:
        now = self._clock()
        self._cooling = [c for c in self._cooling if c[0] > now]
        used: dict[str, set[int]] = {}
        for assignment in self._held.values():
            for party, jp in assignment.items():
                used.setdefault(party, set()).update((jp.fed, jp.spu))
        for _, party, port in self._cooling:
            used.setdefault(party, set()).add(port)
        return used

    def acquire(self, key: str, parties: Iterable[str]) -> dict[str, JobPorts]:
        if key in self._held:
            raise ValueError(f"ports for {key!r} are already held")
        assignment = pick_ports(self.topology, parties, self.in_use(), self._last)
        self._held[key] = assignment
        if self._last is not None:
            self._last.update(assignment)
        return dict(assignment)

    def hold(self, key: str, assignment: Mapping[str, JobPorts]) -> None:
        """Mark an existing assignment as in use (restoring state after a restart)."""
        if key in self._held:
            raise ValueError(f"ports for {key!r} are already held")
        for party, jp in assignment.items():
            spec = self.topology.party(party)
            spec.fed_address(jp.fed)  # raises if outside the party's ranges
            spec.spu_address(jp.spu)
        self._held[key] = dict(assignment)

    def release(self, key: str) -> None:
        """Free a key's ports (idempotent); with a cooldown they come back later."""
        assignment = self._held.pop(key, None)
        if assignment and self.cooldown_s > 0:
            until = self._clock() + self.cooldown_s
            for party, jp in assignment.items():
                self._cooling += [(until, party, jp.fed), (until, party, jp.spu)]

    @property
    def held(self) -> dict[str, dict[str, JobPorts]]:
        return {k: dict(v) for k, v in self._held.items()}
