"""Unbalanced PSI's task configs (SPU's `UbPsiConfig`, docs/node.md "Unbalanced PSI").

Two job types, both between one server (the party with the big table) and one client:
  - `ub_psi_cache` (offline, once): the server's table becomes a cache. The server keeps its
    half (its secret key, a copy of its keys, the shuffled OPRF values); the client gets its
    half (the server's OPRF value of every key). Both halves are named by the cache's name,
    belong to that one table version and that one peer, and stay in each party's data root.
  - `ub_psi` (online, each query): the client's table against the cache; the client learns
    the intersection (its own rows whose keys the server's table holds).

`made_by` ties a query to the cache job whose halves it uses: the coordinator names it, each
party refuses a half made by another job.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from node.contract.names import ID_RE, PARTY_RE
from node.contract.tasks import DuplicateMode, _Strict

CACHE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
CACHE_NAME_HELP = "1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"


def check_cache_name(v: str) -> str:
    if not CACHE_NAME_RE.fullmatch(v):
        raise ValueError(f"cache name {v!r} must be {CACHE_NAME_HELP}")
    return v


def _party(v: str) -> str:
    if not PARTY_RE.fullmatch(v):
        raise ValueError(f"invalid party name {v!r}")
    return v


def _key_columns(v: list[str]) -> list[str]:
    if not v or any(not c or not isinstance(c, str) for c in v):
        raise ValueError("keys must be a non-empty list of column names")
    return v


class _UbBase(_Strict):
    cache: str
    server: str
    client: str
    input_path: str  # the server's table (cache) or the client's (query)
    keys: list[str] = Field(min_length=1, max_length=16)  # that table's key columns
    overwrite: bool = False

    @field_validator("cache")
    @classmethod
    def _cache(cls, v: str) -> str:
        return check_cache_name(v)

    @field_validator("server", "client")
    @classmethod
    def _parties(cls, v: str) -> str:
        return _party(v)

    @field_validator("keys")
    @classmethod
    def _keys(cls, v: list[str]) -> list[str]:
        return _key_columns(v)

    @model_validator(mode="after")
    def _two(self) -> _UbBase:
        if self.server == self.client:
            raise ValueError(f"server and client are both {self.server!r}: name two parties")
        return self

    def parties(self) -> list[str]:
        return sorted((self.server, self.client))


class UbCacheTaskConfig(_UbBase):
    """Make (or, with overwrite, make again) the cache `cache` of the server's table."""

    task_type: Literal["ub_psi_cache"] = "ub_psi_cache"
    # a repeated key at the server: kept once (distinct) or the table refused (refuse); the
    # server writes no output, so `join` has nothing to join
    duplicates: DuplicateMode = DuplicateMode.DISTINCT

    @field_validator("duplicates")
    @classmethod
    def _no_join(cls, v: DuplicateMode) -> DuplicateMode:
        if v == DuplicateMode.JOIN:
            raise ValueError("duplicates 'join' has no meaning for a cache: use distinct or refuse")
        return v


class UbPsiTaskConfig(_UbBase):
    """The client's table against the cache `cache` made by the job `made_by`."""

    task_type: Literal["ub_psi"] = "ub_psi"
    made_by: str  # the id of the cache job whose halves this query uses
    output_path: str  # the client's answer, inside its data root
    duplicates: DuplicateMode = DuplicateMode.DISTINCT  # the client's repeated keys

    @field_validator("made_by")
    @classmethod
    def _made_by(cls, v: str) -> str:
        if not ID_RE.fullmatch(v):
            raise ValueError(f"made_by {v!r} is not a job id")
        return v
