"""node.worker.replay against a real redis-server: a task id runs once; the record is bounded."""

from __future__ import annotations

import datetime as dt
import logging

from node.contract import utcnow
from node.ops.refusals import refused, refused_counts
from node.worker.replay import EXECUTED_KEY, KEEP_AFTER_DEADLINE_S, claim


def test_a_task_id_is_claimed_once_and_the_claim_ends_after_the_deadline(redis_server):
    client = redis_server.client()
    deadline = utcnow() + dt.timedelta(hours=2)
    assert claim(client, "exe-1.alice", deadline) is True
    assert claim(client, "exe-1.alice", deadline) is False  # the same message again
    assert claim(client, "exe-2.alice", deadline) is True  # another attempt is another task
    ttl = client.ttl(EXECUTED_KEY.format(task_request_id="exe-1.alice"))
    assert 2 * 3600 < ttl <= 2 * 3600 + KEEP_AFTER_DEADLINE_S


def test_refusals_are_counted_and_logged_as_security_events(redis_server, caplog):
    client = redis_server.client()
    assert refused_counts(client) == {}
    with caplog.at_level(logging.WARNING, logger="partyline.security"):
        refused(client, "alice", "Replay", "exe-1.alice")
        refused(client, "alice", "Replay", "exe-1.alice")
    assert refused_counts(client) == {"Replay": 2}
    assert "party alice dropped task exe-1.alice: Replay" in caplog.records[0].getMessage()
