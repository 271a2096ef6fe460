"""The warm-up job: starts a party set's warm session ahead of its first real job — sf.init on
the party's Ray head, the SPU device (its runtime actor and mTLS link), and one exchange over
that link — so the first PSI a user sends finds everything up. It reads no data and writes
nothing; what each party learns: that the others' nodes are up (their runtimes answered).

The coordinator sends it by itself (COORD_PREWARM, coordinator/services/prewarm.py); cold, it
would only cost time, so it runs in a session or is refused.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from node.contract import ErrorType, Stage, TaskParams
from node.jobtypes.spec import JobContext, JobRefused, JobType, Prepared, read_task_config
from node.settings import NodeSettings

NAME = "warmup"
PING = "ping"  # the SPU runtime's method that answers over the link (node.sfjob.spu_runtime)


class WarmupConfig(BaseModel):
    """task_config of a warm-up: nothing but its type."""

    model_config = ConfigDict(extra="forbid")
    task_type: Literal["warmup"]


def prepare(params: TaskParams, settings: NodeSettings) -> Prepared:
    read_task_config(params, WarmupConfig, "warm-up")
    if params.session is None:
        raise JobRefused("a warm-up runs only in a warm session", ErrorType.INVALID_PARAMS)
    return Prepared()


def run(prepared: Prepared, ctx: JobContext) -> dict[str, Any]:
    """Every party's SPU runtime swaps the attempt id with the others (the links connect)."""
    import ray

    ctx.report(Stage.ALGORITHM_RUNNING, 0.6)
    spu = ctx.devices["spu"]
    party = ctx.params.party
    refs = {p: a.checked.remote(ctx.params.execution_id, PING) for p, a in spu.actors.items()}
    own = ray.get(refs[party].get_ray_object_ref())
    return {"party": party, "warmed": sorted(ctx.params.sf_init_config.parties), "link": own}


JOB = JobType(
    name=NAME, prepared=Prepared, prepare=prepare, run=run, needs_spu=True, releases_peers=True
)
