"""task_type → job type: the table of the job types this node runs.

Each module of node.jobtypes declares its `JOB`; `BUILT_IN` lists them, and a node's settings may
name more modules (NODE_JOB_MODULES) that each declare one. Nothing registers itself on import,
and node.jobtypes imports nothing from here (no import cycle).
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Iterable, Mapping
from types import MappingProxyType

from node.contract import ErrorType
from node.jobtypes import psi, ub_psi, ub_psi_cache, warmup
from node.jobtypes.spec import JobRefused, JobType
from node.settings import NodeSettings

BUILT_IN: tuple[JobType, ...] = (psi.JOB, ub_psi_cache.JOB, ub_psi.JOB, warmup.JOB)


def job_table(jobs: Iterable[JobType]) -> Mapping[str, JobType]:
    """A read-only name → job type table; two job types of one name are a programming error."""
    table: dict[str, JobType] = {}
    for job in jobs:
        if job.name in table:
            raise ValueError(f"job type {job.name!r} declared twice")
        table[job.name] = job
    return MappingProxyType(table)


JOB_TYPES = job_table(BUILT_IN)


@functools.cache
def _with_modules(modules: tuple[str, ...]) -> Mapping[str, JobType]:
    declared = []
    for name in modules:
        job = getattr(importlib.import_module(name), "JOB", None)
        if not isinstance(job, JobType):
            raise ValueError("declares no JOB (a node.jobtypes.spec.JobType)")
        declared.append(job)
    return job_table([*BUILT_IN, *declared])


def node_job_types(settings: NodeSettings) -> Mapping[str, JobType]:
    """The job types of this node: the built-in ones and those of NODE_JOB_MODULES (a module
    that cannot be used refuses every job, naming it: the node's settings are wrong)."""
    if not settings.job_modules:
        return JOB_TYPES
    try:
        return _with_modules(tuple(settings.job_modules))
    except Exception as exc:
        raise JobRefused(
            f"NODE_JOB_MODULES ({', '.join(settings.job_modules)}) cannot be used: {exc}",
            ErrorType.INTERNAL,
        ) from None


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
