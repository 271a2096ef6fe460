"""The one path of a job inside its SecretFlow process, cold or warm: cluster → devices → the
job type's run, each stage reported, timed into the job's TaskResult.

How the job reaches its cluster and devices is a `Federation`: a cold job process makes both
for its one job (`ColdFederation`); a warm session makes them for its first job and checks
every later job against them (node.sessions.driver.Session).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from node.contract import ResultStatus, Stage, TaskParams, utcnow
from node.jobtypes.spec import JobContext
from node.jobtypes.table import get_job, node_job_types
from node.settings import NodeSettings


class Federation(Protocol):
    """How a job gets its cluster (sf.init) and its devices (PYU, SPU)."""

    def join_cluster(self, params: TaskParams, settings: NodeSettings) -> None: ...

    def devices(self, params: TaskParams, settings: NodeSettings) -> dict: ...

    def job_done(self) -> dict[str, Any]:
        """After the run: the performance metrics the federation adds (a session's job count)."""
        ...


class ColdFederation:
    """A job process of its own: sf.init and the devices for this one job, torn down after."""

    def __init__(self) -> None:
        self._devices: dict | None = None

    def join_cluster(self, params: TaskParams, settings: NodeSettings) -> None:
        from node.sfjob import cluster

        cluster.init_cluster(params, settings)

    def devices(self, params: TaskParams, settings: NodeSettings) -> dict:
        from node.sfjob import devices

        self._devices = devices.create_devices(params, settings)
        return self._devices

    def job_done(self) -> dict[str, Any]:
        return {}

    def teardown(self) -> float:
        """sf.shutdown after the result; the seconds it took."""
        from node.sfjob import cluster, devices

        s = time.perf_counter()
        devices.destroy_devices(self._devices or {})
        cluster.shutdown_cluster()
        return time.perf_counter() - s


def run_stages(
    params: TaskParams,
    prepared: dict[str, Any],
    settings: NodeSettings,
    federation: Federation,
    report: Callable[..., None],
) -> dict[str, Any]:
    """Run one job through its stages; its TaskResult (as JSON) when it succeeded."""
    job = get_job(params.task_type, node_job_types(settings))
    started_at = utcnow()
    t0 = time.perf_counter()
    federation.join_cluster(params, settings)
    t1 = time.perf_counter()
    report(Stage.CLUSTER_INITIALIZED, 0.3)
    devs = federation.devices(params, settings)
    t2 = time.perf_counter()
    report(Stage.DEVICES_READY, 0.4)
    report(Stage.ALGORITHM_RUNNING, 0.5)
    context = JobContext(params, devs, report)
    output = job.run(job.load(prepared), context)
    t3 = time.perf_counter()
    report(Stage.ALGORITHM_DONE, 0.95)
    timings = {"cluster_init_s": t1 - t0, "device_init_s": t2 - t1, "algorithm_s": t3 - t2}
    return success_result(params, output, started_at, devs, timings, federation.job_done())


def release_peers(
    params: TaskParams,
    note: str,
    settings: NodeSettings,
    federation: Federation,
) -> dict[str, Any]:
    """This party refused the job (a warm session's driver): where the job type's `run` makes
    its first cross-party step — the SPU runtimes' attempt check, one RayFed call per runtime —
    this party's runtime swaps the refusal note instead, so every peer's `run` ends at once with
    PeerRefused and the session's fed and SPU links stay in step."""
    import ray

    from node.sfjob.spu_runtime import REFUSED

    job = get_job(params.task_type, node_job_types(settings))
    if not job.releases_peers:
        raise ValueError(f"job type {job.name!r} cannot release its peers")
    federation.join_cluster(params, settings)
    spu = federation.devices(params, settings)["spu"]
    refs = {p: actor.checked.remote(note, REFUSED) for p, actor in spu.actors.items()}
    ray.get(refs[params.party].get_ray_object_ref())
    return {"released": sorted(p for p in params.sf_init_config.parties if p != params.party)}


def success_result(
    params: TaskParams,
    output: dict[str, Any],
    started_at: Any,
    devs: dict,
    timings: dict[str, float],
    extra: dict[str, Any],
) -> dict[str, Any]:
    """The TaskResult dict of a job that succeeded (its timings in seconds)."""
    return {
        "status": ResultStatus.SUCCESS.value,
        "result": output,
        "error": None,
        "performance_metrics": {
            **{name: round(s, 3) for name, s in timings.items()},
            "teardown_s": 0.0,
            "total_s": round(sum(timings.values()), 3),
            **extra,
        },
        "task_metadata": {
            "task_id": params.task_id,
            "subtask_id": params.subtask_id,
            "execution_id": params.execution_id,
            "party": params.party,
            "task_type": params.task_type,
            "started_at": started_at.isoformat(),
            "completed_at": utcnow().isoformat(),
            "devices_used": sorted(devs),
        },
    }
