"""The coordinator's side of tests/e2e/hello_job.py — a kind of job declared under tests/ only
(COORD_JOB_KINDS=tests.e2e.hello_kind): its request (the API's body, the UI's form) and the
task_config every party gets."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from coordinator.jobkinds.spec import JobKind, JobRequest
from node.contract import PARTY_RE


class HelloRequest(JobRequest):
    """Every party says hello to every other."""

    parties: list[str] = Field(min_length=2, max_length=8, description="the parties")
    greeting: str = Field(default="hello", min_length=1, max_length=64, pattern=r"^[\w ,.!-]+$")

    @field_validator("parties")
    @classmethod
    def _parties(cls, v: list[str]) -> list[str]:
        bad = [p for p in v if not PARTY_RE.fullmatch(p)]
        if bad or len(set(v)) != len(v):
            raise ValueError(f"invalid or repeated party name(s): {', '.join(map(repr, bad or v))}")
        return v

    def party_names(self) -> list[str]:
        return sorted(self.parties)


def task_config(request: HelloRequest) -> dict[str, Any]:
    return {"task_type": "hello", "greeting": request.greeting}


KIND = JobKind(
    name="hello",
    request=HelloRequest,
    task_config=task_config,
    needs_spu=False,
    summary="Every party greets every other over the cross-silo link (a test-only kind).",
)
