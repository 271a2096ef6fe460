"""A task runs at most once on a node, however often its signed message is pushed again.

The coordinator signs each task message, so a message cannot be forged — but a captured one can
be pushed into the queue again (by anyone who can write to this party's Redis). Before it does
anything else, `execute_task` claims the task's id here (`SET … NX`); a task id that was already
claimed is a replay: it is dropped without a status event or a Celery result, logged on the
`partyline.security` logger and counted (node.ops.refusals: shown by `python -m node health`).

The claim lives until the task's deadline (required, at most `MAX_DEADLINE_AHEAD_S` ahead) plus
a margin: after that a replay is refused anyway, as `DeadlinePassed`. So the record is bounded.
"""

from __future__ import annotations

import datetime as dt

import redis

from node.contract import utcnow

EXECUTED_KEY = "node_executed:{task_request_id}"
KEEP_AFTER_DEADLINE_S = 3600


def claim(client: redis.Redis, task_request_id: str, deadline: dt.datetime) -> bool:
    """True the first time `task_request_id` is seen on this node; False for a replay."""
    ttl = int((deadline - utcnow()).total_seconds()) + KEEP_AFTER_DEADLINE_S
    key = EXECUTED_KEY.format(task_request_id=task_request_id)
    return bool(client.set(key, utcnow().isoformat(), nx=True, ex=max(ttl, 60)))
