"""One SPU runtime call of a job, as every job type on an SPU device makes it (psi, ub_psi…).

Each party's driver calls every party's runtime actor with its own arguments; RayFed runs an
actor's call only at the actor's own party, so a peer's entry is a placeholder (never sent).
The call always goes through the runtime's check that every party runs this attempt
(node.sfjob.spu_runtime `checked`: the attempt ids swapped over the SPU link), in a warm session
and in a cold job alike. The swap is also what lets a PSI of three or more parties start safely:
the legacy bucket PSI connects its link's mesh a second time as it starts, and started the
moment the link is up it hangs in most runs (spu 0.9.3b0; bench/floor_psi.py, docs/node.md);
after the swap every party's link is settled. Each party waits only for its own actor's report: a
failure of its own runtime surfaces at once instead of hiding behind a wait for a peer's
report — which it does not need, and reading it (sfd.get / fed.get) would also send ours to
every peer.
"""

from __future__ import annotations

from typing import Any

from node.jobtypes.spec import JobContext


def own_runtime_call(
    ctx: JobContext, method: str, own: dict[str, Any], placeholder: dict[str, Any]
) -> tuple[dict[str, Any], Any]:
    """This party's runtime's report of `method(**own)` (the peers' entries get
    `placeholder`), and the call's RayFed object (what it was sent to: `sent_to`)."""
    import ray

    party, execution_id = ctx.params.party, ctx.params.execution_id
    refs = {}
    for p, actor in ctx.devices["spu"].actors.items():
        kwargs = own if p == party else placeholder
        refs[p] = actor.checked.remote(execution_id, method, **kwargs)
    return ray.get(refs[party].get_ray_object_ref()), refs[party]


def sent_to(obj: Any, parties: list[str], party: str) -> list[str]:
    """The peers a RayFed object went to over the cross-silo link (RayFed's own record)."""
    was_sent = getattr(obj, "_was_sending_or_sent_to_party", None)
    if was_sent is None:  # not a RayFed object (simulation mode): nothing crossed a link
        return []
    return [p for p in parties if p != party and was_sent(p)]
