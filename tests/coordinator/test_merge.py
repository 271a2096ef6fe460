"""merge.py: explicit precedence cases and properties (any order, duplicates, no regression)."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.merge import (
    TERMINAL_JOB_STATES,
    JobState,
    PartyTask,
    apply_event,
    fold,
    merge,
)
from node.contract import ErrorInfo, EventData, StatusEvent, TaskStatus

T0 = dt.datetime(2026, 11, 22, 10, tzinfo=dt.UTC)
PARTIES = ("alice", "bob", "carol")


def ev(
    party: str, seq: int, status: TaskStatus, *, error: str | None = None, at: int = 0
) -> StatusEvent:
    return StatusEvent(
        event_id=f"{party}-{seq}",
        seq=seq,
        task_request_id=f"exe-1.{party}",
        task_id="job-1",
        subtask_id="psi",
        execution_id="exe-1",
        party=party,
        status=status,
        timestamp=T0 + dt.timedelta(seconds=at or seq),
        data=EventData(
            error=ErrorInfo(type="PeerConnectTimeout", message=error) if error else None
        ),
    )


def tasks(*parties: str) -> dict[str, PartyTask]:
    return {p: PartyTask(p) for p in parties}


def test_one_failure_fails_the_job_names_the_party_and_terminates_the_rest():
    _, res = fold(
        JobState.DISPATCHED,
        tasks("alice", "bob"),
        [
            ev("alice", 1, TaskStatus.RUNNING),
            ev("bob", 1, TaskStatus.RUNNING),
            ev("bob", 2, TaskStatus.FAILURE, error="no link"),
        ],
    )
    assert res.state == JobState.FAILED
    assert res.failed_party == "bob"
    assert res.error == "party bob failed: PeerConnectTimeout: no link"
    assert res.to_terminate == ("alice",)


def test_all_success_and_partial_success():
    _, res = fold(JobState.RUNNING, tasks("alice", "bob"), [ev("alice", 1, TaskStatus.SUCCESS)])
    assert res.state == JobState.RUNNING
    _, res = fold(
        JobState.RUNNING,
        tasks("alice", "bob"),
        [ev("alice", 1, TaskStatus.SUCCESS), ev("bob", 1, TaskStatus.SUCCESS)],
    )
    assert res.state == JobState.SUCCEEDED and res.to_terminate == ()


def test_received_only_is_dispatched_and_pending_keeps_current():
    _, res = fold(JobState.QUEUED, tasks("alice", "bob"), [ev("alice", 1, TaskStatus.RECEIVED)])
    assert res.state == JobState.DISPATCHED
    assert merge(JobState.DISPATCHED, tasks("alice", "bob")).state == JobState.DISPATCHED
    assert merge(JobState.RUNNING, tasks("alice", "bob")).state == JobState.RUNNING  # no regression


def test_cancelled():
    _, res = fold(JobState.RUNNING, tasks("alice", "bob"), [ev("alice", 1, TaskStatus.CANCELLED)])
    assert res.state == JobState.CANCELLED and res.to_terminate == ("bob",)


@pytest.mark.parametrize("terminal", sorted(TERMINAL_JOB_STATES))
def test_terminal_job_state_never_regresses(terminal):
    t = {p: PartyTask(p, status=str(TaskStatus.RUNNING), seq=3) for p in ("alice", "bob")}
    assert merge(terminal, t).state == terminal


def test_duplicate_and_older_events_change_nothing_and_terminal_tasks_stay():
    t = PartyTask("alice")
    t = apply_event(t, ev("alice", 2, TaskStatus.RUNNING))
    assert apply_event(t, ev("alice", 1, TaskStatus.RECEIVED)) == t
    done = apply_event(t, ev("alice", 3, TaskStatus.SUCCESS))
    assert apply_event(done, ev("alice", 4, TaskStatus.FAILURE, error="late")) == done
    with pytest.raises(ValueError, match="party 'bob'"):
        apply_event(t, ev("bob", 5, TaskStatus.RUNNING))


# --- properties ---------------------------------------------------------------------------------
ENDINGS = [TaskStatus.SUCCESS, TaskStatus.FAILURE, TaskStatus.CANCELLED, None]


@st.composite
def party_streams(draw):
    """Per party a realistic stream: RECEIVED → RUNNING → PROGRESS* → ending, maybe truncated."""
    parties = draw(st.lists(st.sampled_from(PARTIES), min_size=2, max_size=3, unique=True))
    streams = {}
    for p in parties:
        statuses = [TaskStatus.RECEIVED, TaskStatus.RUNNING] + [TaskStatus.PROGRESS] * draw(
            st.integers(0, 3)
        )
        end = draw(st.sampled_from(ENDINGS))
        if end is not None:
            statuses.append(end)
        statuses = statuses[: draw(st.integers(0, len(statuses)))]
        streams[p] = [
            ev(
                p,
                i + 1,
                s,
                error="boom" if s == TaskStatus.FAILURE else None,
                at=draw(st.integers(1, 50)),
            )
            for i, s in enumerate(statuses)
        ]
    return streams


def interleave(draw, streams):
    """Stream order kept per party, parties interleaved arbitrarily."""
    queues = {p: list(s) for p, s in streams.items() if s}
    out = []
    while queues:
        p = draw(st.sampled_from(sorted(queues)))
        out.append(queues[p].pop(0))
        if not queues[p]:
            del queues[p]
    return out


@settings(max_examples=300, deadline=None)
@given(party_streams(), st.randoms(use_true_random=False), st.data())
def test_any_order_with_duplicates_gives_the_same_result(streams, rnd, data):
    events = [e for s in streams.values() for e in s]
    base_tasks = tasks(*streams)
    ref_tasks, ref = fold(JobState.DISPATCHED, base_tasks, events)
    shuffled = events + data.draw(st.lists(st.sampled_from(events), max_size=5)) if events else []
    rnd.shuffle(shuffled)
    got_tasks, got = fold(JobState.DISPATCHED, base_tasks, shuffled)
    assert got_tasks == ref_tasks
    assert got == ref
    assert merge(JobState.DISPATCHED, got_tasks) == got  # pure: same input, same output
    if any(e.status == TaskStatus.FAILURE for e in events):
        assert got.state == JobState.FAILED


ORDER = {JobState.QUEUED: 0, JobState.DISPATCHED: 1, JobState.RUNNING: 2}


@settings(max_examples=300, deadline=None)
@given(party_streams(), st.data())
def test_job_state_is_monotone_and_terminal_sticks(streams, data):
    events = interleave(data.draw, streams)
    state, t = JobState.QUEUED, tasks(*streams)
    seen_terminal = None
    for e in events:
        t, res = fold(state, t, [e])
        if seen_terminal is not None:
            assert res.state == seen_terminal
        elif res.state in TERMINAL_JOB_STATES:
            seen_terminal = res.state
        else:
            assert ORDER[res.state] >= ORDER[state]
        state = res.state
