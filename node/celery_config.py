"""Celery configuration shared by the node's worker and every client that sends to a party."""

from __future__ import annotations

import ssl

from celery import Celery
from kombu import Queue

from node.contract import QUEUES, TASK_QUEUES


def _ssl_options(url: str, ca_file) -> dict | None:
    if not url.startswith("rediss://"):
        return None
    opts = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    if ca_file:
        opts["ssl_ca_certs"] = str(ca_file)
    return opts


def base_config(broker_url: str, backend_url: str, redis_ca_file=None) -> dict:
    cfg = {
        "broker_url": broker_url,
        "result_backend": backend_url,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_queues": [Queue(q, routing_key=q) for q in QUEUES],
        "task_default_queue": "default",
        "task_routes": {name: {"queue": q, "routing_key": q} for name, q in TASK_QUEUES.items()},
        # no STARTED state in the result backend: the status stream says RUNNING, and a
        # replayed message (node.replay, dropped with Ignore) must not touch the stored result
        "task_track_started": False,
        "result_extended": True,
        "result_expires": 7 * 24 * 3600,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {"visibility_timeout": 24 * 3600},
        "enable_utc": True,
        "timezone": "UTC",
    }
    ssl_opts = _ssl_options(broker_url, redis_ca_file)
    if ssl_opts:
        cfg["broker_use_ssl"] = ssl_opts
    ssl_opts = _ssl_options(backend_url, redis_ca_file)
    if ssl_opts:
        cfg["redis_backend_use_ssl"] = ssl_opts
    return cfg


def client_app(
    broker_url: str, backend_url: str | None = None, redis_ca_file=None, signing=None
) -> Celery:
    """A Celery client for one party's queues (what the coordinator or CLI uses to send).
    With `signing` (node.signing.SigningConfig) every task and control message is signed."""
    app = Celery("partyline-client", set_as_current=False)
    app.conf.update(base_config(broker_url, backend_url or broker_url, redis_ca_file))
    if signing is not None:
        from node.signing import enable_signing

        enable_signing(app, signing)
    return app
