"""How long the coordinator keeps what it stores: finished jobs, with their party tasks and
timelines, are deleted once they ended longer ago than the retention (`COORD_RETENTION_DAYS`,
`python -m coordinator prune`; the Ansible role runs it daily). Open jobs are never touched."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from coordinator.db import transaction
from coordinator.merge import TERMINAL_JOB_STATES
from coordinator.models import Job, SecretflowTask, TaskStatusLog

BATCH = 500  # jobs deleted per transaction (short locks, bounded memory)


@dataclass
class Pruned:
    jobs: int = 0
    tasks: int = 0
    events: int = 0


def prune(db: sessionmaker[Session], before: dt.datetime, *, dry_run: bool = False) -> Pruned:
    """Delete every job that ended before `before` (finished_at), with its tasks and timeline,
    a batch at a time; with `dry_run`, only count them."""
    out = Pruned()
    while True:
        with transaction(db) as s:
            ids = list(
                s.scalars(
                    select(Job.id)
                    .where(Job.status.in_(list(TERMINAL_JOB_STATES)), Job.finished_at < before)
                    .order_by(Job.finished_at)
                    .offset(out.jobs if dry_run else 0)
                    .limit(BATCH)
                )
            )
            if not ids:
                return out
            out.jobs += len(ids)
            if dry_run:
                out.tasks += _count(s, SecretflowTask, ids)
                out.events += _count(s, TaskStatusLog, ids)
                continue
            out.events += s.execute(
                delete(TaskStatusLog).where(TaskStatusLog.job_id.in_(ids))
            ).rowcount  # type: ignore[attr-defined]
            out.tasks += s.execute(
                delete(SecretflowTask).where(SecretflowTask.job_id.in_(ids))
            ).rowcount  # type: ignore[attr-defined]
            s.execute(delete(Job).where(Job.id.in_(ids)))


def _count(s: Session, model: type[SecretflowTask] | type[TaskStatusLog], ids: list[str]) -> int:
    from sqlalchemy import func

    return s.scalar(select(func.count()).select_from(model).where(model.job_id.in_(ids))) or 0
