"""What a job type is — the contract between a job type's module and the node that runs it.

A job type declares, in one module, one `JobType`:
  - `prepare` (light, in the Celery task, before any SecretFlow work): validates its typed
    task_config, checks its inputs inside the data root, claims its outputs; returns its
    `Prepared` model or raises `JobRefused`;
  - `run` (heavy, in the job's SecretFlow process, cold or warm): given that model and the
    `JobContext` (the params, the devices, the stage reporter), returns the job's result;
  - `releases_peers`: whether, in a warm session, a party that refused the job can release
    its peers (they end at once and the session is kept).
The `Prepared` model crosses from the task to the job's process as JSON and is validated there
again (`JobType.load`).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from node.contract import ErrorType, TaskParams
from node.settings import NodeSettings


class JobRefused(ValueError):
    """The node refuses the task before doing any SecretFlow work; `type` is the typed cause."""

    def __init__(self, message: str, type_: ErrorType = ErrorType.TASK_REFUSED) -> None:
        super().__init__(message)
        self.type = type_


C = TypeVar("C", bound=BaseModel)


def read_task_config(params: TaskParams, model: type[C], job: str) -> C:
    """The task's task_config as `model`, or refused (InvalidTaskParams) naming the first bad
    field: "invalid PSI task_config (keys.alice): …"."""
    try:
        return model.model_validate(params.task_config)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "task_config"
        raise JobRefused(
            f"invalid {job} task_config ({where}): {first['msg']}", ErrorType.INVALID_PARAMS
        ) from None


class Prepared(BaseModel):
    """What every job type's prepared model holds for the task that runs it: what to remove or
    release on every exit path, and what its input check cost."""

    work_dir: str | None = None  # the job's scratch folder in the data root: removed after it
    output_claim: list[str] | None = None  # an output name claimed until its rename: released
    input_check: dict[str, Any] | None = None  # the table check's counts and `check_s`

    def clean_up(self, settings: NodeSettings, execution_id: str) -> None:
        """After the job, whatever its end: nothing of it stays but its output."""
        from node.dataroot.paths import release_output

        if self.work_dir:
            shutil.rmtree(Path(self.work_dir), ignore_errors=True)
        if self.output_claim:  # renamed into place, or never will be by this job
            release_output(settings.data_root, tuple(self.output_claim), execution_id)


P = TypeVar("P", bound=Prepared)


@dataclass(frozen=True)
class JobContext:
    """What a job's run gets besides its prepared model."""

    params: TaskParams
    devices: dict  # party → PYU, and "spu" → the SPU device when the job has one
    report: Callable[..., None]  # report(stage, progress): a stage the job reached


@dataclass(frozen=True)
class JobType(Generic[P]):
    """One job type: its name (the task_type), its prepared model and its two steps."""

    name: str
    prepared: type[P]
    prepare: Callable[[TaskParams, NodeSettings], P]
    run: Callable[[P, JobContext], dict[str, Any]]
    needs_spu: bool = True
    # True: in a warm session, `run`'s first cross-party step is the SPU runtimes' attempt
    # check (`checked`, one call per runtime, as psi's) — so a party that refused the job can
    # swap a refusal there instead (node.sfjob.stages.release_peers): the peers' `run` ends at
    # once with PeerRefused and every party's session stays in step. False: the peers are
    # cancelled and the session ends.
    releases_peers: bool = False

    def load(self, data: dict[str, Any]) -> P:
        """The prepared model as the job's process receives it."""
        return self.prepared.model_validate(data)
