"""Names both sides use: queues, streams, task names, ids, heartbeat keys, size and time limits."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import uuid

# --- queues, streams, task names --------------------------------------------------------------
SECRETFLOW_QUEUE = "secretflow_queue"
DEFAULT_QUEUE = "default"
WEB_QUEUE = "web_queue"
QUEUES = (SECRETFLOW_QUEUE, DEFAULT_QUEUE, WEB_QUEUE)

STATUS_STREAM = "task_status_stream"
STATUS_CHANNEL = "task_status_events"

TASK_EXECUTE = "tasks.secretflow.execute_task"
TASK_HELLO = "tasks.secretflow.hello.hello_task"
TASK_HEALTH = "tasks.node.ops.health"
TASK_LIST_DATASETS = "tasks.node.list_datasets"

TASK_QUEUES = {
    TASK_EXECUTE: SECRETFLOW_QUEUE,
    TASK_HELLO: WEB_QUEUE,
    TASK_HEALTH: WEB_QUEUE,
    TASK_LIST_DATASETS: WEB_QUEUE,
}

# each worker's liveness, refreshed in the party's own Redis: the coordinator watches "sf",
# `python -m node health` reads both (it cannot send a task: only the coordinator signs tasks)
WORKER_ROLES = ("sf", "web")
HEARTBEAT_KEY = "node_heartbeat:{role}"
HEARTBEAT_INTERVAL_S = 5
HEARTBEAT_TTL_S = 15
# how far ahead a task's deadline may be: the node refuses a later one (and the coordinator
# never sends one), so its record of executed task ids (node.worker.replay) can expire safely
MAX_DEADLINE_AHEAD_S = 7 * 24 * 3600

PARTY_RE = re.compile(r"[a-z][a-z0-9_-]{0,31}")  # always used with fullmatch
ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")  # always used with fullmatch


def task_request_id(execution_id: str, party: str) -> str:
    """Celery task id of one party's task in one attempt."""
    return f"{execution_id}.{party}"


def new_execution_id() -> str:
    return f"exe-{uuid.uuid4().hex[:16]}"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# what the coordinator accepts from a party: a longer status event or Celery result is refused
# and counted, never stored (a node's own events stay far below: details are cut at DETAILS_MAX)
MAX_STATUS_EVENT_BYTES = 128 * 1024
MAX_RESULT_BYTES = 256 * 1024


def is_loopback_host(host: str) -> bool:
    """True for this machine only (localhost, 127.0.0.0/8, ::1): where a plain redis:// URL is
    acceptable without saying so."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


PLAINTEXT_REDIS_HINT = (
    "its password and every task would cross the network unencrypted; use rediss:// (TLS), or "
    "allow plaintext explicitly for a private network"
)


SECRETS_DIR_ENV = "PARTYLINE_SECRETS_DIR"


def secrets_dir() -> str | None:
    """Where read-only secret files are mounted (containers: /run/secrets), or None.

    Each settings class reads a field from a file named like its variable (`node_broker_url`,
    `coord_api_token`) in this directory when the variable itself is not set; the coordinator
    also takes the `${VAR}`s of its topology from files named VAR there."""
    return os.environ.get(SECRETS_DIR_ENV) or None
