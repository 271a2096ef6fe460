"""Every change of a job's state, one function per state it enters (docs/architecture.md §3).

A job is QUEUED (new, retried, or again after a failed attempt), may wait there for a party
(`waiting_for`: why it is not sent yet — data, not text in its error), is DISPATCHED as a new
attempt, RUNNING, and ends SUCCEEDED, FAILED, CANCELLED or TIMED_OUT. These functions change the
row inside the caller's transaction and nothing else: no I/O, no commits.
"""

from __future__ import annotations

import datetime as dt

from coordinator.merge import JobState
from coordinator.models import Job


class Keep:
    """A value left as it is."""


KEEP = Keep()


def queued(job: Job, *, error: str | None = None) -> None:
    """Queued to be sent (again): retried by the user (no error) or after a failed attempt
    (`error` says which and why). A reason it was waiting for stays until it is sent."""
    job.status = JobState.QUEUED
    job.error = error
    job.finished_at = None


def waiting(job: Job, why: str) -> bool:
    """A queued job not sent yet, and why (a party not ready). False when it already said so."""
    if job.waiting_for == why:
        return False
    job.waiting_for = why
    return True


def dispatched(job: Job, execution_id: str, now: dt.datetime) -> None:
    """Sent as a new attempt: no longer waiting; the previous attempt's result gone."""
    job.attempt += 1
    job.execution_id = execution_id
    job.status = JobState.DISPATCHED
    job.dispatched_at = now
    job.waiting_for = None
    job.finished_at = None
    job.result = None


def progressed(job: Job, state: JobState) -> None:
    """An attempt under way as its parties' reports merge (DISPATCHED → RUNNING)."""
    job.status = state


def ended(
    job: Job,
    state: JobState,
    now: dt.datetime,
    *,
    error: str | None = None,
    failed_party: str | Keep | None = KEEP,
) -> None:
    """SUCCEEDED, FAILED, CANCELLED or TIMED_OUT: finished now, with its cause (the party to
    blame is named by the merge or a refused fan-out; a cancel or a deadline keeps what an
    earlier attempt named)."""
    job.status = state
    job.finished_at = now
    job.error = error
    if not isinstance(failed_party, Keep):
        job.failed_party = failed_party
    job.waiting_for = None
