"""PYU and SPU devices for one job (runs in the job process)."""

from __future__ import annotations

import copy

from node.contract import TaskParams
from node.settings import NodeSettings


def spu_cluster_def(params: TaskParams, settings: NodeSettings) -> dict:
    """cluster_def with this node's listen address and tls_opts on its own node only."""
    assert params.spu_config is not None
    cluster_def = copy.deepcopy(params.spu_config.cluster_def.model_dump())
    for node in cluster_def["nodes"]:
        if node["party"] == params.party:
            port = node["address"].rpartition(":")[2]
            node["listen_address"] = f"{settings.spu_listen_host}:{port}"
            node["tls_opts"] = settings.spu_tls_opts()
    return cluster_def


def create_devices(params: TaskParams, settings: NodeSettings, name: str | None = None) -> dict:
    """`name`: what the SPU device is called after (the execution id of a cold job, the
    session id of a warm session)."""
    import secretflow as sf

    from node.sfjob import spu_runtime

    spu_runtime.install()  # the PSI runtime without SecretFlow in the actor's worker
    devices: dict = {p: sf.PYU(p) for p in params.sf_init_config.parties}
    if params.spu_config is not None:
        devices["spu"] = sf.SPU(
            spu_cluster_def(params, settings),
            link_desc=dict(params.spu_config.link_desc),
            id=f"spu-{name or params.execution_id}",
        )
    return devices


def destroy_devices(devices: dict) -> None:
    """Nothing to do in Ray production mode: the job's actors end with the driver's Ray job.

    (SPU.shutdown → sfd.kill fails there: "SPURuntime has no attribute _actor_handle".)
    """
