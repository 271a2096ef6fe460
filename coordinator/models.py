"""Persistence (docs/architecture.md §3): jobs, secretflow_tasks (one row per party per attempt), task_status_logs.

Status is stored Kuscia-style: the job's overall phase + one row per party with its own state,
plus the time of the last reconciliation.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, ClassVar

from sqlalchemy import JSON, DateTime, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict] = {
        dict[str, Any]: JSON,
        dt.datetime: DateTime(timezone=True),
    }


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), default="psi")
    status: Mapped[str] = mapped_column(String(16), index=True)
    request: Mapped[dict[str, Any]]
    parties: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # {"names": [...]}
    error: Mapped[str | None] = mapped_column(Text, default=None)
    # why a QUEUED job is not sent yet (a party not ready, a retry waiting for its party)
    waiting_for: Mapped[str | None] = mapped_column(Text, default=None)
    failed_party: Mapped[str | None] = mapped_column(String(32), default=None)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=1)
    execution_id: Mapped[str | None] = mapped_column(String(64), default=None)
    deadline: Mapped[dt.datetime | None] = mapped_column(default=None)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    created_at: Mapped[dt.datetime] = mapped_column(default=_now)
    updated_at: Mapped[dt.datetime] = mapped_column(default=_now, onupdate=_now)
    dispatched_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    finished_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    last_reconciled_at: Mapped[dt.datetime | None] = mapped_column(default=None)

    tasks: Mapped[list[SecretflowTask]] = relationship(
        back_populates="job", cascade="all, delete-orphan", order_by="SecretflowTask.id"
    )


class SecretflowTask(Base):
    """One party's task in one attempt (execution) of a job."""

    __tablename__ = "secretflow_tasks"
    __table_args__ = (UniqueConstraint("execution_id", "party", name="uq_task_execution_party"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    task_id: Mapped[str] = mapped_column(String(64))
    subtask_id: Mapped[str] = mapped_column(String(64))
    execution_id: Mapped[str] = mapped_column(String(64), index=True)
    party: Mapped[str] = mapped_column(String(32))
    # the column keeps its first name (no migration for a word); Python says task_request_id
    task_request_id: Mapped[str] = mapped_column("celery_task_id", String(128), unique=True)
    task_type: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    stage: Mapped[str | None] = mapped_column(String(32), default=None)
    progress: Mapped[float | None] = mapped_column(default=None)
    seq: Mapped[int] = mapped_column(Integer, default=0)
    last_event_id: Mapped[str | None] = mapped_column(String(64), default=None)
    status_at: Mapped[dt.datetime | None] = mapped_column(default=None)  # the event's timestamp
    # events of this task in the timeline (task_status_logs): the cap per task reads this
    logged_events: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    params: Mapped[dict[str, Any]]
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    performance_metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    created_at: Mapped[dt.datetime] = mapped_column(default=_now)
    started_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    finished_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    updated_at: Mapped[dt.datetime] = mapped_column(default=_now, onupdate=_now)

    job: Mapped[Job] = relationship(back_populates="tasks")


class TaskStatusLog(Base):
    """Every status event applied, once (event_id unique): the job's timeline."""

    __tablename__ = "task_status_logs"
    __table_args__ = (Index("ix_status_log_task_seq", "task_request_id", "seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(64), unique=True)
    task_request_id: Mapped[str] = mapped_column(String(128))
    job_id: Mapped[str | None] = mapped_column(String(64), index=True, default=None)
    execution_id: Mapped[str] = mapped_column(String(64))
    party: Mapped[str] = mapped_column(String(32))
    seq: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    stage: Mapped[str | None] = mapped_column(String(32), default=None)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    timestamp: Mapped[dt.datetime]
    received_at: Mapped[dt.datetime] = mapped_column(default=_now)
