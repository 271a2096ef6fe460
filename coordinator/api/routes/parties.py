"""/api/v1/parties — the registry, each node's live health, and each node's datasets."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from pydantic import ValidationError

from coordinator.api.deps import Authenticated, CoordinatorDep
from coordinator.parties import PartyUnreachable
from coordinator.schemas import DatasetsOut, LinkOut, PartyOut

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v1/parties", tags=["parties"], dependencies=[Authenticated])


def party_status(coord, name: str, with_health: bool) -> PartyOut:
    spec = coord.topology.party(name)
    out = PartyOut(
        name=name,
        description=spec.description,
        broker=spec.broker_url_redacted,
        fed_host=spec.fed_host,
        spu_host=spec.spu_host,
        slots=spec.slots,
    )
    try:
        coord.clients.ping(name)
        out.reachable = True
        out.worker_alive = coord.clients.heartbeat(name) is not None
    except PartyUnreachable as exc:
        out.reachable, out.error = False, str(exc)
        return out
    if with_health:
        try:
            out.health = coord.clients.health(name, timeout=8.0)
        except Exception as exc:
            out.error = f"party {name} did not answer the health check: {type(exc).__name__}: {exc}"
        else:
            out.links, out.cert_days_left = health_links(out.health, name)
    return out


def health_links(health: object, party: str) -> tuple[list[LinkOut], int | None]:
    """The link checks and the own-certificate days to expiry of `party`'s health report (a node
    without NODE_PEER_PROBES, or of an older version, reports no links)."""
    if not isinstance(health, dict):
        return [], None
    links = []
    for raw in health.get("links") or []:
        try:
            link = LinkOut.model_validate(raw)
        except ValidationError:
            log.warning("party %s sent a malformed link check: %.200r", party, raw)
            continue
        if link.party == party:  # a node reports its own links only
            links.append(link)
    days = health.get("cert_days_left")
    return links, days if isinstance(days, int) and not isinstance(days, bool) else None


@router.get("", response_model=list[PartyOut])
def list_parties(
    coord: CoordinatorDep, health: Annotated[bool, Query(description="ask every node")] = True
) -> list[PartyOut]:
    names = coord.topology.names
    with ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
        return list(pool.map(lambda n: party_status(coord, n, health), names))


def _known(coord, party: str) -> None:
    if party not in coord.topology.names:
        raise HTTPException(
            404, f"unknown party {party!r}; the registry has: {', '.join(coord.topology.names)}"
        )


@router.get("/{party}", response_model=PartyOut)
def get_party(party: str, coord: CoordinatorDep) -> PartyOut:
    _known(coord, party)
    return party_status(coord, party, True)


@router.get("/{party}/datasets", response_model=DatasetsOut)
def datasets(party: str, coord: CoordinatorDep) -> DatasetsOut:
    """CSV files under the party's data root: names, sizes, header columns (never rows)."""
    _known(coord, party)
    try:
        return DatasetsOut.model_validate(coord.clients.datasets(party, timeout=10.0))
    except PartyUnreachable as exc:
        raise HTTPException(503, str(exc)) from exc
    except Exception as exc:
        raise HTTPException(
            504, f"party {party} did not list its datasets: {type(exc).__name__}: {exc}"
        ) from exc
