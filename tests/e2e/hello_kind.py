"""The coordinator's side of tests/e2e/hello_job.py — a kind of job declared under tests/ only
(COORD_JOB_KINDS=tests.e2e.hello_kind): its request (the API's body, the UI's form) and the
task_config every party gets."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from coordinator.jobkinds.spec import JobKind, JobRequest, Parties


class HelloRequest(JobRequest):
    """Every party says hello to every other."""

    parties: Parties = Field(description="the parties, each greets every other")
    greeting: str = Field(
        default="hello",
        min_length=1,
        max_length=64,
        pattern=r"^[\w ,.!-]+$",
        description="what every party says",
    )

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
    learns="Each party learns the others' greetings, and nothing else.",
)
