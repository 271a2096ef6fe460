"""The PSI kind: the coordinator's side of node/jobtypes/psi.py.

What each party learns, per protocol and party count (`who_learns`), read in SPU 0.9.3b0's PSI
library (secretflow/psi v0.5.0.dev241115; docs/node.md "Who learns what" has the sources).
"""

from __future__ import annotations

from typing import Any

from coordinator.jobkinds.spec import JobKind
from coordinator.schemas import PSIJobCreate
from node.contract import PSI_PARTY_COUNTS, PSI_PROTOCOLS, short_psi_protocol

TWO_PARTY = ("PROTOCOL_RR22", "PROTOCOL_ECDH", "PROTOCOL_KKRT")
SIZES = "every party's number of distinct keys"


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


def who_learns(request: PSIJobCreate) -> dict[str, str]:
    """Party → what it learns of the others' data in this PSI (before launch)."""
    parties, receiver = request.party_names(), request.receiver
    protocol = str(request.protocol)
    # the bucket PSI (ECDH and every N-party type) compares a digest of every party's keys first
    sizes = SIZES
    if protocol not in ("PROTOCOL_RR22", "PROTOCOL_KKRT"):
        sizes = f"{SIZES} and whether all the key sets are identical"
    if protocol in TWO_PARTY:
        nothing = f"{sizes}; nothing of the intersection, not even its size"
        said = {p: sizes if p == receiver else nothing for p in parties}
    elif protocol == "ECDH_PSI_3PC":
        said = _three_pc(parties, receiver, sizes)
    else:
        said = _npc(parties, receiver, sizes)
    if request.broadcast_result:  # every party gets the result: what it learned besides stays
        return {
            p: f"{_result(parties, p)} (broadcast_result); {said[p].split('; nothing')[0]}"
            for p in parties
        }
    return {p: f"{_result(parties, p)}; {said[p]}" if p == receiver else said[p] for p in parties}


def _result(parties: list[str], party: str) -> str:
    others = [p for p in parties if p != party]
    hold = "holds" if len(others) == 1 else "hold"
    return f"the intersection: which of its own keys {_joined(others)} {hold} too"


def _three_pc(parties: list[str], receiver: str, sizes: str) -> dict[str, str]:
    """ECDH_PSI_3PC (ecdh_3pc_psi.cc): the receiver is the master; the party after it in rank
    order (the sorted names) the calculator, which learns the size of its intersection with the
    third (the partner), who learns no intersection at all."""
    r = parties.index(receiver)
    calc, partner = parties[(r + 1) % 3], parties[(r + 2) % 3]
    pair = f"the size of {calc} ∩ {partner}"
    return {
        receiver: f"{pair}; {sizes}",
        calc: f"{pair}, not which keys; {sizes}",
        partner: f"{sizes}; nothing of any intersection",
    }


def _npc(parties: list[str], receiver: str, sizes: str) -> dict[str, str]:
    """ECDH_PSI_NPC / KKRT_PSI_NPC (nparty_psi.cc): rounds of two-party PSIs, the receiver
    against the largest set, the other parties paired smallest with largest; the smaller of a
    pair receives and goes on, the sizes of what each holds after a round are shared."""
    rounds = f"{sizes}; the size of every party's intermediate intersection after each round"
    if len(parties) == 3:  # the receiver meets each in turn: the others never receive
        other = f"{rounds}; nothing of which keys"
    else:
        other = (
            f"{rounds}; if its set is among the smaller ones, which of its own keys are in its "
            "intermediate intersection with the party (or parties) it was paired with — the keys, "
            "not only their number"
        )
    return {p: rounds if p == receiver else other for p in parties}


def _joined(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def protocols_note() -> str:
    two = ", ".join(short_psi_protocol(p) for p in TWO_PARTY)
    return (
        f"Two parties: {two} (RR22 the fastest). Three: ECDH_3PC (reveals least: one pairwise "
        "intersection size, to one party), ECDH_NPC or KKRT_NPC. Four or more: ECDH_NPC or "
        "KKRT_NPC (some parties learn intermediate intersections)."
    )


# the form's protocol select: the protocols that run for a party count, the default first
NOTES = {
    "PROTOCOL_RR22": "fastest",
    "ECDH_PSI_3PC": "reveals least",
    "ECDH_PSI_NPC": "a tree of two-party ECDH PSIs",
    "KKRT_PSI_NPC": "a tree of two-party KKRT PSIs",
}
PROTOCOL_FACTS = [
    {
        "name": short_psi_protocol(p),
        "parties": list(PSI_PARTY_COUNTS[p]),
        "note": NOTES.get(p, ""),
    }
    for p in PSI_PROTOCOLS
]

KIND = JobKind(
    name="psi",
    request=PSIJobCreate,
    task_config=task_config,
    needs_spu=True,
    summary="Launch a PSI among two to eight parties.",
    learns=(
        "The receiver learns the intersection: which of its own keys every other party holds too "
        "(with broadcast_result, every party learns it). Each party learns how many distinct keys "
        "the others put in. Between two parties the other learns nothing of the intersection; "
        "among three or more, some parties learn intersection sizes (ECDH_3PC) or intermediate "
        "intersections (ECDH_NPC, KKRT_NPC) — the form and the job's detail say exactly who. "
        + protocols_note()
    ),
    learns_for=who_learns,
    facts={"protocols": PROTOCOL_FACTS},
)
