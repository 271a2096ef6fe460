"""This party's Celery app: queues, routes, limits. `celery -A node.worker.celery_app:app …`."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import threading

from celery import Celery
from celery.signals import (
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
)

from node.contract import HEARTBEAT_INTERVAL_S, HEARTBEAT_KEY, HEARTBEAT_TTL_S
from node.contract.clients import SigningConfig, celery_config, enable_signing, redis_client
from node.settings import NodeSettings, get_settings
from node.worker.signing import check_task_signers

log = logging.getLogger(__name__)

ROLE_ENV = "NODE_WORKER_ROLE"


def create_app(settings: NodeSettings) -> Celery:
    app = Celery(f"partyline-node-{settings.party}")
    app.conf.update(
        celery_config(settings.broker_url, settings.backend_url, settings.redis_ca_file)
    )
    app.conf.update(
        worker_prefetch_multiplier=1,
        task_acks_late=False,  # a redelivered PSI after a crash would meet no peer: never replay
        worker_max_tasks_per_child=None,
        worker_send_task_events=True,
        task_send_sent_event=True,
        # our runner enforces the job's own limits; these only catch a wedged supervisor
        task_soft_time_limit=int(settings.task_time_limit_s + 120),
        task_time_limit=int(settings.task_time_limit_s + 300),
    )
    app.conf.imports = ("node.worker.tasks",)
    # docs/architecture.md §2.1: only tasks signed by a trusted signer (the coordinator) are accepted
    check_task_signers(settings.trusted_signers, party=settings.party, peers=settings.allowed_peers)
    enable_signing(
        app, SigningConfig(settings.key_file, settings.cert_file, settings.trusted_signers)
    )
    return app


app = create_app(get_settings())


@worker_process_init.connect
def _start_spare(**_kw) -> None:
    if os.environ.get(ROLE_ENV, "sf") == "sf":
        from node.dataroot.table_arrow import preload
        from node.launch.jobprocess import SPARE

        SPARE.keep(get_settings())
        preload()  # the first job's table check does not wait for numpy and Arrow to import


@worker_process_shutdown.connect
def _stop_spare(**_kw) -> None:
    from node.launch.jobprocess import SPARE

    SPARE.discard()


# --- heartbeat: evidence that this party's workers are alive (the coordinator watches "sf"; ------
# `python -m node health` reads both without having to send a task, which only the coordinator may)
_hb_stop = threading.Event()


def _heartbeat_loop(settings: NodeSettings, hostname: str, role: str) -> None:
    from celery.worker import state

    client = redis_client(settings.broker_url, settings.redis_ca_file, socket_timeout=5)
    key = HEARTBEAT_KEY.format(role=role)
    while not _hb_stop.is_set():
        try:
            active = sorted(
                {r.id for r in state.active_requests} | {r.id for r in state.reserved_requests}
            )
            beat = {
                "party": settings.party,
                "worker": hostname,
                "pid": os.getpid(),
                "at": dt.datetime.now(dt.UTC).isoformat(),
                "active": active,
                "problems": _problems(settings, role),
            }
            client.set(key, json.dumps(beat), ex=HEARTBEAT_TTL_S)
        except Exception as exc:  # Redis away for a moment: keep trying
            log.warning("heartbeat not written: %s", exc)
        _hb_stop.wait(HEARTBEAT_INTERVAL_S)
    with contextlib.suppress(Exception):
        client.delete(key)


def _problems(settings: NodeSettings, role: str) -> list[str]:
    """The SecretFlow worker's own stack, checked every beat (cheap: one TCP connect)."""
    if role != "sf":
        return []
    from node.rayhead import head

    # (a session host that exited is restarted within seconds by node.sessions.service, and a
    # job sent meanwhile waits for it (node.sessions.client) — so it is not a reason to hold jobs)
    if not head.is_up(settings):
        return [f"Ray head: nothing answers on {settings.ray_address}"]
    return []


@worker_shutdown.connect
def _stop_session_host(**_kw) -> None:
    if os.environ.get(ROLE_ENV, "sf") == "sf":
        from node.sessions import service

        service.stop()


@worker_ready.connect
def _announce(sender=None, **_kw) -> None:
    """The SecretFlow worker's session host first — its start returns once the host listens —
    then the heartbeat, which tells the coordinator it may send jobs here."""
    role = os.environ.get(ROLE_ENV, "sf")
    if role == "sf":
        from node.sessions import service
        from node.worker import housekeeping

        housekeeping.at_start(get_settings())  # before any job: what a killed worker left
        service.start(get_settings())
    hostname = getattr(sender, "hostname", "") or ""
    threading.Thread(
        target=_heartbeat_loop,
        args=(get_settings(), hostname, role),
        name="heartbeat",
        daemon=True,
    ).start()


@worker_shutdown.connect
def _stop_heartbeat(**_kw) -> None:
    _hb_stop.set()
