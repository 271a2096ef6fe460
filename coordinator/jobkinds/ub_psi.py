"""The unbalanced PSI's query kind: the coordinator's side of node/jobtypes/ub_psi.py — a
client's (small) table against a cache made before of a server's table (ub_psi_cache). The
coordinator names the cache job whose halves the parties use (`made_by`, from its records:
coordinator/services/caches.py), so a cache made again since, or made for another client, is
refused before anything is sent."""

from __future__ import annotations

from typing import Any

from pydantic import Field, ValidationInfo, field_validator, model_validator
from sqlalchemy.orm import Session

from coordinator.jobkinds.spec import CACHE_WIDGET, PARTY_WIDGET, JobKind, JobRequest
from coordinator.jobkinds.ub_psi_cache import key_columns, party_name
from coordinator.schemas import dataset_name
from coordinator.services.caches import find_cache
from node.contract import DuplicateMode
from node.contract.ubpsi import CACHE_NAME_HELP, check_cache_name


class UbPsiCreate(JobRequest):
    """A client's table against a server's cache: the client learns the intersection."""

    cache: str = Field(
        description=f"the cache's name ({CACHE_NAME_HELP}): GET /api/v1/caches",
        json_schema_extra=CACHE_WIDGET,
    )
    server: str = Field(description="the party whose cache it is", json_schema_extra=PARTY_WIDGET)
    client: str = Field(
        description="the client: the party with the small table (the cache's peer)",
        json_schema_extra=PARTY_WIDGET,
    )
    input: str = Field(description="the client's CSV, inside its data root")
    keys: list[str] = Field(min_length=1, max_length=16, description="its key column(s)")
    output: str = Field(description="the client's answer: a CSV inside its data root")
    duplicates: DuplicateMode = Field(
        default=DuplicateMode.DISTINCT,
        description="a key that repeats in the client's table: 'distinct', 'join' or 'refuse' "
        "(as for a PSI)",
    )
    overwrite: bool = Field(default=False, description="replace an output that already exists")
    made_by: str | None = Field(
        default=None,
        description="set by the coordinator: the job that made the cache (the newest of that name)",
        json_schema_extra={"readOnly": True},
    )

    @field_validator("cache")
    @classmethod
    def _cache(cls, v: str) -> str:
        return check_cache_name(v)

    @field_validator("server", "client")
    @classmethod
    def _party(cls, v: str) -> str:
        return party_name(v)

    @field_validator("input", "output")
    @classmethod
    def _paths(cls, v: str, info: ValidationInfo) -> str:
        return dataset_name(v, info.field_name or "path")

    @field_validator("keys")
    @classmethod
    def _keys(cls, v: list[str]) -> list[str]:
        return key_columns(v)

    @model_validator(mode="after")
    def _two(self) -> UbPsiCreate:
        if self.server == self.client:
            raise ValueError(f"server and client are both {self.server!r}: name two parties")
        if self.input == self.output:
            raise ValueError("output equals input; refusing to overwrite the input")
        return self

    def party_names(self) -> list[str]:
        return sorted((self.server, self.client))


def admit(request: UbPsiCreate, session: Session) -> UbPsiCreate:
    """The query bound to the newest cache of that name, or ValueError saying why none fits."""
    cache = find_cache(session, request.server, request.cache)
    if cache is None:
        raise ValueError(
            f"no cache {request.cache!r} of {request.server}: make it first (POST "
            "/api/v1/jobs/ub_psi_cache); GET /api/v1/caches lists the caches there are"
        )
    if cache.client != request.client:
        raise ValueError(
            f"cache {request.cache!r} of {request.server} was made for {cache.client}, not "
            f"{request.client}: a cache serves the one client it was made for"
        )
    return request.model_copy(update={"made_by": cache.made_by})


def task_config(request: UbPsiCreate) -> dict[str, Any]:
    assert request.made_by is not None  # admitted
    return {
        "task_type": "ub_psi",
        "cache": request.cache,
        "made_by": request.made_by,
        "server": request.server,
        "client": request.client,
        "input_path": request.input,
        "keys": list(request.keys),
        "output_path": request.output,
        "duplicates": str(request.duplicates),
        "overwrite": request.overwrite,
    }


def who_learns(request: UbPsiCreate) -> dict[str, str]:
    server, client = request.server, request.client
    return {
        client: f"the intersection: which of its own keys {server}'s table holds; the number "
        f"of {server}'s distinct keys",
        server: f"the number of {client}'s distinct keys; nothing of the intersection",
    }


KIND = JobKind(
    name="ub_psi",
    request=UbPsiCreate,
    task_config=task_config,
    needs_spu=True,
    summary="Unbalanced PSI, online: a small table against a big table's cache, in seconds.",
    learns="The client learns the intersection and the number of the server's distinct keys; "
    "the server learns the number of the client's distinct keys, nothing of the intersection.",
    learns_for=who_learns,
    admit=admit,
)
