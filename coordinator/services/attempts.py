"""A job's attempts: the job states that hold one, and the tasks of the current one — shared by
the job service, dispatch and the reconciliation rules."""

from __future__ import annotations

import datetime as dt
from typing import overload

from coordinator.merge import JobState
from coordinator.models import Job, SecretflowTask
from node.contract import TERMINAL_STATUSES

# a job in these states holds an attempt: its ports, and a slot at each of its parties
ACTIVE = (JobState.DISPATCHED, JobState.RUNNING)


@overload
def aware(t: dt.datetime) -> dt.datetime: ...
@overload
def aware(t: None) -> None: ...
def aware(t: dt.datetime | None) -> dt.datetime | None:
    """A time read from the database, with its zone (a naive one is UTC)."""
    return t if t is None or t.tzinfo else t.replace(tzinfo=dt.UTC)


def deadline_of(job: Job) -> dt.datetime:
    """The job's deadline, with its zone (submit always sets one; the column allows none only
    because the first schema did)."""
    if job.deadline is None:
        raise ValueError(f"job {job.id} has no deadline")
    return aware(job.deadline)


def current_tasks(job: Job) -> list[SecretflowTask]:
    """The party tasks of the job's current attempt (execution_id)."""
    return [t for t in job.tasks if t.execution_id == job.execution_id]


def unfinished(job: Job) -> list[tuple[str, str]]:
    """(party, celery task id) of the current attempt's tasks that have not finished."""
    return [
        (t.party, t.task_request_id)
        for t in job.tasks
        if t.execution_id == job.execution_id and t.status not in TERMINAL_STATUSES
    ]
