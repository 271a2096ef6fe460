"""CoordinatorSettings: one pydantic-settings class for the coordinator process (env prefix COORD_)."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from node.contract import MAX_DEADLINE_AHEAD_S, secrets_dir

PLACEHOLDER_SECRETS = {"", "changeme", "change-me", "changethis", "secret", "password", "token"}


class CoordinatorSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="COORD_", env_file=None, extra="ignore", secrets_dir=secrets_dir()
    )

    database_url: str = Field(
        default="sqlite:///var/coordinator.db",
        description="SQLAlchemy URL: sqlite:///path (default) or postgresql+psycopg://user:pw@host/db",
    )
    topology_file: Path = Field(default=Path("topology.yaml"), description="the party registry")
    api_token: str = Field(description="bearer token for the REST API and the UI login")
    start_timeout_s: float = Field(
        default=120.0, description="a party that has not started a job by then fails it"
    )
    default_deadline_s: float = Field(
        default=6 * 3600.0,
        gt=0,
        le=MAX_DEADLINE_AHEAD_S,
        description="deadline of a job submitted without one (at most 7 days: nodes refuse more)",
    )
    max_attempts: int = Field(default=2, ge=1, description="attempts per job (retryable failures)")
    max_body_bytes: int = Field(
        default=1 << 20,
        ge=1024,
        description="a request body larger than this is refused (413) before it is read whole; "
        "a job request is a few kB",
    )
    retention_days: float = Field(
        default=90.0,
        gt=0,
        description="finished jobs (tasks, timelines) older than this are deleted by "
        "`python -m coordinator prune`",
    )

    # task signing (docs/architecture.md §2.1): the coordinator's own key + certificate sign every task; the
    # nodes' certificates verify their signed control replies
    signing_key_file: Path = Field(description="the coordinator's private key (RSA, PEM)")
    signing_cert_file: Path = Field(description="the coordinator's certificate (PEM)")
    trusted_node_certs: str = Field(
        description="file, directory or glob of the party certificates (e.g. certs/*.crt)"
    )

    consumer_name: str = Field(
        default="coordinator-1", description="this process's name in each party's consumer group"
    )
    reconcile_interval_s: float = Field(default=5.0, gt=0)
    result_fallback_grace_s: float = Field(
        default=30.0,
        gt=0,
        description=(
            "a task whose Celery result is final but whose final status event has not been "
            "applied this long after (and with nothing left unread in its party's stream) is "
            "taken from the Celery result"
        ),
    )
    job_kinds: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="more kinds of job beside PSI: modules (comma-separated) that each declare "
        "a `KIND` (coordinator/jobkinds/spec.py), the coordinator's side of a job type the "
        "nodes run (NODE_JOB_MODULES)",
    )

    @field_validator("job_kinds", mode="before")
    @classmethod
    def _kinds(cls, v):
        if isinstance(v, str):
            return [m.strip() for m in v.split(",") if m.strip()]
        return v

    # warm federation sessions (coordinator/services/sessions.py)
    warm_sessions: bool = Field(
        default=True,
        description="run the jobs of one party set one after another in one warm federation "
        "session (drivers, proxies and SPU kept up between jobs) instead of a job process each",
    )
    warm_session_idle_s: float = Field(
        default=600.0,
        ge=120.0,  # the coordinator stops using a session 60 s before the nodes close it
        le=86_400.0,
        description="a node closes a warm session after this long without a job; the "
        "coordinator starts a new one 60 s before (SESSION_IDLE_MARGIN_S)",
    )
    sessions_per_party: int = Field(
        default=2,
        ge=1,
        le=64,
        description="the warm sessions a party keeps at once — its nodes' NODE_MAX_SESSIONS: a "
        "new session beyond it retires that party's least recently used idle session here too, "
        "as the node does, so no job is sent to a session a node has closed",
    )
    prewarm: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["auto"],
        description="party sets whose warm session is started ahead, as soon as all their "
        "parties are ready, and again after it ended (≈ 0.75 GB a party per set): `auto` (the "
        "registry's two parties when it has exactly two), `none`, or sets such as "
        "`alice+bob,alice+bob+carol` (comma-separated)",
    )

    @field_validator("prewarm", mode="before")
    @classmethod
    def _prewarm(cls, v):
        if isinstance(v, str):
            return [m.strip() for m in v.split(",") if m.strip()] or ["none"]
        return v

    session_secret: str | None = Field(
        default=None,
        description="signs UI session cookies (default: the API token); at least 16 characters",
    )
    session_lifetime_s: float = Field(
        default=8 * 3600.0, gt=0, description="a UI login lasts this long (then log in again)"
    )
    metrics_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="serve Prometheus metrics at /metrics on this port, apart from the API "
        "(default: not served; 0 picks a free port)",
    )
    metrics_host: str = Field(
        default="127.0.0.1", description="the address the metrics port is bound to"
    )

    @field_validator("signing_key_file", "signing_cert_file")
    @classmethod
    def _exists(cls, v: Path) -> Path:
        if not v.is_file():
            raise ValueError(f"{v} does not exist")
        return v

    @field_validator("api_token")
    @classmethod
    def _token(cls, v: str) -> str:
        if v.strip().lower() in PLACEHOLDER_SECRETS or len(v) < 16:
            raise ValueError("COORD_API_TOKEN must be a real secret of at least 16 characters")
        return v

    @field_validator("session_secret")
    @classmethod
    def _session_secret(cls, v: str | None) -> str | None:
        if v is not None and (v.strip().lower() in PLACEHOLDER_SECRETS or len(v) < 16):
            raise ValueError(
                "COORD_SESSION_SECRET must be a real secret of at least 16 characters (or unset)"
            )
        return v

    @field_validator("database_url")
    @classmethod
    def _db(cls, v: str) -> str:
        if not (v.startswith("sqlite") or v.startswith("postgresql")):
            raise ValueError("database_url must be sqlite:///… or postgresql+psycopg://…")
        return v


@lru_cache(maxsize=1)
def get_settings() -> CoordinatorSettings:
    return CoordinatorSettings()


def topology_env() -> dict[str, str]:
    """The environment the topology's `${VAR}`s are read from: os.environ, plus one file per
    variable in the secrets directory (PARTYLINE_SECRETS_DIR) for variables not set."""
    env = dict(os.environ)
    where = secrets_dir()
    if where and Path(where).is_dir():
        for f in Path(where).iterdir():
            if f.is_file() and f.name.isupper() and f.name not in env:
                env[f.name] = f.read_text().strip()
    return env
