"""Per-party task states → one job state (docs/architecture.md §3). Pure: no I/O, no clock reads.

Party task state
  The node's event statuses (RECEIVED, RUNNING, PROGRESS, RETRY, SUCCESS, FAILURE, CANCELLED)
  plus PENDING: task sent, no event yet. A PROGRESS event is stored as PROGRESS (so the UI can
  show it) but merges exactly like RUNNING; RETRY merges like RUNNING too (the party is still at
  work). SUCCESS, FAILURE and CANCELLED are terminal.

Applying an event (`apply_event`) is idempotent and order-independent:
  - an event whose seq <= the task's seq (a duplicate or an older event) changes nothing;
  - a terminal party task never changes again;
  - otherwise the task takes the event's status, seq, event_id, timestamp and data fields
    (stage, progress, error, result) verbatim — no carry-over — so the outcome is that of the
    highest-seq event whatever the arrival order. Seqs start at 1 (0 means "no event yet").

Job precedence (`merge`), first match wins:
  1. current job state is terminal            → unchanged, nothing to terminate (but see 2)
     (also: no party tasks at all               → current, unchanged)
  2. any party FAILURE                        → FAILED; error and failed_party from `blame`:
                                                 "party <p> failed: <type>: <message>" for the
                                                 earliest failure (by updated_at, then party
                                                 name) that is not PEER_CAUSED (not RETRYABLE
                                                 first, if there is one), else — when a
                                                 party never started — that party, else the one
                                                 party still not ended (if only one); to_terminate =
                                                 every party whose task is not terminal — none
                                                 when the failures are refusals that release
                                                 their peers (`released`): those end by
                                                 themselves, with PeerRefused
     (a job already FAILED keeps its state, but its error and failed_party are re-derived, so a
      later report of the true cause replaces a peer's earlier "it never joined")
  3. any party CANCELLED (no FAILURE)         → CANCELLED; error "party <p> cancelled its task"
                                                 (earliest, same tie-break); failed_party = None;
                                                 to_terminate = every non-terminal party
  4. every party SUCCESS                      → SUCCEEDED
  5. any RUNNING / PROGRESS / RETRY, or some
     SUCCESS while others are not done yet    → RUNNING
  6. any RECEIVED                             → DISPATCHED
  7. otherwise (every party PENDING)          → current
  Rules 5–7 never move a job backwards: QUEUED < DISPATCHED < RUNNING, and the result is the
  higher of the proposed state and `current` (RECEIVED while RUNNING stays RUNNING).
TIMED_OUT is never produced here: the coordinator sets it from the deadline; merge keeps it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from node.contract import (
    PEER_CAUSED,
    RETRYABLE,
    TERMINAL_STATUSES,
    ErrorInfo,
    ErrorType,
    StatusEvent,
)


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


class PartyStatus(StrEnum):
    """A party task's status: the node's TaskStatus values plus PENDING (no event yet)."""

    PENDING = "PENDING"
    RECEIVED = "RECEIVED"
    RUNNING = "RUNNING"
    PROGRESS = "PROGRESS"
    RETRY = "RETRY"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    CANCELLED = "CANCELLED"


TERMINAL_PARTY_STATUSES = frozenset(PartyStatus(s) for s in TERMINAL_STATUSES)
_WORKING = frozenset(
    {PartyStatus.RUNNING, PartyStatus.PROGRESS, PartyStatus.RETRY, PartyStatus.SUCCESS}
)
_NO_TIME = dt.datetime.min.replace(tzinfo=dt.UTC)


@dataclass(frozen=True)
class PartyTask:
    """One party's task in one attempt, as far as the events received so far tell."""

    party: str
    status: PartyStatus = PartyStatus.PENDING
    seq: int = 0
    stage: str | None = None
    progress: float | None = None
    error: ErrorInfo | None = None
    result: dict[str, Any] | None = None
    last_event_id: str | None = None
    updated_at: dt.datetime | None = None

    def __post_init__(self) -> None:
        # accept plain strings (e.g. loaded from the DB); reject unknown statuses early
        object.__setattr__(self, "status", PartyStatus(self.status))

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_PARTY_STATUSES


def apply_event(task: PartyTask, event: StatusEvent) -> PartyTask:
    """The task after `event`; unchanged for a duplicate, older, or post-terminal event."""
    if event.party != task.party:
        raise ValueError(f"event of party {event.party!r} applied to party {task.party!r}'s task")
    if task.terminal or event.seq <= task.seq:
        return task
    return dataclasses.replace(
        task,
        status=PartyStatus(event.status),
        seq=event.seq,
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
    to_terminate: tuple[str, ...] = ()  # parties whose tasks the coordinator revokes at once


def _earliest(tasks: Iterable[PartyTask]) -> PartyTask:
    def key(t: PartyTask) -> tuple[dt.datetime, str]:
        at = t.updated_at or _NO_TIME
        return (at if at.tzinfo else at.replace(tzinfo=dt.UTC), t.party)  # naive = UTC

    return min(tasks, key=key)


_NOT_STARTED = frozenset({PartyStatus.PENDING, PartyStatus.RECEIVED})


def _why(t: PartyTask) -> str:
    return f"{t.error.type}: {t.error.message}" if t.error else "no error reported"


def blame(tasks: Iterable[PartyTask]) -> tuple[str, str]:
    """(job error, failed party) of an attempt with at least one FAILURE: the true cause.

    A failure a party reports about itself (its Ray head, its data, its process …) outranks one
    that points at a peer (PEER_CAUSED: the peer never joined, could not be reached, went
    away): the earliest of those — of those that a new attempt would not cure, if any. When only peer-pointing failures exist and a party never
    started its part (PENDING / RECEIVED), that party is named: it is the one to look at; else,
    when exactly one party has not ended its task, the others lost *it*, and it is named.
    """
    values = list(tasks)
    failed = [t for t in values if t.status == PartyStatus.FAILURE]
    own = [t for t in failed if t.error is None or t.error.type not in PEER_CAUSED]
    if own:
        # one that ends the job (a refusal, a data problem …) outranks one a retry would cure:
        # a party whose warm session had to go (SessionLost) is not why the job failed
        final = [t for t in own if t.error is None or t.error.type not in RETRYABLE]
        first = _earliest(final or own)
        return f"party {first.party} failed: {_why(first)}", first.party
    first = _earliest(failed)
    absent = [t for t in values if t.status in _NOT_STARTED]
    if absent:
        culprit = min(t.party for t in absent)
        how = (
            "received but not run"
            if _status_of(values, culprit) == PartyStatus.RECEIVED
            else "never taken by its worker"
        )
        return (
            f"party {culprit} did not start its part of the job (its task was {how}); "
            f"party {first.party} failed: {_why(first)}",
            culprit,
        )
    silent = [t for t in values if not t.terminal]
    if len(silent) == 1:  # every other party ended; the peer they lost is this one
        culprit = silent[0].party
        return (
            f"party {culprit} went silent during the job (its task is still "
            f"{silent[0].status.value}, with no report of its own); "
            f"party {first.party} failed: {_why(first)}",
            culprit,
        )
    return f"party {first.party} failed: {_why(first)}", first.party


def released(failed: Iterable[PartyTask]) -> bool:
    """Whether an attempt failed only by refusals before any work, whose refusing party
    releases its peers in their warm session (they end with PeerRefused; the session is kept)."""
    errors = [t.error for t in failed]
    return any(e is not None and e.releases_session for e in errors) and all(
        e is not None and (e.releases_session or e.type == ErrorType.PEER_REFUSED) for e in errors
    )


def _status_of(values: list[PartyTask], party: str) -> PartyStatus:
    return next(t.status for t in values if t.party == party)


def merge(current: JobState, tasks: Mapping[str, PartyTask]) -> MergeResult:
    """The job state implied by `current` and the party tasks (precedence: module docstring)."""
    current = JobState(current)
    if current == JobState.FAILED and any(t.status == PartyStatus.FAILURE for t in tasks.values()):
        # a failed job stays failed, but a later report may name the true cause (blame)
        error, party = blame(list(tasks.values()))
        return MergeResult(current, error, party)
    if current in TERMINAL_JOB_STATES or not tasks:
        return MergeResult(current)
    values = list(tasks.values())
    unfinished = tuple(sorted(t.party for t in values if not t.terminal))

    failed = [t for t in values if t.status == PartyStatus.FAILURE]
    if failed:
        error, party = blame(values)
        # a refusal that releases its peers (a warm session): they end on their own, at once
        return MergeResult(JobState.FAILED, error, party, () if released(failed) else unfinished)
    cancelled = [t for t in values if t.status == PartyStatus.CANCELLED]
    if cancelled:
        first = _earliest(cancelled)
        return MergeResult(
            JobState.CANCELLED, f"party {first.party} cancelled its task", None, unfinished
        )
    if all(t.status == PartyStatus.SUCCESS for t in values):
        return MergeResult(JobState.SUCCEEDED)

    if any(t.status in _WORKING for t in values):
        proposed = JobState.RUNNING
    elif any(t.status == PartyStatus.RECEIVED for t in values):
        proposed = JobState.DISPATCHED
    else:
        proposed = current
    return MergeResult(max(proposed, current, key=_RANK.__getitem__))


def fold(
    current: JobState, tasks: Mapping[str, PartyTask], events: Iterable[StatusEvent]
) -> tuple[dict[str, PartyTask], MergeResult]:
    """Apply `events` (in the given order) to a copy of `tasks`, then merge.

    Every event must belong to one of the job's parties (a key of `tasks`); routing events to
    the right job and attempt (execution_id) is the caller's business.
    """
    out = dict(tasks)
    for event in events:
        if event.party not in out:
            raise ValueError(
                f"event {event.event_id} is for party {event.party!r}, not in this job"
            )
        out[event.party] = apply_event(out[event.party], event)
    return out, merge(current, out)
