"""NodeSettings: everything one party's node knows about itself (env prefix NODE_).

Secrets and node-internal addresses live here, never in task params.
"""

from __future__ import annotations

import socket
from functools import lru_cache
from pathlib import Path
from typing import Annotated
from urllib.parse import urlparse

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from node.contract import PARTY_RE, PLAINTEXT_REDIS_HINT, is_loopback_host

PLACEHOLDER_SECRETS = {"", "changeme", "change-me", "changethis", "password", "secret", "redis"}


class NodeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NODE_", env_file=None, extra="ignore")

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

    # this party's Ray head (never reachable from other parties)
    ray_address: str = "127.0.0.1:6379"
    ray_node_ip: str = "127.0.0.1"
    ray_temp_dir: Path | None = None
    ray_num_cpus: int | None = None
    ray_node_manager_port: int = 0
    ray_object_manager_port: int = 0
    ray_client_server_port: int = 10001
    ray_dashboard_agent_listen_port: int = 52365
    ray_dashboard_agent_grpc_port: int = 0
    ray_metrics_export_port: int = 0
    ray_runtime_env_agent_port: int = 0
    ray_min_worker_port: int = 10002
    ray_max_worker_port: int = 19999

    # supervision
    start_timeout_s: float = Field(
        default=120.0, description="cross-silo links must be up within this many seconds"
    )
    task_time_limit_s: float = Field(default=6 * 3600.0, description="hard limit of one job")
    worker_concurrency: int = 2
    spare_runner: bool = Field(
        default=True, description="keep one job process pre-started (secretflow already imported)"
    )
    worker_name: str = Field(default_factory=socket.gethostname)
    log_level: str = "info"

    @field_validator("party")
    @classmethod
    def _party(cls, v: str) -> str:
        if not PARTY_RE.fullmatch(v):
            raise ValueError(f"invalid party name {v!r}: lower-case letters, digits, _ or -")
        return v

    @field_validator("allowed_peers", mode="before")
    @classmethod
    def _peers(cls, v):
        if isinstance(v, str):
            return [p.strip() for p in v.split(",") if p.strip()]
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

    @property
    def backend_url(self) -> str:
        return self.result_backend or self.broker_url

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


@lru_cache(maxsize=1)
def get_settings() -> NodeSettings:
    return NodeSettings()
