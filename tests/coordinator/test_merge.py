"""coordinator.merge: explicit precedence cases, then properties over realistic event streams."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.merge import (
    TERMINAL_JOB_STATES,
    JobState,
    MergeResult,
    PartyStatus,
    PartyTask,
    apply_event,
    blame,
    fold,
    merge,
    released,
)
from node.contract import ErrorInfo, ErrorType, EventData, StatusEvent, TaskStatus

T0 = dt.datetime(2026, 11, 22, 10, tzinfo=dt.UTC)
PARTIES = ("alice", "bob", "carol")
NON_TERMINAL = (JobState.QUEUED, JobState.DISPATCHED, JobState.RUNNING)
ORDER = {JobState.QUEUED: 0, JobState.DISPATCHED: 1, JobState.RUNNING: 2}


def ev(
    party: str,
    seq: int,
    status: TaskStatus,
    *,
    error: str | None = None,
    at: float | None = None,
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
        timestamp=T0 + dt.timedelta(seconds=seq if at is None else at),
        data=EventData(
            error=ErrorInfo(type="PeerConnectTimeout", message=error) if error else None
        ),
    )


def tasks(*parties: str) -> dict[str, PartyTask]:
    return {p: PartyTask(p) for p in parties}


def task(party: str, status: PartyStatus, seq: int = 1, **kw) -> PartyTask:
    return PartyTask(party, status, seq, **kw)


# --- explicit cases -----------------------------------------------------------------------------
def test_one_failure_among_running_fails_the_job_names_the_party_and_terminates_the_other():
    _, res = fold(
        JobState.RUNNING,
        tasks("alice", "bob"),
        [
            ev("alice", 1, TaskStatus.RUNNING),
            ev("bob", 1, TaskStatus.RUNNING),
            ev("bob", 2, TaskStatus.FAILURE, error="no link to alice"),
        ],
    )
    # bob's failure points at its peer, and alice is the only party not ended: alice is named
    assert res == MergeResult(
        JobState.FAILED,
        error=(
            "party alice went silent during the job (its task is still RUNNING, with no report "
            "of its own); party bob failed: PeerConnectTimeout: no link to alice"
        ),
        failed_party="alice",
        to_terminate=("alice",),
    )


def _refused(party: str, *, releases: bool) -> PartyTask:
    err = ErrorInfo(
        type=ErrorType.KEY_COLUMN_MISSING,
        message=f"party {party} refused the task: no column 'k'",
        releases_session=releases,
    )
    return task(party, PartyStatus.FAILURE, 2, error=err)


def test_a_refusal_that_releases_its_peers_fails_the_job_but_terminates_nobody():
    """In a warm session the refusing party releases the peers (they end as PeerRefused): the
    coordinator does not revoke them; it does when the refusal could not release them."""
    running = task("alice", PartyStatus.RUNNING)
    res = merge(JobState.RUNNING, {"alice": running, "bob": _refused("bob", releases=True)})
    assert res.state == JobState.FAILED and res.failed_party == "bob"
    assert res.to_terminate == ()
    res = merge(JobState.RUNNING, {"alice": running, "bob": _refused("bob", releases=False)})
    assert res.to_terminate == ("alice",)
    peer = task(
        "alice",
        PartyStatus.FAILURE,
        3,
        error=ErrorInfo(type=ErrorType.PEER_REFUSED, message="party alice: ended before any work"),
    )
    both = [peer, _refused("bob", releases=True)]
    assert released(both)
    assert blame(both) == (
        "party bob failed: KeyColumnMissing: party bob refused the task: no column 'k'",
        "bob",
    )  # PeerRefused points at the peer: the refusing party is named
    lost = task(
        "carol", PartyStatus.FAILURE, 3, error=ErrorInfo(type=ErrorType.PEER_LOST, message="x")
    )
    assert not released([*both, lost])  # anything else ends the session as before


def test_several_failures_name_the_earliest_then_the_party_name():
    err = ErrorInfo(type=ErrorType.PSI_FAILED, message="m")
    at = T0 + dt.timedelta(seconds=5)
    t = {
        "alice": task("alice", PartyStatus.FAILURE, error=err, updated_at=at),
        "bob": task("bob", PartyStatus.FAILURE, error=err, updated_at=at - dt.timedelta(1)),
        "carol": task("carol", PartyStatus.RUNNING),
    }
    assert merge(JobState.RUNNING, t).failed_party == "bob"
    t["bob"] = task("bob", PartyStatus.FAILURE, error=err, updated_at=at)  # a tie: by name
    res = merge(JobState.RUNNING, t)
    assert (res.failed_party, res.to_terminate) == ("alice", ("carol",))


def test_failure_without_error_info_and_naive_timestamps():
    t = {
        "alice": task("alice", PartyStatus.FAILURE, updated_at=dt.datetime(2026, 1, 1)),
        "bob": task("bob", PartyStatus.FAILURE, updated_at=T0),
    }
    assert merge(JobState.RUNNING, t).error == "party alice failed: no error reported"


def test_failure_beats_cancelled():
    t = {"alice": task("alice", PartyStatus.CANCELLED), "bob": task("bob", PartyStatus.FAILURE)}
    assert merge(JobState.RUNNING, t).state == JobState.FAILED


def test_all_success_is_succeeded():
    _, res = fold(
        JobState.RUNNING,
        tasks("alice", "bob"),
        [ev("alice", 1, TaskStatus.SUCCESS), ev("bob", 1, TaskStatus.SUCCESS)],
    )
    assert res == MergeResult(JobState.SUCCEEDED)


@pytest.mark.parametrize("other", [PartyStatus.RUNNING, PartyStatus.RECEIVED, PartyStatus.PENDING])
def test_some_success_with_others_not_done_is_running(other):
    t = {"alice": task("alice", PartyStatus.SUCCESS), "bob": task("bob", other)}
    assert merge(JobState.DISPATCHED, t) == MergeResult(JobState.RUNNING)


@pytest.mark.parametrize("working", [PartyStatus.PROGRESS, PartyStatus.RETRY])
def test_progress_and_retry_count_as_running_but_are_stored_as_is(working):
    t = apply_event(PartyTask("alice"), ev("alice", 3, TaskStatus(working)))
    assert t.status == working
    assert merge(JobState.DISPATCHED, {"alice": t}).state == JobState.RUNNING


def test_received_only_is_dispatched_and_never_moves_back():
    received = [ev("alice", 1, TaskStatus.RECEIVED), ev("bob", 1, TaskStatus.RECEIVED)]
    assert fold(JobState.QUEUED, tasks("alice", "bob"), received)[1].state == JobState.DISPATCHED
    assert fold(JobState.RUNNING, tasks("alice", "bob"), received)[1].state == JobState.RUNNING


@pytest.mark.parametrize("current", NON_TERMINAL)
def test_all_pending_or_no_tasks_keeps_current(current):
    assert merge(current, tasks("alice", "bob")) == MergeResult(current)
    assert merge(current, {}) == MergeResult(current)


def test_cancelled_is_cancelled_and_terminates_the_others():
    _, res = fold(
        JobState.RUNNING,
        tasks("alice", "bob", "carol"),
        [ev("alice", 1, TaskStatus.CANCELLED), ev("carol", 1, TaskStatus.SUCCESS)],
    )
    assert res == MergeResult(
        JobState.CANCELLED, error="party alice cancelled its task", to_terminate=("bob",)
    )


TASK_MAPS = {
    "all-success": {p: task(p, PartyStatus.SUCCESS) for p in ("alice", "bob")},
    "failure": {"alice": task("alice", PartyStatus.FAILURE), "bob": task("bob", "RUNNING")},
    "cancelled": {"alice": task("alice", PartyStatus.CANCELLED), "bob": task("bob", "RUNNING")},
    "running": {p: task(p, PartyStatus.RUNNING) for p in ("alice", "bob")},
    "pending": tasks("alice", "bob"),
    "empty": {},
}


@pytest.mark.parametrize("tasks_name", sorted(TASK_MAPS))
@pytest.mark.parametrize("terminal", sorted(TERMINAL_JOB_STATES))
def test_terminal_job_state_never_regresses_whatever_the_tasks_say(terminal, tasks_name):
    res = merge(terminal, TASK_MAPS[tasks_name])
    assert (res.state, res.to_terminate) == (terminal, ())
    if terminal != JobState.FAILED:  # a failed job's error may be re-derived (blame), no more
        assert res == MergeResult(terminal)


def test_duplicate_older_and_post_terminal_events_change_nothing():
    t = apply_event(PartyTask("alice"), ev("alice", 2, TaskStatus.RUNNING))
    assert apply_event(t, ev("alice", 2, TaskStatus.RUNNING)) == t  # duplicate
    assert apply_event(t, ev("alice", 1, TaskStatus.RECEIVED)) == t  # older
    done = apply_event(t, ev("alice", 3, TaskStatus.SUCCESS))
    assert (done.status, done.seq, done.last_event_id) == (PartyStatus.SUCCESS, 3, "alice-3")
    assert apply_event(done, ev("alice", 4, TaskStatus.FAILURE, error="late")) == done


def test_event_of_another_party_is_rejected():
    with pytest.raises(ValueError, match="party 'bob'"):
        apply_event(PartyTask("alice"), ev("bob", 1, TaskStatus.RUNNING))
    with pytest.raises(ValueError, match="'carol'"):
        fold(JobState.RUNNING, tasks("alice", "bob"), [ev("carol", 1, TaskStatus.RUNNING)])


def test_party_status_covers_the_contract_and_rejects_unknown_strings():
    assert {str(s) for s in TaskStatus} | {"PENDING"} == {str(s) for s in PartyStatus}
    assert PartyTask("alice", "RUNNING").status is PartyStatus.RUNNING  # e.g. from the DB
    with pytest.raises(ValueError):
        PartyTask("alice", "DONE")


# --- properties ---------------------------------------------------------------------------------
ENDINGS = (TaskStatus.SUCCESS, TaskStatus.FAILURE, TaskStatus.CANCELLED)


@st.composite
def party_streams(draw) -> dict[str, list[StatusEvent]]:
    """Per party: RECEIVED → RUNNING → PROGRESS* → SUCCESS|FAILURE|CANCELLED, maybe truncated.

    seq increases from 1 and timestamps increase along each party's stream.
    """
    parties = draw(st.lists(st.sampled_from(PARTIES), min_size=1, max_size=3, unique=True))
    streams = {}
    for p in parties:
        progress = draw(st.integers(0, 3))
        statuses = [TaskStatus.RECEIVED, TaskStatus.RUNNING, *[TaskStatus.PROGRESS] * progress]
        statuses.append(draw(st.sampled_from(ENDINGS)))
        statuses = statuses[: draw(st.integers(0, len(statuses)))]  # truncated: still running
        at, stream = 0, []
        for seq, status in enumerate(statuses, start=1):
            at += draw(st.integers(1, 20))
            boom = f"{p} broke" if status == TaskStatus.FAILURE else None
            stream.append(ev(p, seq, status, error=boom, at=at))
        streams[p] = stream
    return streams


def all_events(streams: dict[str, list[StatusEvent]]) -> list[StatusEvent]:
    return [e for stream in streams.values() for e in stream]


def shuffled_with_duplicates(draw, events: list[StatusEvent]) -> list[StatusEvent]:
    if not events:
        return []
    dups = draw(st.lists(st.sampled_from(events), max_size=6))
    return draw(st.permutations(events + dups))


def interleaved(draw, streams: dict[str, list[StatusEvent]]) -> list[StatusEvent]:
    """Each party's stream in order, parties interleaved arbitrarily."""
    queues = {p: list(s) for p, s in streams.items() if s}
    out = []
    while queues:
        p = draw(st.sampled_from(sorted(queues)))
        out.append(queues[p].pop(0))
        if not queues[p]:
            del queues[p]
    return out


@settings(max_examples=200, deadline=None)
@given(party_streams(), st.data())
def test_a_any_order_with_duplicates_gives_the_same_states_and_result(streams, data):
    reference_tasks, reference = fold(JobState.DISPATCHED, tasks(*streams), all_events(streams))
    events = shuffled_with_duplicates(data.draw, all_events(streams))
    got_tasks, got = fold(JobState.DISPATCHED, tasks(*streams), events)
    assert got_tasks == reference_tasks
    assert got == reference


@settings(max_examples=200, deadline=None)
@given(party_streams(), st.data())
def test_b_terminal_job_state_survives_any_later_batch(streams, data):
    events = shuffled_with_duplicates(data.draw, all_events(streams))
    cut = data.draw(st.integers(0, len(events)))
    current = data.draw(st.sampled_from(NON_TERMINAL))
    first_tasks, first = fold(current, tasks(*streams), events[:cut])
    _, second = fold(first.state, first_tasks, events[cut:])
    if first.state in TERMINAL_JOB_STATES:
        assert (second.state, second.to_terminate) == (first.state, ())


@settings(max_examples=200, deadline=None)
@given(party_streams(), st.data())
def test_c_any_failure_fails_the_job(streams, data):
    events = shuffled_with_duplicates(data.draw, all_events(streams))
    current = data.draw(st.sampled_from(NON_TERMINAL))
    final_tasks, res = fold(current, tasks(*streams), events)
    failed = {e.party for e in events if e.status == TaskStatus.FAILURE}
    if failed:
        assert res.state == JobState.FAILED
        # every failure here points at a peer (PeerConnectTimeout): a party that never started
        # is named first, else the one party still not ended, else the earliest failing party
        idle = {p for p, t in final_tasks.items() if t.status in ("PENDING", "RECEIVED")}
        open_ = [p for p, t in final_tasks.items() if not t.terminal]
        who = res.failed_party
        if idle:
            assert who == min(idle)
            assert res.error.startswith(f"party {who} did not start its part of the job")
        elif len(open_) == 1:
            assert who == open_[0]
            assert res.error.startswith(f"party {who} went silent during the job")
        else:
            assert who in failed
            assert res.error == f"party {who} failed: PeerConnectTimeout: {who} broke"
        assert res.to_terminate == tuple(
            sorted(p for p, t in final_tasks.items() if not t.terminal)
        )
    else:
        assert res.state != JobState.FAILED


@settings(max_examples=200, deadline=None)
@given(party_streams(), st.data())
def test_d_merge_is_pure(streams, data):
    events = shuffled_with_duplicates(data.draw, all_events(streams))
    final_tasks, _ = fold(JobState.QUEUED, tasks(*streams), events)
    current = data.draw(st.sampled_from(list(JobState)))
    snapshot = dict(final_tasks)
    assert merge(current, final_tasks) == merge(current, final_tasks)
    assert final_tasks == snapshot  # input untouched


@settings(max_examples=200, deadline=None)
@given(party_streams(), st.data())
def test_e_job_state_is_monotone_event_by_event(streams, data):
    state, t = JobState.QUEUED, tasks(*streams)
    for event in interleaved(data.draw, streams):
        t, res = fold(state, t, [event])
        if state in TERMINAL_JOB_STATES:
            assert res.state == state
        elif res.state not in TERMINAL_JOB_STATES:
            assert ORDER[res.state] >= ORDER[state]
        state = res.state


# --- blame: the true cause, not the survivor ------------------------------------------------------
def _err(kind: ErrorType, message: str = "m") -> ErrorInfo:
    return ErrorInfo(type=kind, message=message)


def test_a_partys_own_failure_outranks_an_earlier_peer_pointing_one():
    t = {
        "alice": task(
            "alice",
            PartyStatus.FAILURE,
            error=_err(ErrorType.PEER_LOST, "lost the link to bob"),
            updated_at=T0,
        ),
        "bob": task(
            "bob",
            PartyStatus.FAILURE,
            error=_err(ErrorType.RAY_HEAD_UNREACHABLE, "its Ray head does not answer"),
            updated_at=T0 + dt.timedelta(seconds=3),
        ),
    }
    res = merge(JobState.RUNNING, t)
    assert res.failed_party == "bob"
    assert res.error == "party bob failed: RayHeadUnreachable: its Ray head does not answer"


def test_a_failure_that_ends_the_job_outranks_an_earlier_one_a_retry_would_cure():
    """alice's warm session was gone (SessionLost: a retry starts a new one) a moment before bob
    refused its malformed table: bob's refusal is why the job fails, and it is named."""
    t = {
        "alice": task(
            "alice",
            PartyStatus.FAILURE,
            error=_err(ErrorType.SESSION_LOST, "its warm session has ended here"),
            updated_at=T0,
        ),
        "bob": task(
            "bob",
            PartyStatus.FAILURE,
            error=_err(ErrorType.MALFORMED_CSV, "party bob refused the task: table t.csv line 3"),
            updated_at=T0 + dt.timedelta(seconds=1),
        ),
    }
    res = merge(JobState.RUNNING, t)
    assert res.failed_party == "bob"
    assert (
        res.error
        == "party bob failed: MalformedCsv: party bob refused the task: table t.csv line 3"
    )
    # two failures a retry would cure: the earliest, as before
    t["bob"] = task(
        "bob",
        PartyStatus.FAILURE,
        error=_err(ErrorType.WORKER_LOST, "its worker died"),
        updated_at=T0 + dt.timedelta(seconds=1),
    )
    assert merge(JobState.RUNNING, t).failed_party == "alice"


def test_a_party_that_never_started_is_named_when_its_peer_timed_out_waiting():
    t = {
        "alice": task(
            "alice",
            PartyStatus.FAILURE,
            error=_err(ErrorType.PEER_CONNECT_TIMEOUT, "bob did not join the job within 45 s"),
            updated_at=T0,
        ),
        "bob": task("bob", PartyStatus.PENDING),
    }
    res = merge(JobState.RUNNING, t)
    assert (res.state, res.failed_party, res.to_terminate) == (JobState.FAILED, "bob", ("bob",))
    assert res.error.startswith(
        "party bob did not start its part of the job (its task was never taken by its worker); "
        "party alice failed: PeerConnectTimeout"
    )


def test_a_failed_jobs_error_is_re_derived_when_the_true_cause_arrives_later():
    alice = task(
        "alice",
        PartyStatus.FAILURE,
        error=_err(ErrorType.PEER_CONNECT_TIMEOUT, "bob did not join"),
        updated_at=T0,
    )
    first = merge(JobState.RUNNING, {"alice": alice, "bob": task("bob", PartyStatus.RUNNING)})
    # bob, the only party not ended, is the one alice lost: named until its own report comes
    assert first.failed_party == "bob"
    assert first.error.startswith(
        "party bob went silent during the job (its task is still RUNNING, with no report of its "
        "own); party alice failed: PeerConnectTimeout"
    )
    bob = task(
        "bob",
        PartyStatus.FAILURE,
        error=_err(ErrorType.JOB_PROCESS_CRASHED, "its job process was killed"),
        updated_at=T0 + dt.timedelta(seconds=1),
    )
    later = merge(first.state, {"alice": alice, "bob": bob})
    assert (later.state, later.failed_party, later.to_terminate) == (JobState.FAILED, "bob", ())
    assert "JobProcessCrashed" in later.error


def test_with_two_parties_still_running_the_first_failure_is_named():
    """alice lost a peer, but bob and carol both still run: which one is unknown."""
    t = {
        "alice": task(
            "alice",
            PartyStatus.FAILURE,
            error=_err(ErrorType.PEER_LOST, "lost the link to bob, carol"),
            updated_at=T0,
        ),
        "bob": task("bob", PartyStatus.RUNNING),
        "carol": task("carol", PartyStatus.RUNNING),
    }
    res = merge(JobState.RUNNING, t)
    assert (res.failed_party, res.to_terminate) == ("alice", ("bob", "carol"))
    assert res.error == "party alice failed: PeerLost: lost the link to bob, carol"
