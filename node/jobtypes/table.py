"""task_type → job type: the table of the job types this node runs.

Each module of node.jobtypes declares its `JOB`; this table lists them. Nothing registers itself on
import, and node.jobtypes imports nothing from here (no import cycle).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType

from node.contract import ErrorType
from node.jobtypes import psi
from node.jobtypes.spec import JobRefused, JobType

__all__ = ["JOB_TYPES", "JobRefused", "JobType", "get_job", "job_table", "known_job_types"]


def job_table(jobs: Iterable[JobType]) -> Mapping[str, JobType]:
    """A read-only name → job type table; two job types of one name are a programming error."""
    table: dict[str, JobType] = {}
    for job in jobs:
        if job.name in table:
            raise ValueError(f"job type {job.name!r} declared twice")
        table[job.name] = job
    return MappingProxyType(table)


JOB_TYPES = job_table([psi.JOB])


def get_job(task_type: str, jobs: Mapping[str, JobType] = JOB_TYPES) -> JobType:
    try:
        return jobs[task_type]
    except KeyError:
        known = ", ".join(sorted(jobs)) or "none"
        raise JobRefused(
            f"unknown task type {task_type!r} (this node runs: {known})",
            ErrorType.UNKNOWN_TASK_TYPE,
        ) from None


def known_job_types(jobs: Mapping[str, JobType] = JOB_TYPES) -> list[str]:
    return sorted(jobs)
