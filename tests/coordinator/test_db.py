"""Migrations and models against real databases: SQLite (default) and PostgreSQL (psycopg 3)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData, Table, inspect, select
from sqlalchemy.exc import IntegrityError

from coordinator.db import (
    alembic_config,
    current_revision,
    make_engine,
    migrate,
    session_factory,
    transaction,
)
from coordinator.models import Base, Job, SecretflowTask, TaskStatusLog

HEAD = "0004"  # the newest migration


def test_migrations_create_exactly_the_models(db_url):
    migrate(db_url)
    assert current_revision(db_url) == HEAD
    engine = make_engine(db_url)
    try:
        names = set(inspect(engine).get_table_names())
        assert {"jobs", "secretflow_tasks", "task_status_logs"} <= names
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == [], f"models and migrations disagree: {diff}"
    finally:
        engine.dispose()


def test_upgrading_counts_the_events_already_logged_per_task(db_url):
    """0003's `logged_events` (the timeline cap reads it) starts at what the log holds."""
    migrate(db_url, "0002")
    engine = make_engine(db_url)
    now = dt.datetime.now(dt.UTC)
    try:
        with transaction(session_factory(engine)) as s:  # logs: as in 0002
            s.add_all(_log(f"e{i}", now) for i in range(3))  # all three: exe-1.alice
        with engine.begin() as conn:  # jobs and tasks as 0002 has them (the models have more)
            _insert_job(conn, id="job-1", status="RUNNING", request={}, parties={}, now=now)
            tasks = Table("secretflow_tasks", MetaData(), autoload_with=conn)
            conn.execute(
                tasks.insert(),
                [
                    {"job_id": "job-1", "task_id": "job-1", "subtask_id": "psi",
                     "execution_id": "exe-1", "party": p, "celery_task_id": f"exe-1.{p}",
                     "task_type": "psi", "status": "RUNNING", "seq": 1, "params": {},
                     "created_at": now, "updated_at": now}
                    for p in ("alice", "bob")
                ],
            )  # fmt: skip
        migrate(db_url)
        with engine.connect() as conn:
            counts = dict(
                conn.exec_driver_sql("SELECT party, logged_events FROM secretflow_tasks").all()
            )
        assert counts == {"alice": 3, "bob": 0}
    finally:
        engine.dispose()


def test_upgrading_moves_what_a_queued_job_waits_for_out_of_its_error_text(db_url):
    """0004's `waiting_for` holds what a queued job's error said it waited for ("waiting: <why>
    | <earlier error>"); its error keeps only the earlier error. Downgrading puts it back."""
    migrate(db_url, "0003")
    engine = make_engine(db_url)
    now = dt.datetime.now(dt.UTC)
    errors = {
        "job-w": "waiting: party bob is not ready: Ray head down",
        "job-r": "waiting: party bob is not ready | attempt 1 failed, retrying: PeerLost",
        "job-f": "party bob: the job failed",
    }
    try:
        with engine.begin() as conn:
            for job_id, error in errors.items():
                _insert_job(conn, id=job_id, status="QUEUED", request={}, parties={},
                            error=error, now=now)  # fmt: skip
        migrate(db_url)
        with engine.connect() as conn:
            rows = conn.exec_driver_sql("SELECT id, waiting_for, error FROM jobs ORDER BY id")
            assert [tuple(r) for r in rows] == [
                ("job-f", None, "party bob: the job failed"),
                ("job-r", "party bob is not ready", "attempt 1 failed, retrying: PeerLost"),
                ("job-w", "party bob is not ready: Ray head down", None),
            ]
        command.downgrade(alembic_config(db_url), "0003")
        with engine.connect() as conn:
            back = dict(conn.exec_driver_sql("SELECT id, error FROM jobs").all())
        assert back == errors
    finally:
        engine.dispose()


def _insert_job(conn, *, now: dt.datetime, **values: Any) -> None:
    """A job row as the schema of the database stands (the model may have more columns)."""
    jobs = Table("jobs", MetaData(), autoload_with=conn)
    conn.execute(
        jobs.insert(),
        [{"kind": "psi", "attempt": 0, "max_attempts": 1, "created_at": now,
          "updated_at": now, **values}],
    )  # fmt: skip


def _task(party: str, task_request_id: str) -> SecretflowTask:
    return SecretflowTask(
        task_id="job-1",
        subtask_id="psi",
        execution_id="exe-1",
        party=party,
        task_request_id=task_request_id,
        task_type="psi",
        status="PENDING",
        params={"self_party": party},
    )


def _log(event_id: str, when: dt.datetime) -> TaskStatusLog:
    return TaskStatusLog(
        event_id=event_id,
        task_request_id="exe-1.alice",
        job_id="job-1",
        execution_id="exe-1",
        party="alice",
        seq=1,
        status="RECEIVED",
        data={"stage": "task_received"},
        timestamp=when,
    )


def test_job_tasks_and_logs_round_trip(db_url):
    migrate(db_url)
    engine = make_engine(db_url)
    factory = session_factory(engine)
    now = dt.datetime.now(dt.UTC)
    try:
        with transaction(factory) as s:
            job = Job(
                id="job-1",
                status="QUEUED",
                request={"receiver": "alice"},
                parties={"names": ["alice", "bob"]},
            )
            job.tasks.extend([_task("alice", "exe-1.alice"), _task("bob", "exe-1.bob")])
            s.add(job)
            s.add(_log("e1", now))
        with transaction(factory) as s:
            job = s.get(Job, "job-1")
            assert [t.party for t in job.tasks] == ["alice", "bob"]
            assert job.tasks[0].params == {"self_party": "alice"}
            (log,) = s.scalars(select(TaskStatusLog)).all()
            assert log.data == {"stage": "task_received"} and log.seq == 1
        # an event is stored once: event_id is unique (the listener's idempotency rests on it)
        with pytest.raises(IntegrityError), transaction(factory) as s:
            s.add(_log("e1", now))
        # one task per party per execution
        with pytest.raises(IntegrityError), transaction(factory) as s:
            t = _task("alice", "another-celery-id")
            t.job_id = "job-1"
            s.add(t)
    finally:
        engine.dispose()


def test_migrate_cli(tmp_path):
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'cli.db'}"
    done = subprocess.run(
        [sys.executable, "-m", "coordinator", "migrate", "--database-url", url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert HEAD in done.stderr
    assert current_revision(url) == HEAD


def test_migrate_cli_reads_the_database_url_from_the_secrets_dir(tmp_path):
    """As the settings do: a deployment (Ansible, compose) keeps the URL, with its password, in
    a file of PARTYLINE_SECRETS_DIR, never in the environment or on the command line."""
    import json
    import os
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'secret.db'}"
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "coord_database_url").write_text(url + "\n")
    env = {k: v for k, v in os.environ.items() if k != "COORD_DATABASE_URL"}
    env["PARTYLINE_SECRETS_DIR"] = str(tmp_path / "secrets")
    done = subprocess.run(
        [sys.executable, "-m", "coordinator", "migrate"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert f"revision empty → {HEAD}" in done.stderr  # one line, however long the URL
    assert current_revision(url) == HEAD
    again = subprocess.run(
        [sys.executable, "-m", "coordinator", "migrate", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout) == {
        "database": f"sqlite:///{tmp_path / 'secret.db'}",
        "before": HEAD,
        "after": HEAD,
    }
