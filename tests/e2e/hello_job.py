"""A job type defined under tests/ only — the `hello` task of the original design notes, as a
two-party job — to show that a job type is one module: its typed parameters, its checks before
any SecretFlow work, what it runs inside SecretFlow, its result, and what each party learns.
A node runs it when its settings name this module (NODE_JOB_MODULES=tests.e2e.hello_job);
nothing under node/ names it.

Each party computes its greeting in a Ray task of its own party (RayFed), and every party gets
every greeting over the cross-silo link (`fed.get`): a party learns the others' greetings and
nothing else.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from node.contract import Stage, TaskParams
from node.jobtypes.spec import JobContext, JobType, Prepared, read_task_config
from node.settings import NodeSettings


class HelloConfig(BaseModel):
    """task_config of a hello job."""

    model_config = ConfigDict(extra="forbid")
    task_type: Literal["hello"]
    greeting: str = Field(default="hello", min_length=1, max_length=64, pattern=r"^[\w ,.!-]+$")


class HelloPrepared(Prepared):
    greeting: str


def prepare(params: TaskParams, settings: NodeSettings) -> HelloPrepared:
    cfg = read_task_config(params, HelloConfig, "hello")
    return HelloPrepared(greeting=cfg.greeting)


def run(prepared: HelloPrepared, ctx: JobContext) -> dict[str, Any]:
    import fed

    def greet(party: str, greeting: str) -> str:  # nested: sent to the Ray worker by value
        return f"{greeting} from {party}"

    parties = list(ctx.params.sf_init_config.parties)
    ctx.report(Stage.ALGORITHM_RUNNING, 0.6)
    greetings = [fed.remote(greet).party(p).remote(p, prepared.greeting) for p in parties]
    heard = fed.get(greetings)  # each party's own greeting goes to every other party
    return {
        "party": ctx.params.party,
        "heard": dict(zip(parties, heard, strict=True)),
        "devices": sorted(ctx.devices),
    }


JOB = JobType(name="hello", prepared=HelloPrepared, prepare=prepare, run=run, needs_spu=False)
