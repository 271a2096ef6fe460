"""This party's Celery app: queues, routes, limits. `celery -A node.celery_app:app …`."""

from __future__ import annotations

import os

from celery import Celery
from celery.signals import worker_process_init, worker_process_shutdown

from node.celery_config import base_config
from node.settings import NodeSettings, get_settings

ROLE_ENV = "NODE_WORKER_ROLE"


def create_app(settings: NodeSettings) -> Celery:
    app = Celery(f"partyline-node-{settings.party}")
    app.conf.update(base_config(settings.broker_url, settings.backend_url, settings.redis_ca_file))
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
    app.conf.imports = ("node.tasks",)
    return app


app = create_app(get_settings())


@worker_process_init.connect
def _start_spare(**_kw) -> None:
    if os.environ.get(ROLE_ENV, "sf") == "sf":
        from node.runner import ensure_spare

        ensure_spare(get_settings())


@worker_process_shutdown.connect
def _stop_spare(**_kw) -> None:
    from node.runner import discard_spare

    discard_spare()
