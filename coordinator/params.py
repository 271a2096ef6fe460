"""Per-party task params from one template (docs/architecture.md §2): only `self_party` differs.

Pure: the caller supplies ids, public endpoints and ports; nothing secret or node-internal
goes into the params (each node adds its own listen addresses and certificates).
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

from coordinator.jobkinds.spec import JobKind, JobRequest


@dataclass(frozen=True)
class PartyEndpoints:
    """Where peers reach one party in one job (public host + the job's assigned ports)."""

    fed_host: str
    fed_port: int
    spu_host: str
    spu_port: int


def job_template(
    *,
    kind: JobKind,
    job_id: str,
    execution_id: str,
    request: JobRequest,
    endpoints: dict[str, PartyEndpoints],
    deadline: dt.datetime,
    session: Mapping[str, str | float] | None = None,
) -> dict:
    """`session`: the warm session the job runs in (node.contract.SessionRef, the same at every
    party); None (not in the params) for a cold job. The task_config is the kind's; a kind that
    needs no SPU device gets no spu_config."""
    parties = request.party_names()
    missing = [p for p in parties if p not in endpoints]
    if missing:
        raise ValueError(f"no endpoints for {', '.join(missing)}")
    return {
        "task_id": job_id,
        "subtask_id": kind.name,
        "execution_id": execution_id,
        "deadline": deadline.astimezone(dt.UTC).isoformat().replace("+00:00", "Z"),
        "sf_init_config": {
            "mode": "production",
            "parties": parties,
            "self_party": None,
            "cluster": {
                p: {"address": f"{endpoints[p].fed_host}:{endpoints[p].fed_port}"} for p in parties
            },
            "cross_silo_comm_backend": "grpc",
        },
        "spu_config": _spu_config(parties, endpoints, kind.link_desc) if kind.needs_spu else None,
        "task_config": kind.task_config(request),
        **({"session": dict(session)} if session is not None else {}),
    }


def _spu_config(
    parties: list[str], endpoints: dict[str, PartyEndpoints], link: Mapping[str, int]
) -> dict:
    return {
        "cluster_def": {
            "nodes": [
                {"party": p, "address": f"{endpoints[p].spu_host}:{endpoints[p].spu_port}"}
                for p in parties
            ],
            "runtime_config": {"protocol": "SEMI2K", "field": "FM128"},
        },
        "link_desc": {"connect_retry_times": 60, "connect_retry_interval_ms": 1000, **link},
    }


def per_party(template: dict) -> dict[str, dict]:
    """One copy of the template per party with its `self_party` filled in."""
    out = {}
    for party in template["sf_init_config"]["parties"]:
        params = copy.deepcopy(template)
        params["sf_init_config"]["self_party"] = party
        out[party] = params
    return out
