"""task_type → job registry.

A job type supplies two steps: `prepare` (light, runs in the Celery task before any SecretFlow
work: validates the task config and resolves paths inside the data root) and `run` (heavy, runs
in the supervised job process with the devices).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from node.contract import ErrorType, TaskParams
from node.settings import NodeSettings


class JobRefused(ValueError):
    """The node refuses the task before doing any SecretFlow work; `type` is the typed cause."""

    def __init__(self, message: str, type_: ErrorType = ErrorType.TASK_REFUSED) -> None:
        super().__init__(message)
        self.type = type_


@dataclass(frozen=True)
class JobType:
    name: str
    prepare: Callable[[TaskParams, NodeSettings], dict[str, Any]]
    run: Callable[[dict[str, Any], TaskParams, dict, Callable[..., None]], dict[str, Any]]
    needs_spu: bool = True


_REGISTRY: dict[str, JobType] = {}


def register(job: JobType) -> JobType:
    if job.name in _REGISTRY:
        raise ValueError(f"job type {job.name!r} registered twice")
    _REGISTRY[job.name] = job
    return job


def get_job(task_type: str) -> JobType:
    _load_builtin_jobs()
    try:
        return _REGISTRY[task_type]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise JobRefused(
            f"unknown task type {task_type!r} (this node runs: {known})",
            ErrorType.UNKNOWN_TASK_TYPE,
        ) from None


def known_job_types() -> list[str]:
    _load_builtin_jobs()
    return sorted(_REGISTRY)


def _load_builtin_jobs() -> None:
    import node.jobs.psi  # noqa: F401  (registers itself)
