"""The warm-up kind: the coordinator's side of node/jobtypes/warmup.py — a party set's warm
session started ahead of its first real job (sent by the coordinator itself, COORD_PREWARM;
a user may send one too)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from coordinator.jobkinds.spec import JobKind, JobRequest, Parties


class WarmupRequest(JobRequest):
    """Start the warm session of a party set: no data is read or written."""

    parties: Parties = Field(description="the party set whose session starts now")

    def party_names(self) -> list[str]:
        return sorted(self.parties)


def task_config(request: WarmupRequest) -> dict[str, Any]:
    return {"task_type": "warmup"}


KIND = JobKind(
    name="warmup",
    request=WarmupRequest,
    task_config=task_config,
    needs_spu=True,
    warms_up=True,
    summary="Start a party set's warm session now, so its first PSI does not wait for "
    "SecretFlow to start (no data is read).",
    learns="Nothing of anyone's data: each party learns that the others' nodes are up.",
)
