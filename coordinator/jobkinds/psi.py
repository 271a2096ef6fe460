"""The PSI kind: the coordinator's side of node/jobtypes/psi.py."""

from __future__ import annotations

from typing import Any

from coordinator.jobkinds.spec import JobKind
from coordinator.schemas import PSIJobCreate


def task_config(request: PSIJobCreate) -> dict[str, Any]:
    parties = request.party_names()
    return {
        "task_type": "psi",
        "keys": {p: list(request.parties[p].keys) for p in parties},
        "input_paths": {p: request.parties[p].input for p in parties},
        "output_paths": {p: request.parties[p].output for p in parties},
        "receiver": request.receiver,
        "protocol": request.protocol,
        "sort": request.sort,
        "broadcast_result": request.broadcast_result,
        "duplicates": str(request.duplicates),
        "overwrite": request.overwrite,
    }


KIND = JobKind(
    name="psi",
    request=PSIJobCreate,
    task_config=task_config,
    needs_spu=True,
    summary="Launch a PSI between two parties.",
    learns=(
        "The receiver learns the intersection: which of its own keys the other party holds too "
        "(with broadcast_result, the other party learns it as well). Each party learns how many "
        "distinct keys the other put in (RR22, ECDH and KKRT all reveal the set sizes); the "
        "party that is not the receiver learns nothing of the intersection, not even its size."
    ),
)
