"""coordinator.services.status.apply_events against a real database (SQLite and PostgreSQL):
what is logged and what is applied when node events and coordinator-made events meet."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from coordinator.db import make_engine, migrate, session_factory, transaction
from coordinator.models import Job, SecretflowTask, TaskStatusLog
from coordinator.services.status import COORDINATOR_SOURCE, apply_events
from node.contract import ErrorInfo, EventData, StatusEvent, TaskStatus, utcnow

PARTIES = ("alice", "bob")


@pytest.fixture
def sessions(db_url):
    migrate(db_url)
    engine = make_engine(db_url)
    factory = session_factory(engine)
    with transaction(factory) as s:
        s.add(
            Job(
                id="job-1",
                status="RUNNING",
                request={"receiver": "alice"},
                parties={"names": list(PARTIES)},
                execution_id="exe-1",
                attempt=1,
                max_attempts=1,
            )
        )
        for p in PARTIES:
            s.add(
                SecretflowTask(
                    job_id="job-1",
                    task_id="job-1",
                    subtask_id="psi",
                    execution_id="exe-1",
                    party=p,
                    task_request_id=f"exe-1.{p}",
                    task_type="psi",
                    status="RUNNING",
                    seq=2,
                    params={},
                )
            )
    yield factory
    engine.dispose()


def _event(party, seq, status, *, source=None, error=None, event_id=None, result=None):
    kw = {"event_id": event_id} if event_id else {}
    if source:
        kw["worker_container"] = source
    return StatusEvent(
        seq=seq,
        task_request_id=f"exe-1.{party}",
        task_id="job-1",
        subtask_id="psi",
        execution_id="exe-1",
        party=party,
        status=status,
        data=EventData(stage="task_finished", progress=1.0, error=error, result=result),
        **kw,
    )


def _logged(factory, party):
    with factory() as s:
        return list(
            s.scalars(
                select(TaskStatusLog.event_id).where(
                    TaskStatusLog.task_request_id == f"exe-1.{party}"
                )
            )
        )


def test_a_fallback_event_overtaken_by_the_nodes_own_event_is_not_logged(sessions):
    node = _event("alice", 3, TaskStatus.SUCCESS, result={"intersection_count": 7})
    fallback = _event(
        "alice", 1_000_000_002, TaskStatus.SUCCESS, source=COORDINATOR_SOURCE, event_id="coord-x"
    )
    with transaction(sessions) as s:
        apply_events(s, [node])
    with transaction(sessions) as s:
        out = apply_events(s, [fallback])
    assert out.applied == 0
    assert _logged(sessions, "alice") == [node.event_id]  # the timeline shows the node's word


def test_a_coordinator_event_that_decides_is_logged_and_fails_the_job(sessions):
    lost = _event(
        "bob",
        1_000_000_002,
        TaskStatus.FAILURE,
        source=COORDINATOR_SOURCE,
        event_id="coord-lost",
        error=ErrorInfo(type="WorkerLost", message="party bob's SecretFlow worker is gone"),
    )
    with transaction(sessions) as s:
        out = apply_events(s, [lost])
    assert out.applied == 1 and _logged(sessions, "bob") == ["coord-lost"]
    with sessions() as s:
        job = s.get(Job, "job-1")
        assert job.status == "FAILED" and job.failed_party == "bob"
        assert "worker is gone" in job.error


def test_a_node_event_is_logged_even_when_it_changes_nothing(sessions):
    success = _event("alice", 3, TaskStatus.SUCCESS)
    late = _event("alice", 2, TaskStatus.PROGRESS)  # older than what the task already has
    with transaction(sessions) as s:
        apply_events(s, [success])
    with transaction(sessions) as s:
        out = apply_events(s, [late])
    assert out.applied == 0
    assert sorted(_logged(sessions, "alice")) == sorted([success.event_id, late.event_id])


def test_a_stored_celery_result_names_its_job_so_the_live_view_is_told(sessions):
    """record_task_result returns the job id: the service announces the change with it (the
    job page then shows the metrics that came with the result)."""
    from coordinator.services.status import record_task_result

    metrics = {"total_s": 1.5, "algorithm_s": 0.2}
    with transaction(sessions) as s:
        assert record_task_result(s, "exe-1.alice", {"performance_metrics": metrics}) == "job-1"
        assert record_task_result(s, "exe-9.nobody", {"performance_metrics": metrics}) is None
    with sessions() as s:
        row = s.scalars(
            select(SecretflowTask).where(SecretflowTask.task_request_id == "exe-1.alice")
        ).one()
        assert row.performance_metrics == metrics


def test_a_failure_reported_after_the_deadline_ends_the_job_timed_out(sessions):
    """The nodes stop a job at its deadline as the deadline rule does: a node's report that
    comes before the rule's next pass ends the job TIMED_OUT, not FAILED, and the other party's
    task is revoked."""
    with transaction(sessions) as s:
        s.get(Job, "job-1").deadline = utcnow() - dt.timedelta(seconds=1)
    stopped = _event(
        "alice",
        3,
        TaskStatus.FAILURE,
        error=ErrorInfo(type="TimeLimitExceeded", message="job stopped: the job's deadline passed"),
    )
    with transaction(sessions) as s:
        out = apply_events(s, [stopped])
    assert out.terminate == [("bob", "exe-1.bob")]
    with sessions() as s:
        job = s.get(Job, "job-1")
        assert job.status == "TIMED_OUT" and job.failed_party is None
        assert job.error.startswith("deadline ") and "deadline passed" in job.error


def test_a_failure_before_the_deadline_fails_the_job(sessions):
    with transaction(sessions) as s:
        s.get(Job, "job-1").deadline = utcnow() + dt.timedelta(hours=1)
    failed = _event(
        "bob",
        3,
        TaskStatus.FAILURE,
        error=ErrorInfo(type="KeyColumnMissing", message="no key column"),
    )
    with transaction(sessions) as s:
        apply_events(s, [failed])
    with sessions() as s:
        job = s.get(Job, "job-1")
        assert job.status == "FAILED" and job.failed_party == "bob"
