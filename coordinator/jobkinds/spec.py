"""What a kind of job is, on the coordinator's side (the node's side: node/jobtypes/spec.py)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Annotated, Any, Generic, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator
from sqlalchemy.orm import Session

from node.contract import PARTY_RE

# the UI draws a field marked with this as a pick-list of the registered parties
PARTIES_WIDGET: dict[str, Any] = {"x-widget": "parties"}
# … as a select of one registered party
PARTY_WIDGET: dict[str, Any] = {"x-widget": "party"}
# … as a select of the unbalanced PSI caches there are (GET /api/v1/caches)
CACHE_WIDGET: dict[str, Any] = {"x-widget": "ub-cache"}


def _party_list(v: list[str]) -> list[str]:
    bad = [p for p in v if not PARTY_RE.fullmatch(p)]
    if bad:
        raise ValueError(f"invalid party name(s): {', '.join(map(repr, bad))}")
    repeated = sorted({p for p in v if v.count(p) > 1})
    if repeated:
        raise ValueError(f"party named twice: {', '.join(map(repr, repeated))}")
    return v


# the parties of a job, as a request field: 2 to 8 distinct names (the UI: a party pick-list)
Parties = Annotated[
    list[str],
    Field(min_length=2, max_length=8, json_schema_extra=PARTIES_WIDGET),
    AfterValidator(_party_list),
]


class JobRequest(BaseModel):
    """What every job request says besides its kind's own fields."""

    model_config = ConfigDict(extra="forbid")

    deadline: dt.datetime | None = Field(
        default=None, description="optional: past it, the job is ended at every party"
    )

    @field_validator("deadline")
    @classmethod
    def _deadline(cls, v: dt.datetime | None) -> dt.datetime | None:
        if v is not None and v.tzinfo is None:
            raise ValueError("deadline needs a time zone, e.g. 2026-11-22T10:00:00Z")
        return v

    def party_names(self) -> list[str]:
        """The parties of the job, sorted (every kind names them)."""
        raise NotImplementedError

    def check_known(self, known: Collection[str]) -> None:
        """Raise ValueError naming any party the registry does not know."""
        unknown = [p for p in self.party_names() if p not in known]
        if unknown:
            raise ValueError(
                f"unknown party {', '.join(map(repr, unknown))}; the registry has: "
                f"{', '.join(sorted(known))}"
            )


R = TypeVar("R", bound=JobRequest)


@dataclass(frozen=True)
class JobKind(Generic[R]):
    """One kind of job: its name (the nodes' task_type), its request model, the task_config
    every party gets, and whether it runs on an SPU device."""

    name: str
    request: type[R]
    task_config: Callable[[R], dict[str, Any]]
    needs_spu: bool = True
    summary: str = ""  # one line for the API's docs and the UI
    # what each party learns of the others' data, said before launch (the API's kinds, the form)
    learns: str = ""
    # the same for one request: party → what it learns (the job's detail; the form, as it is
    # filled in); unset: `learns`, for every party
    learns_for: Callable[[R], dict[str, str]] | None = None
    # a warm-up (services/prewarm.py): the jobs of its party set wait for it instead of going cold
    warms_up: bool = False
    # what the kind's own form needs to know besides the schema (GET /api/v1/jobs/kinds)
    facts: dict[str, Any] = field(default_factory=dict)
    # checked against the coordinator's records before anything is sent (a query's cache):
    # the request as it is stored and sent, or ValueError saying why not (a 422)
    admit: Callable[[R, Session], R] | None = None
    # False: every attempt runs cold (a job process and an SPU link of its own), with these
    # `link_desc` options over the default ones — a kind whose parties wait on each other
    # longer than a warm session's link allows (SPU's recv timeout, 120 s)
    warm: bool = True
    link_desc: dict[str, int] = field(default_factory=dict)

    def who_learns(self, request: R) -> dict[str, str]:
        if self.learns_for is not None:
            return self.learns_for(request)
        return {p: self.learns for p in request.party_names()}

    def load(self, data: dict[str, Any]) -> R:
        """A stored request, as it was accepted."""
        return self.request.model_validate(data)
