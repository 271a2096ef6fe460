"""Field types and checks of the party registry: port ranges, ``${VAR}`` interpolation, hosts
and broker URLs. Used by the models in `coordinator.topology.model`."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, unquote, urlsplit, urlunsplit

from pydantic import PlainSerializer, PlainValidator, ValidationInfo

from coordinator.settings import PLACEHOLDER_SECRETS

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
