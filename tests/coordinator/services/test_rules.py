"""coordinator.services.rules, one rule at a time: fake party clients, a fixed clock, and a real
database (SQLite and PostgreSQL) where a rule reads or writes one."""

from __future__ import annotations

import datetime as dt

from coordinator.db import transaction
from coordinator.intake import IntakeCounters
from coordinator.merge import JobState, PartyStatus
from coordinator.models import Job, SecretflowTask
from coordinator.parties import PartyUnreachable
from coordinator.services import rules
from coordinator.services.status import COORDINATOR_SOURCE
from node.contract import (
    COORDINATOR_SEQ_BASE,
    HEARTBEAT_TTL_S,
    ErrorType,
    NodeTaskError,
    Stage,
    TaskStatus,
)

NOW = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.UTC)
ALIVE = object()  # any heartbeat will do: the rules only ask whether there is one
START_TIMEOUT_S = 120.0
GRACE_S = 30.0


class FakeClients:
    """The few PartyClients calls the rules make, answered from dicts."""

    def __init__(self) -> None:
        self.heartbeats: dict[str, object] = {}  # party → heartbeat, None, or an exception
        self.results: dict[str, tuple[str, object]] = {}  # task_request_id → Celery (state, value)
        self.backlog: dict[str, int | None] = {}
        self.asked: list[str] = []

    def heartbeat(self, party: str):
        self.asked.append(party)
        hb = self.heartbeats.get(party, ALIVE)
        if isinstance(hb, Exception):
            raise hb
        return hb

    def task_result(self, party: str, task_request_id: str) -> tuple[str, object]:
        return self.results.get(task_request_id, ("PENDING", None))

    def stream_backlog(self, party: str, group: str) -> int | None:
        return self.backlog.get(party, 0)


def _ctx(clients: FakeClients, sessions=None) -> rules.RuleContext:
    return rules.RuleContext(
        db=sessions,
        clients=clients,
        counters=IntakeCounters(),
        start_timeout_s=START_TIMEOUT_S,
        result_fallback_grace_s=GRACE_S,
        stream_group="coordinator",
    )


def _job(status=JobState.RUNNING, *, sent_ago_s=0.0, deadline_in_s=3600.0, job_id="job-1"):
    return Job(
        id=job_id,
        kind="psi",
        status=status,
        request={"receiver": "alice"},
        parties={"names": ["alice", "bob"]},
        execution_id=f"exe-{job_id}",
        attempt=1,
        max_attempts=2,
        dispatched_at=NOW - dt.timedelta(seconds=sent_ago_s),
        deadline=NOW + dt.timedelta(seconds=deadline_in_s),
    )


def _task(job: Job, party: str, status=PartyStatus.RUNNING, *, seq=2, created_ago_s=0.0):
    return SecretflowTask(
        job_id=job.id,
        task_id=job.id,
        subtask_id="psi",
        execution_id=job.execution_id,
        party=party,
        task_request_id=f"{job.execution_id}.{party}",
        task_type="psi",
        status=status,
        seq=seq,
        params={},
        created_at=NOW - dt.timedelta(seconds=created_ago_s),
    )


def _store(sessions, job: Job, *tasks: SecretflowTask) -> None:
    with transaction(sessions) as s:
        s.add(job)
        s.add_all(tasks)


# --- job rules ----------------------------------------------------------------------------------
def test_a_passed_deadline_claims_the_job_and_a_naive_deadline_is_utc():
    p = rules.Pass(now=NOW, mono=0.0)
    late = _job(deadline_in_s=-1)
    late.deadline = late.deadline.replace(tzinfo=None)  # as SQLite gives it back
    assert rules.deadline_passed(_ctx(FakeClients()), p, late)
    assert not rules.deadline_passed(_ctx(FakeClients()), p, _job(job_id="job-2"))
    assert p.timed_out == ["job-1"]


# --- task rules ---------------------------------------------------------------------------------
def test_a_dead_worker_fails_its_task_once_the_attempt_is_older_than_the_heartbeat_ttl():
    clients = FakeClients()
    clients.heartbeats["alice"] = None
    young, old = _job(sent_ago_s=HEARTBEAT_TTL_S), _job(sent_ago_s=HEARTBEAT_TTL_S + 1)
    p = rules.Pass(now=NOW, mono=0.0)
    assert not rules.worker_lost(_ctx(clients), p, young, _task(young, "alice"))
    assert rules.worker_lost(_ctx(clients), p, old, _task(old, "alice", seq=7))
    assert clients.asked == ["alice"]  # asked once a pass
    (ev,) = p.synthetic
    assert ev.status == TaskStatus.FAILURE and ev.party == "alice"
    assert ev.data.error.type == ErrorType.WORKER_LOST
    assert "SecretFlow worker is gone" in ev.data.error.message
    assert ev.seq == COORDINATOR_SEQ_BASE + 7
    assert ev.data.stage == Stage.TASK_FINISHED and ev.worker_container == COORDINATOR_SOURCE


def test_a_silent_broker_counts_as_a_dead_worker_only_after_the_heartbeat_ttl():
    clients = FakeClients()
    clients.heartbeats["bob"] = PartyUnreachable("bob", "connection refused")
    ctx = _ctx(clients)
    assert rules.party_alive(ctx, rules.Pass(now=NOW, mono=100.0), "bob") == (None, "")
    assert rules.party_alive(ctx, rules.Pass(now=NOW, mono=100.0 + HEARTBEAT_TTL_S), "bob") == (
        None,
        "",
    )
    ok, why = rules.party_alive(ctx, rules.Pass(now=NOW, mono=101.0 + HEARTBEAT_TTL_S), "bob")
    assert ok is False and "party bob's broker is unreachable" in why
    clients.heartbeats["bob"] = ALIVE  # it answers again: the clock starts afresh
    assert rules.party_alive(ctx, rules.Pass(now=NOW, mono=200.0), "bob") == (True, "")
    assert ctx.unreachable_since == {}


def test_a_task_not_started_within_the_start_timeout_fails_unless_its_job_is_queued():
    p = rules.Pass(now=NOW, mono=0.0)
    ctx = _ctx(FakeClients())
    late = _job(sent_ago_s=START_TIMEOUT_S + 1)
    assert rules.start_timed_out(ctx, p, late, _task(late, "bob", PartyStatus.RECEIVED))
    assert not rules.start_timed_out(ctx, p, late, _task(late, "alice", PartyStatus.RUNNING))
    in_time = _job(sent_ago_s=START_TIMEOUT_S)
    assert not rules.start_timed_out(ctx, p, in_time, _task(in_time, "bob", PartyStatus.PENDING))
    queued = _job(JobState.QUEUED, sent_ago_s=START_TIMEOUT_S + 1)
    assert not rules.start_timed_out(ctx, p, queued, _task(queued, "bob", PartyStatus.PENDING))
    (ev,) = p.synthetic
    assert ev.party == "bob" and ev.data.error.type == ErrorType.START_TIMEOUT
    assert ev.data.error.message.startswith("party bob did not start within 120 s")


def test_any_other_open_task_of_a_sent_job_awaits_its_final_event():
    p = rules.Pass(now=NOW, mono=0.0)
    ctx = _ctx(FakeClients())
    job, queued = _job(), _job(JobState.QUEUED, job_id="job-2")
    assert rules.awaiting_final_event(ctx, p, job, _task(job, "alice"))
    assert not rules.awaiting_final_event(ctx, p, queued, _task(queued, "alice"))
    assert p.awaiting == [("alice", "exe-job-1.alice")]


# --- one pass over the database -----------------------------------------------------------------
def test_scan_runs_the_rules_in_order_and_the_first_that_fires_claims_the_task(sessions):
    clients = FakeClients()
    clients.heartbeats["alice"] = None
    old = _job(sent_ago_s=START_TIMEOUT_S + 1)
    _store(
        sessions,
        old,
        _task(old, "alice", PartyStatus.PENDING),  # dead worker *and* late: WorkerLost only
        _task(old, "bob", PartyStatus.RUNNING),  # alive, running: awaits its final event
    )
    late = _job(deadline_in_s=-1, job_id="job-2")
    _store(sessions, late, _task(late, "alice"), _task(late, "bob"))
    done = _job(JobState.SUCCEEDED, job_id="job-3")
    _store(sessions, done, _task(done, "alice", PartyStatus.SUCCESS), _task(done, "bob"))

    p = rules.Pass(now=NOW, mono=0.0)
    rules.scan(_ctx(clients, sessions), p)
    assert p.timed_out == ["job-2"]  # and none of its tasks was looked at
    assert [(e.task_request_id, e.data.error.type) for e in p.synthetic] == [
        ("exe-job-1.alice", ErrorType.WORKER_LOST)
    ]  # job-3's open task is younger than ORPHAN_AGE_S
    assert p.awaiting == [("bob", "exe-job-1.bob")]
    assert sorted(clients.asked) == ["alice", "bob"]


def test_a_task_left_open_under_a_finished_job_is_cancelled_after_a_minute(sessions):
    done = _job(JobState.CANCELLED)
    _store(
        sessions,
        done,
        _task(done, "alice", PartyStatus.PENDING, created_ago_s=rules.ORPHAN_AGE_S + 1),
        _task(done, "bob", PartyStatus.RUNNING, created_ago_s=rules.ORPHAN_AGE_S - 1),
    )
    p = rules.Pass(now=NOW, mono=0.0)
    with sessions() as s:
        rules.orphaned_tasks(_ctx(FakeClients(), sessions), p, s)
    (ev,) = p.synthetic
    assert ev.party == "alice" and ev.status == TaskStatus.CANCELLED
    assert ev.data.error.type == ErrorType.REVOKED


def test_time_out_ends_the_job_and_names_what_to_revoke_unless_it_ended_already(sessions):
    job = _job(deadline_in_s=-1)
    _store(sessions, job, _task(job, "alice", PartyStatus.SUCCESS), _task(job, "bob"))
    assert rules.time_out(sessions, "job-1") == ([("bob", "exe-job-1.bob")], "exe-job-1")
    with sessions() as s:
        stored = s.get(Job, "job-1")
        assert stored.status == JobState.TIMED_OUT
        assert stored.error.startswith("deadline 2030-01-01T11:59:59") and stored.finished_at
    assert rules.time_out(sessions, "job-1") is None


# --- the result fallback ------------------------------------------------------------------------
def test_a_final_result_stands_in_for_the_event_only_after_the_grace_and_an_empty_stream(
    sessions,
):
    job = _job()
    _store(sessions, job, _task(job, "alice"), _task(job, "bob"))
    clients = FakeClients()
    clients.results["exe-job-1.alice"] = ("SUCCESS", {"result": {"intersection_count": 3}})
    clients.backlog["alice"] = 1
    ctx = _ctx(clients, sessions)
    awaiting = [("alice", "exe-job-1.alice"), ("bob", "exe-job-1.bob")]

    def run(mono: float) -> rules.Pass:
        p = rules.Pass(now=NOW, mono=mono, awaiting=list(awaiting))
        rules.lost_final_events(ctx, p)
        return p

    assert run(10.0).synthetic == []  # first seen final now
    assert ctx.final_seen == {"exe-job-1.alice": 10.0}
    assert run(10.0 + GRACE_S).synthetic == []  # the stream still holds an entry for us
    clients.backlog["alice"] = 0
    (ev,) = run(10.0 + GRACE_S).synthetic
    assert ev.status == TaskStatus.SUCCESS and ev.data.result == {"intersection_count": 3}
    assert ev.data.progress == 1.0 and ev.data.error is None
    awaiting = [("bob", "exe-job-1.bob")]  # alice's own event arrived: forgotten
    assert run(50.0).synthetic == [] and ctx.final_seen == {}


def test_a_failed_or_revoked_result_becomes_the_matching_final_event(sessions):
    job = _job()
    _store(sessions, job, _task(job, "alice"), _task(job, "bob"))
    clients = FakeClients()
    err = {"type": ErrorType.PSI_FAILED.value, "message": "party alice: PSI failed"}
    clients.results["exe-job-1.alice"] = ("FAILURE", NodeTaskError("x", {"error": err}))
    clients.results["exe-job-1.bob"] = ("REVOKED", None)
    ctx = _ctx(clients, sessions)
    failed = rules.event_from_result(ctx, "alice", "exe-job-1.alice")
    assert failed.status == TaskStatus.FAILURE
    assert failed.data.error.type == ErrorType.PSI_FAILED
    revoked = rules.event_from_result(ctx, "bob", "exe-job-1.bob")
    assert revoked.status == TaskStatus.CANCELLED and revoked.data.error.type == ErrorType.REVOKED
    clients.results["exe-job-1.bob"] = ("STARTED", None)
    assert rules.event_from_result(ctx, "bob", "exe-job-1.bob") is None
