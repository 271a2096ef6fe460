"""The node's count of task messages it dropped (a signed message pushed into the queue again):
written by the worker (node.worker.replay), read by health (`python -m node health`).

One Redis hash of reason → count, in this party's own Redis; a handful of reasons, so bounded.
"""

from __future__ import annotations

import logging

import redis

security_log = logging.getLogger("partyline.security")

REFUSED_KEY = "node_refused"  # hash: reason → count


def refused(client: redis.Redis, party: str, reason: str, task_request_id: str) -> None:
    """Count one dropped task message and say so on the `partyline.security` logger."""
    client.hincrby(REFUSED_KEY, reason, 1)
    security_log.warning(
        "party %s dropped task %s: %s (already executed on this node)",
        party,
        task_request_id,
        reason,
    )


def refused_counts(client: redis.Redis) -> dict[str, int]:
    """reason → how many task messages were dropped for it, sorted by reason."""
    raw = client.hgetall(REFUSED_KEY)
    return {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in sorted(raw.items())}
