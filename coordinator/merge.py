"""Per-party task states → one job state. Pure: no I/O, no clock (DESIGN §5).

Party tasks follow the node's event statuses (plus PENDING: sent, no event yet). Applying an
event is idempotent and order-independent: an event with seq <= the task's seq changes nothing,
and a terminal party task (SUCCESS, FAILURE, CANCELLED) never changes again.

Job precedence, first match wins:
  1. the current job state is terminal            → unchanged (terminal never regresses)
  2. any party FAILURE                             → FAILED; error names the first failing party;
                                                    the other unfinished parties are to be terminated
  3. any party CANCELLED                           → CANCELLED; unfinished parties to be terminated
  4. every party SUCCESS                           → SUCCEEDED
  5. any RUNNING / PROGRESS / RETRY / SUCCESS       → RUNNING
  6. any RECEIVED                                  → DISPATCHED
  7. otherwise (all PENDING)                       → the current state
Non-terminal states never move backwards either: QUEUED < DISPATCHED < RUNNING.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from node.contract import ErrorInfo, StatusEvent, TaskStatus


class JobState(StrEnum):
    QUEUED = "QUEUED"
    DISPATCHED = "DISPATCHED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMED_OUT = "TIMED_OUT"


TERMINAL_JOB_STATES = frozenset(
    {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.TIMED_OUT}
)
_RANK = {JobState.QUEUED: 0, JobState.DISPATCHED: 1, JobState.RUNNING: 2}

PENDING = "PENDING"
TERMINAL_TASK_STATUSES = frozenset({TaskStatus.SUCCESS, TaskStatus.FAILURE, TaskStatus.CANCELLED})
_ACTIVE = frozenset({TaskStatus.RUNNING, TaskStatus.PROGRESS, TaskStatus.RETRY, TaskStatus.SUCCESS})


@dataclass(frozen=True)
class PartyTask:
    party: str
    status: str = PENDING
    seq: int = 0
    stage: str | None = None
    progress: float | None = None
    error: ErrorInfo | None = None
    result: dict[str, Any] | None = None
    last_event_id: str | None = None
    updated_at: dt.datetime | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_TASK_STATUSES


def apply_event(task: PartyTask, event: StatusEvent) -> PartyTask:
    if event.party != task.party:
        raise ValueError(f"event of party {event.party!r} applied to party {task.party!r}'s task")
    if task.terminal or event.seq <= task.seq:
        return task
    return dataclasses.replace(
        task,
        status=str(event.status),
        seq=event.seq,
        # the newest event's fields verbatim (no carry-over): the outcome is that of the
        # highest-seq event whatever the arrival order
        stage=event.data.stage,
        progress=event.data.progress,
        error=event.data.error,
        result=event.data.result,
        last_event_id=event.event_id,
        updated_at=event.timestamp,
    )


@dataclass(frozen=True)
class MergeResult:
    state: JobState
    error: str | None = None
    failed_party: str | None = None
    to_terminate: tuple[str, ...] = ()


def _first(tasks: Iterable[PartyTask]) -> PartyTask:
    floor = dt.datetime.min.replace(tzinfo=dt.UTC)
    return min(tasks, key=lambda t: (t.updated_at or floor, t.party))


def merge(current: JobState, tasks: Mapping[str, PartyTask]) -> MergeResult:
    current = JobState(current)
    if current in TERMINAL_JOB_STATES or not tasks:
        return MergeResult(current)
    values = list(tasks.values())
    unfinished = tuple(sorted(t.party for t in values if not t.terminal))
    failed = [t for t in values if t.status == TaskStatus.FAILURE]
    if failed:
        first = _first(failed)
        why = f"{first.error.type}: {first.error.message}" if first.error else "no error reported"
        return MergeResult(
            JobState.FAILED, f"party {first.party} failed: {why}", first.party, unfinished
        )
    cancelled = [t for t in values if t.status == TaskStatus.CANCELLED]
    if cancelled:
        first = _first(cancelled)
        return MergeResult(
            JobState.CANCELLED, f"party {first.party} cancelled its task", first.party, unfinished
        )
    if all(t.status == TaskStatus.SUCCESS for t in values):
        return MergeResult(JobState.SUCCEEDED)
    if any(t.status in _ACTIVE for t in values):
        proposed = JobState.RUNNING
    elif any(t.status == TaskStatus.RECEIVED for t in values):
        proposed = JobState.DISPATCHED
    else:
        proposed = current
    return MergeResult(proposed if _RANK[proposed] >= _RANK[current] else current)


def fold(
    current: JobState, tasks: Mapping[str, PartyTask], events: Iterable[StatusEvent]
) -> tuple[dict[str, PartyTask], MergeResult]:
    """Apply events (of known parties) to the tasks, then merge."""
    out = dict(tasks)
    for ev in events:
        out[ev.party] = apply_event(out[ev.party], ev)
    return out, merge(current, out)
