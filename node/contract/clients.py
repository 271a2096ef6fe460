"""The client pieces both sides need to talk to a party: one Redis client factory, the Celery
configuration and client app for the party's queues, and the task-signing identity (docs/architecture.md §2.1:
the coordinator signs every task with its certificate; a worker accepts only tasks signed by a
certificate in its trusted store).

Celery's `auth` serializer is process-global (one key/cert/store per process).
"""

from __future__ import annotations

import glob
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from celery import Celery
from kombu import Queue

from node.contract.names import DEFAULT_QUEUE, QUEUES, TASK_QUEUES
from node.contract.replies import ReplyTooLarge, bounded_parser

__all__ = ["ReplyBounds", "ReplyTooLarge", "celery_config", "client_app", "redis_client"]


@dataclass(frozen=True)
class ReplyBounds:
    """The largest reply a client loads: one value (bytes), one array (elements), one reply."""

    max_bulk: int
    max_items: int
    max_reply: int


def redis_client(
    url: str,
    ca_file: Path | str | None = None,
    *,
    socket_timeout: float | None = None,
    socket_connect_timeout: float | None = None,
    health_check_interval: int = 0,
    bounds: ReplyBounds | None = None,
) -> redis.Redis:
    """A client of a party's Redis. A `rediss://` URL verifies the server against `ca_file`
    (the federation CA); a `redis://` URL ignores it. With `bounds`, a reply over them is
    refused before it is loaded (`ReplyTooLarge`): for reading what another party wrote."""
    kw: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": socket_connect_timeout,
        "health_check_interval": health_check_interval,
    }
    if bounds is not None:
        from redis.maint_notifications import MaintNotificationsConfig

        kw["parser_class"] = bounded_parser(bounds.max_bulk, bounds.max_items, bounds.max_reply)
        # a party's Redis sends no maintenance notifications: nothing to subscribe to
        kw["maint_notifications_config"] = MaintNotificationsConfig(enabled=False)
    if url.startswith("rediss://"):
        kw["ssl_cert_reqs"] = "required"
        if ca_file:
            kw["ssl_ca_certs"] = str(ca_file)
    return redis.Redis.from_url(url, **kw)


def _ssl_options(url: str, ca_file: Path | str | None) -> dict[str, Any] | None:
    if not url.startswith("rediss://"):
        return None
    opts: dict[str, Any] = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    if ca_file:
        opts["ssl_ca_certs"] = str(ca_file)
    return opts


def celery_config(
    broker_url: str, backend_url: str, redis_ca_file: Path | str | None = None
) -> dict[str, Any]:
    """The Celery settings shared by the node's workers and every client that sends to them."""
    cfg: dict[str, Any] = {
        "broker_url": broker_url,
        "result_backend": backend_url,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_queues": [Queue(q, routing_key=q) for q in QUEUES],
        "task_default_queue": DEFAULT_QUEUE,
        "task_routes": {name: {"queue": q, "routing_key": q} for name, q in TASK_QUEUES.items()},
        # no STARTED state in the result backend: the status stream says RUNNING, and a
        # replayed message (node.worker.replay, dropped with Ignore) must not touch the stored result
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


@dataclass(frozen=True)
class SigningConfig:
    key_file: Path
    cert_file: Path
    trusted: str  # a certificate file, a directory of them, or a glob

    def check(self) -> None:
        for what, path in (("signing key", self.key_file), ("signing certificate", self.cert_file)):
            if not Path(path).is_file():
                raise FileNotFoundError(f"{what} {path} does not exist")
        pattern = os.path.join(self.trusted, "*") if os.path.isdir(self.trusted) else self.trusted
        if not glob.glob(str(pattern)):
            raise FileNotFoundError(f"no trusted certificate matches {self.trusted}")


def enable_signing(app: Celery, cfg: SigningConfig) -> None:
    """Make `app` sign what it sends and accept only signed task/control messages."""
    cfg.check()
    app.conf.update(
        task_serializer="auth",
        accept_content=["auth"],
        result_serializer="json",
        result_accept_content=["json"],
        event_serializer="json",
        security_key=str(cfg.key_file),
        security_certificate=str(cfg.cert_file),
        security_cert_store=str(cfg.trusted),
        security_digest="sha256",
    )
    app.setup_security(
        allowed_serializers=["json"],  # "auth" is registered by setup_security itself
        key=str(cfg.key_file),
        cert=str(cfg.cert_file),
        store=str(cfg.trusted),
        digest="sha256",
        serializer="json",
    )


def client_app(
    broker_url: str,
    backend_url: str | None = None,
    redis_ca_file: Path | str | None = None,
    signing: SigningConfig | None = None,
) -> Celery:
    """A Celery client for one party's queues (what the coordinator or CLI uses to send).
    With `signing` every task and control message is signed."""
    app = Celery("partyline-client", set_as_current=False)
    app.conf.update(celery_config(broker_url, backend_url or broker_url, redis_ca_file))
    if signing is not None:
        enable_signing(app, signing)
    return app
