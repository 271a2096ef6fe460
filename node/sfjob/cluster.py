"""sf.init in Ray production mode against this party's own Ray head (runs in the job process)."""

from __future__ import annotations

from node.contract import TaskParams
from node.settings import NodeSettings


def cluster_config(params: TaskParams, settings: NodeSettings) -> dict:
    """The coordinator's public addresses plus this node's own listen address."""
    sf = params.sf_init_config
    parties = {p: {"address": a.address} for p, a in sf.cluster.items()}
    own_port = sf.cluster[sf.self_party].address.rpartition(":")[2]
    parties[sf.self_party]["listen_addr"] = f"{settings.fed_listen_host}:{own_port}"
    return {"parties": parties, "self_party": sf.self_party}


def init_cluster(params: TaskParams, settings: NodeSettings, job_name: str | None = None) -> None:
    """`job_name`: RayFed's job name, the same at every party (the execution id of a cold job,
    the session id of a warm session)."""
    import secretflow as sf

    from node.sfjob import fedlink, rayworker

    fedlink.install()  # this party's guarded receiver for the cross-silo link
    job_name = job_name or params.execution_id
    sf.init(
        address=settings.ray_address,
        cluster_config=cluster_config(params, settings),
        tls_config=settings.tls_config(),
        job_name=job_name,
        cross_silo_comm_backend="grpc",
        cross_silo_comm_options={
            "exit_on_sending_failure": True,
            "timeout_in_ms": 120_000,
            **fedlink.comm_options(
                params.sf_init_config.parties, job_name, settings.revoked_serials()
            ),
        },
        enable_waiting_for_other_parties_ready=True,
        logging_level=settings.log_level,
        log_to_driver=True,
        runtime_env=rayworker.runtime_env(),  # no jax in the job's workers
    )


def shutdown_cluster() -> None:
    """End the job's RayFed links and Ray connection.

    Without SecretFlow's shutdown barrier: it runs a PYU task at every party and swaps the
    results, i.e. a Ray worker that imports all of SecretFlow (jax, which the job's workers do
    not have: node/sfjob/rayworker.py) only to learn that the peer's driver is still there. A PSI
    sends nothing over the fed link after its start, and each party's result is its own.
    """
    import secretflow as sf

    sf.shutdown(barrier_on_shutdown=False)
