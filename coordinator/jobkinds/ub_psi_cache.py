"""The unbalanced PSI's cache kind: the coordinator's side of node/jobtypes/ub_psi_cache.py — the
server's (big) table made into a cache, once, for one client. Queries against it: the ub_psi
kind (coordinator/jobkinds/ub_psi.py); the caches there are: coordinator/services/caches.py."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from coordinator.jobkinds.spec import PARTY_WIDGET, JobKind, JobRequest
from coordinator.schemas import dataset_name
from node.contract import PARTY_RE
from node.contract.ubpsi import CACHE_NAME_HELP, check_cache_name

CACHE_RECV_TIMEOUT_MS = 6 * 3600 * 1000  # the coordinator's default job deadline


def party_name(v: str) -> str:
    if not PARTY_RE.fullmatch(v):
        raise ValueError(f"invalid party name {v!r}")
    return v


def key_columns(v: list[str]) -> list[str]:
    if any(not k.strip() for k in v):
        raise ValueError("key column names must not be empty")
    if len(set(v)) != len(v):
        raise ValueError("key columns are repeated")
    return v


class UbCacheCreate(JobRequest):
    """Make the cache of a server's table for one client (offline, once)."""

    cache: str = Field(description=f"the cache's name: {CACHE_NAME_HELP}")
    server: str = Field(
        description="the server: the party with the big table", json_schema_extra=PARTY_WIDGET
    )
    input: str = Field(description="the server's CSV, inside its data root")
    keys: list[str] = Field(min_length=1, max_length=16, description="its key column(s)")
    client: str = Field(
        description="the one party that may query this cache", json_schema_extra=PARTY_WIDGET
    )
    duplicates: Literal["distinct", "refuse"] = Field(
        default="distinct",
        description="a key that repeats in the server's table: kept once ('distinct') or the "
        "table refused naming it ('refuse')",
    )
    overwrite: bool = Field(
        default=False, description="make the cache again in place of one of the same name"
    )

    @field_validator("cache")
    @classmethod
    def _cache(cls, v: str) -> str:
        return check_cache_name(v)

    @field_validator("server", "client")
    @classmethod
    def _party(cls, v: str) -> str:
        return party_name(v)

    @field_validator("input")
    @classmethod
    def _input(cls, v: str) -> str:
        return dataset_name(v, "input")

    @field_validator("keys")
    @classmethod
    def _keys(cls, v: list[str]) -> list[str]:
        return key_columns(v)

    @model_validator(mode="after")
    def _two(self) -> UbCacheCreate:
        if self.server == self.client:
            raise ValueError(f"server and client are both {self.client!r}: name two parties")
        return self

    def party_names(self) -> list[str]:
        return sorted((self.server, self.client))


def task_config(request: UbCacheCreate) -> dict[str, Any]:
    return {
        "task_type": "ub_psi_cache",
        "cache": request.cache,
        "server": request.server,
        "client": request.client,
        "input_path": request.input,
        "keys": list(request.keys),
        "duplicates": request.duplicates,
        "overwrite": request.overwrite,
    }


def who_learns(request: UbCacheCreate) -> dict[str, str]:
    return {
        request.server: f"nothing of {request.client}'s data (it only receives the cache)",
        request.client: f"the number of {request.server}'s distinct keys (its half of the "
        "cache holds one masked value per key); nothing of which keys",
    }


KIND = JobKind(
    name="ub_psi_cache",
    request=UbCacheCreate,
    task_config=task_config,
    needs_spu=True,
    summary="Unbalanced PSI, offline: make the cache of a big table for one client (once).",
    learns="The client learns the number of the server's distinct keys; the server nothing.",
    learns_for=who_learns,
    # the client waits for the server's first values while the server computes the OPRF of
    # every key (10M keys: ≈ 2 min on 2 cores; a session's link gives up after 120 s): the
    # cache is made cold, on a link that waits as long as a job may run
    warm=False,
    link_desc={"recv_timeout_ms": CACHE_RECV_TIMEOUT_MS},
)
