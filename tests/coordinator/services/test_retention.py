"""`python -m coordinator prune` against SQLite and PostgreSQL: finished jobs past the
retention go with their tasks and timelines; recent or open jobs stay, whatever their age."""

from __future__ import annotations

import datetime as dt
import json

from sqlalchemy import func, select

from coordinator.__main__ import main
from coordinator.db import make_engine, migrate, session_factory, transaction
from coordinator.models import Job, SecretflowTask, TaskStatusLog

NOW = dt.datetime.now(dt.UTC)


def _job(s, job_id: str, status: str, ended_days_ago: float | None, created_days_ago: float):
    job = Job(
        id=job_id,
        status=status,
        request={"receiver": "alice"},
        parties={"names": ["alice", "bob"]},
        execution_id=f"exe-{job_id}",
        created_at=NOW - dt.timedelta(days=created_days_ago),
        finished_at=None if ended_days_ago is None else NOW - dt.timedelta(days=ended_days_ago),
    )
    for party in ("alice", "bob"):
        task_request_id = f"exe-{job_id}.{party}"
        job.tasks.append(
            SecretflowTask(
                task_id=job_id, subtask_id="psi", execution_id=f"exe-{job_id}", party=party,
                task_request_id=task_request_id, task_type="psi", status="SUCCESS", params={},
            )
        )  # fmt: skip
        for seq in (1, 2, 3):
            s.add(
                TaskStatusLog(
                    event_id=f"{task_request_id}-{seq}", task_request_id=task_request_id, job_id=job_id,
                    execution_id=f"exe-{job_id}", party=party, seq=seq, status="RUNNING",
                    data={}, timestamp=NOW,
                )
            )  # fmt: skip
    s.add(job)


def _counts(factory) -> dict[str, int]:
    with factory() as s:
        return {
            "jobs": s.scalar(select(func.count()).select_from(Job)),
            "tasks": s.scalar(select(func.count()).select_from(SecretflowTask)),
            "events": s.scalar(select(func.count()).select_from(TaskStatusLog)),
        }


def test_prune_deletes_only_finished_jobs_past_the_retention(db_url, capsys):
    migrate(db_url)
    engine = make_engine(db_url)
    factory = session_factory(engine)
    try:
        with transaction(factory) as s:
            _job(s, "job-old-ok", "SUCCEEDED", ended_days_ago=100, created_days_ago=100)
            _job(s, "job-old-failed", "FAILED", ended_days_ago=40, created_days_ago=41)
            _job(s, "job-recent", "SUCCEEDED", ended_days_ago=2, created_days_ago=2)
            _job(s, "job-open-old", "RUNNING", ended_days_ago=None, created_days_ago=100)
        args = ["prune", "--database-url", db_url, "--older-than-days", "30", "--json"]
        assert main([*args, "--dry-run"]) == 0
        dry = json.loads(capsys.readouterr().out)
        assert (dry["jobs"], dry["tasks"], dry["events"]) == (2, 4, 12)
        assert _counts(factory) == {"jobs": 4, "tasks": 8, "events": 24}  # nothing went
        assert main(args) == 0
        done = json.loads(capsys.readouterr().out)
        assert (done["jobs"], done["tasks"], done["events"]) == (2, 4, 12)
        with factory() as s:
            assert sorted(s.scalars(select(Job.id))) == ["job-open-old", "job-recent"]
        assert _counts(factory) == {"jobs": 2, "tasks": 4, "events": 12}
        assert main(args) == 0  # again: nothing more
        assert json.loads(capsys.readouterr().out)["jobs"] == 0
    finally:
        engine.dispose()


def test_prune_refuses_a_retention_of_zero(tmp_path):
    url = f"sqlite:///{tmp_path / 'c.db'}"
    migrate(url)
    assert main(["prune", "--database-url", url, "--older-than-days", "0"]) == 2
