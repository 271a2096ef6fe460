"""A task runs at most once on a node, however often its signed message is pushed again.

The coordinator signs each task message, so a message cannot be forged — but a captured one can
be pushed into the queue again (by anyone who can write to this party's Redis). Before it does
anything else, `execute_task` claims the task's id here (`SET … NX`); a task id that was already
claimed is a replay: it is dropped without a status event or a Celery result, logged on the
`partyline.security` logger and counted in `REFUSED_KEY` (shown by `python -m node health`).

The claim lives until the task's deadline (required, at most `MAX_DEADLINE_AHEAD_S` ahead) plus
a margin: after that a replay is refused anyway, as `DeadlinePassed`. So the record is bounded.
"""

from __future__ import annotations

import datetime as dt
import logging

import redis

from node.contract import utcnow

security_log = logging.getLogger("partyline.security")

EXECUTED_KEY = "node_executed:{task_request_id}"
REFUSED_KEY = "node_refused"  # hash: reason → count
KEEP_AFTER_DEADLINE_S = 3600


def claim(client: redis.Redis, task_request_id: str, deadline: dt.datetime) -> bool:
    """True the first time `task_request_id` is seen on this node; False for a replay."""
    ttl = int((deadline - utcnow()).total_seconds()) + KEEP_AFTER_DEADLINE_S
    key = EXECUTED_KEY.format(task_request_id=task_request_id)
    return bool(client.set(key, utcnow().isoformat(), nx=True, ex=max(ttl, 60)))


def refused(client: redis.Redis, party: str, reason: str, task_request_id: str) -> None:
    client.hincrby(REFUSED_KEY, reason, 1)
    security_log.warning(
        "party %s dropped task %s: %s (already executed on this node)",
        party,
        task_request_id,
        reason,
    )


def refused_counts(client: redis.Redis) -> dict[str, int]:
    raw = client.hgetall(REFUSED_KEY)
    return {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in sorted(raw.items())}
