"""NodeSettings: everything one party's node knows about itself (env prefix NODE_).

Secrets and node-internal addresses live here, never in task params.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from functools import lru_cache
from pathlib import Path
from typing import Annotated
from urllib.parse import urlparse, urlsplit, urlunsplit

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from node.contract import PARTY_RE, PLAINTEXT_REDIS_HINT, is_loopback_host, secrets_dir

PLACEHOLDER_SECRETS = {"", "changeme", "change-me", "changethis", "password", "secret", "redis"}


class NodeSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="NODE_", env_file=None, extra="ignore", secrets_dir=secrets_dir()
    )

    party: str = Field(description="this node's party name, e.g. alice")
    broker_url: str = Field(
        description="this party's Redis, with credentials: redis://user:pass@host:port/0 or rediss://…"
    )
    result_backend: str | None = Field(default=None, description="defaults to broker_url")
    allow_plaintext_redis: bool = Field(
        default=False,
        description="accept a redis:// (no TLS) broker on another host (a private network)",
    )
    redis_ca_file: Path | None = Field(default=None, description="CA for rediss:// brokers")

    data_root: Path = Field(description="the only directory jobs read from and write to")
    state_dir: Path = Field(
        default=Path("/var/lib/partyline/node"), description="job logs and runner scratch files"
    )

    # mTLS material for cross-silo (gRPC) and SPU (brpc) links
    cert_file: Path
    key_file: Path
    ca_file: Path
    crl_file: Path | None = Field(
        default=None,
        description="the federation CA's revocation list (crl.pem, `python -m certs crl`): when "
        "set, the probe and the fed link refuse a revoked certificate, and a list that is not "
        "the CA's or out of date stops them (fail closed)",
    )
    trusted_signers: str = Field(
        description="the coordinator's certificate file (or a glob of coordinator "
        "certificates) whose signed tasks this node accepts; a directory, a CA or a party's "
        "certificate is refused at start; unsigned or otherwise signed tasks are rejected"
    )

    allowed_peers: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="parties this node will compute with (comma-separated)"
    )
    fed_listen_host: str = "0.0.0.0"
    spu_listen_host: str = "0.0.0.0"
    job_modules: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="more job types, beside the node's own: modules (comma-separated, e.g. "
        "`acme.jobs.hello`) that each declare a `JOB` (node/jobtypes/spec.py); importable by "
        "the worker and its job processes",
    )

    # the standing mTLS probe (node/ops/probe.py): links between parties can be checked before a job
    probe_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="port of this party's standing mTLS probe (`python -m node probe`, also run "
        "by `python -m node up`); unset: no probe server",
    )
    probe_listen_host: str = Field(
        default="0.0.0.0", description="address the probe server binds (`::` for IPv6)"
    )
    peer_probes: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict,
        description="each peer's probe address, checked by `python -m node health`: "
        "`bob=bob.example:7401,carol=10.0.0.3:7402` (IPv6 in brackets: `dave=[2001:db8::4]:7401`); "
        "every name must be in NODE_ALLOWED_PEERS",
    )

    # this party's Ray head (never reachable from other parties)
    ray_address: str = "127.0.0.1:6379"
    ray_node_ip: str = "127.0.0.1"
    ray_temp_dir: Path | None = None
    ray_num_cpus: int | None = None
    ray_node_manager_port: int = 0
    ray_object_manager_port: int = 0
    ray_runtime_env_agent_port: int = 0
    ray_min_worker_port: int = 10002
    ray_max_worker_port: int = 19999

    # supervision
    start_timeout_s: float = Field(
        default=120.0, description="cross-silo links must be up within this many seconds"
    )
    task_time_limit_s: float = Field(default=6 * 3600.0, description="hard limit of one job")
    job_log_retention_days: float = Field(
        default=14.0,
        gt=0,
        description="job logs (state dir jobs/<execution>.<party>/) older than this are removed",
    )
    worker_concurrency: int = 2
    spare_runner: bool = Field(
        default=True, description="keep one job process pre-started (secretflow already imported)"
    )
    max_ub_caches: int = Field(
        default=16,
        ge=1,
        le=10_000,
        description="unbalanced PSI cache halves this party keeps (as server or client); a "
        "cache job for a new name beyond that is refused — delete one with "
        "`python -m node caches --delete SERVER/NAME` (a cache made again under its own name "
        "replaces itself)",
    )
    max_sessions: int = Field(
        default=2,
        ge=1,
        le=64,
        description="warm federation sessions (one per party set) this node keeps at once; "
        "beyond that the least recently used idle one is closed",
    )
    worker_name: str = Field(default_factory=socket.gethostname)
    log_level: str = "info"

    # the Prometheus exporter (node/ops/metrics.py, `python -m node metrics`)
    metrics_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="port of `python -m node metrics` (Prometheus, /metrics); unset: not served",
    )
    metrics_listen_host: str = Field(
        default="127.0.0.1", description="address the metrics exporter binds"
    )

    @field_validator("party")
    @classmethod
    def _party(cls, v: str) -> str:
        if not PARTY_RE.fullmatch(v):
            raise ValueError(f"invalid party name {v!r}: lower-case letters, digits, _ or -")
        return v

    @field_validator("allowed_peers", "job_modules", mode="before")
    @classmethod
    def _peers(cls, v):
        if isinstance(v, str):
            return [p.strip() for p in v.split(",") if p.strip()]
        return v

    @field_validator("peer_probes", mode="before")
    @classmethod
    def _peer_probes(cls, v):
        if not isinstance(v, str):
            return v
        out: dict[str, str] = {}
        for item in (i.strip() for i in v.split(",")):
            if not item:
                continue
            name, sep, address = (x.strip() for x in item.partition("="))
            if not sep or not name or not address:
                raise ValueError(f"expected PARTY=HOST:PORT, got {item!r}")
            if name in out:
                raise ValueError(f"party {name!r} is given twice")
            out[name] = address
        return out

    @field_validator("peer_probes")
    @classmethod
    def _peer_probe_addresses(cls, v: dict[str, str]) -> dict[str, str]:
        for name, address in v.items():
            if not PARTY_RE.fullmatch(name):
                raise ValueError(f"invalid party name {name!r}")
            try:
                split_host_port(address)
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None
        return v

    @field_validator("broker_url", "result_backend")
    @classmethod
    def _redis_url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        url = urlparse(v)
        if url.scheme not in ("redis", "rediss"):
            raise ValueError(
                f"broker must be a redis:// or rediss:// URL, got scheme {url.scheme!r}"
            )
        if (url.password or "").lower() in PLACEHOLDER_SECRETS:
            raise ValueError(
                "the Redis URL must carry a real password (redis://user:PASSWORD@host:port/db); "
                "empty or placeholder passwords are refused"
            )
        return v

    @model_validator(mode="after")
    def _plaintext(self) -> NodeSettings:
        for name in ("broker_url", "result_backend"):
            url = getattr(self, name)
            if not url or url.startswith("rediss://") or self.allow_plaintext_redis:
                continue
            host = urlparse(url).hostname or ""
            if not is_loopback_host(host):
                raise ValueError(
                    f"NODE_{name.upper()} is redis:// (no TLS) to {host}, another host: "
                    f"{PLAINTEXT_REDIS_HINT} (NODE_ALLOW_PLAINTEXT_REDIS=true)"
                )
        return self

    @model_validator(mode="after")
    def _paths(self) -> NodeSettings:
        self.data_root = self.data_root.expanduser().resolve()
        if self.party in self.allowed_peers:
            self.allowed_peers = [p for p in self.allowed_peers if p != self.party]
        return self

    @model_validator(mode="after")
    def _probes_of_peers(self) -> NodeSettings:
        if self.party in self.peer_probes:
            raise ValueError(
                f"NODE_PEER_PROBES names {self.party!r}, this party itself: list only its peers"
            )
        strangers = sorted(set(self.peer_probes) - set(self.allowed_peers))
        if strangers:
            allowed = ", ".join(self.allowed_peers) or "none"
            raise ValueError(
                f"NODE_PEER_PROBES names {', '.join(strangers)}, not in NODE_ALLOWED_PEERS "
                f"({allowed}): add them there or remove their probe address"
            )
        return self

    @property
    def backend_url(self) -> str:
        return self.result_backend or self.broker_url

    def revoked_serials(self) -> frozenset[int]:
        """The serials NODE_CRL_FILE revokes (none without one); CertsError for a list that is
        not signed by NODE_CA_FILE or out of date."""
        if self.crl_file is None:
            return frozenset()
        from certs.revocation import revoked_serials

        return revoked_serials(self.crl_file, self.ca_file)

    def crl_stamp(self) -> tuple[int, int] | None:
        """(mtime, size) of NODE_CRL_FILE: what tells that a new list was installed."""
        if self.crl_file is None:
            return None
        try:
            st = self.crl_file.stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def for_job_process(self) -> dict:
        """These settings as a job's own process gets them (a cold job process, a session
        driver — through a pipe or the session host's socket): without the Redis passwords,
        which such a process never needs (it does not talk to Redis)."""
        data = self.model_dump(mode="json")
        for name in ("broker_url", "result_backend"):
            if data.get(name):
                data[name] = _without_password(data[name])
        return data

    @property
    def ray_port(self) -> int:
        return int(self.ray_address.rpartition(":")[2])

    def tls_config(self) -> dict[str, str]:
        """sf.init(tls_config=…) for RayFed's gRPC cross-silo links."""
        return {
            "cert": str(self.cert_file),
            "key": str(self.key_file),
            "ca_cert": str(self.ca_file),
        }

    def spu_tls_opts(self) -> dict[str, dict]:
        """tls_opts for this party's own SPU node (brpc links), server and client sides."""
        side = {
            "certificate_path": str(self.cert_file),
            "private_key_path": str(self.key_file),
            "ca_file_path": str(self.ca_file),
            "verify_depth": 1,
        }
        return {"server_ssl_opts": dict(side), "client_ssl_opts": dict(side)}


# DNS labels; `_` too, as container and compose service names have it
_HOSTNAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,62}(\.[A-Za-z0-9_][A-Za-z0-9_-]{0,62})*\.?")


def split_host_port(address: str) -> tuple[str, int]:
    """`host:port`, `10.0.0.3:port` or `[2001:db8::4]:port` → (host, port); ValueError names the
    problem. IPv6 addresses come in brackets; the host returned has none."""
    host, sep, port = address.strip().rpartition(":")
    if not sep or not host or not port:
        raise ValueError(f"address must be HOST:PORT, got {address!r}")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{address!r}: the port must be a number from 1 to 65535")
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ValueError(f"{address!r}: {host} is not an IPv6 address") from None
        return host[1:-1], int(port)
    if ":" in host:
        raise ValueError(f"{address!r}: write an IPv6 address in brackets, e.g. [{host}]:{port}")
    if not _HOSTNAME_RE.fullmatch(host):
        raise ValueError(f"{address!r}: {host!r} is not a host name or IPv4 address")
    return host, int(port)


@lru_cache(maxsize=1)
def get_settings() -> NodeSettings:
    return NodeSettings()


PASSWORD_NOT_SENT = "not-sent-to-job-processes"


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:{PASSWORD_NOT_SENT}@{host}"))
