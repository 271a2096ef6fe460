"""The unbalanced PSI caches the coordinator knows of (from its cache jobs), and a query bound
to the newest cache of its name before anything is sent."""

from __future__ import annotations

import datetime as dt

import pytest

from coordinator.db import make_engine, migrate, session_factory
from coordinator.jobkinds.table import job_kinds
from coordinator.jobkinds.ub_psi import UbPsiCreate
from coordinator.merge import JobState
from coordinator.models import Job, SecretflowTask
from coordinator.services.caches import find_cache, list_caches

T0 = dt.datetime(2026, 12, 7, 10, 0, tzinfo=dt.UTC)


@pytest.fixture
def db(tmp_path):
    url = f"sqlite:///{tmp_path / 'c.db'}"
    migrate(url)
    return session_factory(make_engine(url))


def _cache_job(s, job_id: str, *, name="acc", client="bob", status=JobState.SUCCEEDED, at=T0):
    exe = f"exe-{job_id}"
    job = Job(
        id=job_id,
        kind="ub_psi_cache",
        status=status,
        request={
            "cache": name,
            "server": "alice",
            "input": "t/big.csv",
            "keys": ["id"],
            "client": client,
        },
        parties={"names": sorted(["alice", client])},
        execution_id=exe,
        finished_at=at,
    )
    for party, result in (("alice", {"rows": 1000, "bytes": 5000}), (client, {"bytes": 36000})):
        job.tasks.append(
            SecretflowTask(
                task_id=job_id,
                subtask_id="s",
                execution_id=exe,
                party=party,
                task_request_id=f"{exe}.{party}",
                task_type="ub_psi_cache",
                status="SUCCESS",
                params={},
                result=result,
            )
        )
    s.add(job)


def test_the_newest_successful_cache_of_a_name_is_listed_once(db):
    with db.begin() as s:
        _cache_job(s, "job-old", at=T0)
        _cache_job(s, "job-new", at=T0 + dt.timedelta(hours=1))
        _cache_job(s, "job-failed", status=JobState.FAILED, at=T0 + dt.timedelta(hours=2))
        _cache_job(s, "job-other", name="other", client="carol", at=T0)
    with db() as s:
        caches = list_caches(s)
        assert [(c.cache, c.made_by) for c in caches] == [
            ("acc", "job-new"),
            ("other", "job-other"),
        ]
        acc = caches[0]
        assert (acc.server, acc.client, acc.table, acc.keys) == (
            "alice",
            "bob",
            "t/big.csv",
            ["id"],
        )
        assert (acc.rows, acc.server_bytes, acc.client_bytes) == (1000, 5000, 36000)
        assert acc.age_s > 0
        assert find_cache(s, "alice", "nope") is None


def test_a_query_is_bound_to_the_newest_cache_or_refused_saying_why(db):
    kind = job_kinds()["ub_psi"]
    q = UbPsiCreate(
        cache="acc", server="alice", client="bob", input="q.csv", keys=["k"], output="o.csv"
    )
    with db.begin() as s:
        _cache_job(s, "job-old", at=T0)
        _cache_job(s, "job-new", at=T0 + dt.timedelta(hours=1))
    with db() as s:
        admitted = kind.admit(q, s)
        assert admitted.made_by == "job-new"
        assert kind.task_config(admitted)["made_by"] == "job-new"
        with pytest.raises(ValueError, match="was made for bob, not carol"):
            kind.admit(q.model_copy(update={"client": "carol"}), s)
        with pytest.raises(ValueError, match="no cache 'x' of alice: make it first"):
            kind.admit(q.model_copy(update={"cache": "x"}), s)
    assert (
        kind.who_learns(q)["alice"]
        == "the number of bob's distinct keys; nothing of the intersection"
    )
