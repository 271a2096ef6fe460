"""A party's Celery results: read with a size check first, and a finished task's full result
(performance metrics, output) recorded on its row."""

from __future__ import annotations

import logging

from celery import states as celery_states
from sqlalchemy.orm import Session, sessionmaker

from coordinator.db import transaction
from coordinator.intake import IntakeCounters, Refusal
from coordinator.parties import PartyClients
from coordinator.services.status import record_task_result
from node.contract import NodeTaskError
from node.contract.clients import ReplyTooLarge

log = logging.getLogger(__name__)


def celery_result(
    clients: PartyClients, counters: IntakeCounters, party: str, task_request_id: str
) -> tuple[str, object] | None:
    """A task's Celery (state, value) — unless it is over MAX_RESULT_BYTES (refused and counted,
    never loaded: the bounded client stops at the length in the reply's header) or cannot be
    read (None)."""
    try:
        return clients.task_result(party, task_request_id)
    except ReplyTooLarge as exc:
        counters.refuse(party, Refusal.RESULT_OVERSIZE, f"result of {task_request_id}", str(exc))
        return None
    except Exception as exc:
        log.debug("no celery result for %s: %s", task_request_id, exc)
        return None


def record_result(
    db: sessionmaker[Session],
    clients: PartyClients,
    counters: IntakeCounters,
    party: str,
    task_request_id: str,
) -> str | None:
    """Store a finished task's Celery result (a success's value, or the result a NodeTaskError
    carries) on its row; returns the job id `record_task_result` gives back (None: nothing to
    announce)."""
    got = celery_result(clients, counters, party, task_request_id)
    if got is None:
        return None
    state, value = got
    if state == celery_states.SUCCESS and isinstance(value, dict):
        result = value
    elif isinstance(value, NodeTaskError):
        result = value.result
    else:
        return None
    with transaction(db) as s:
        job_id = record_task_result(s, task_request_id, result)
    return job_id
