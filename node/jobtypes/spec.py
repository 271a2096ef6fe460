"""What a job type is: two steps, and the refusal a `prepare` step raises."""

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
    """A job type supplies two steps: `prepare` (light, runs in the Celery task before any
    SecretFlow work: validates the task config and resolves paths inside the data root) and
    `run` (heavy, runs in the supervised job process with the devices)."""

    name: str
    prepare: Callable[[TaskParams, NodeSettings], dict[str, Any]]
    run: Callable[[dict[str, Any], TaskParams, dict, Callable[..., None]], dict[str, Any]]
    needs_spu: bool = True
