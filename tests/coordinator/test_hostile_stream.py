"""A party that writes hostile entries into its own status stream, against the real coordinator
app, real redis-servers and both databases (issue 22, point 1).

Each entry is for a task bob was really given, with one field beyond what the coordinator's
columns hold (or its own timer events could hold once added to it). Before the contract bounded
them, one such entry stored in SQLite or PostgreSQL made every later reconcile pass fail (no
WorkerLost, no start timeout for any job), or failed honest parties' batches applied in the same
transaction. Now each is refused as Malformed, the honest job succeeds, and the timers still
name a dead worker afterwards.
"""

from __future__ import annotations

import json

from fastapi.testclient import TestClient

from coordinator.api.main import create_app
from node.contract import HEARTBEAT_KEY, STATUS_STREAM, Stage, TaskStatus

from .helpers import TOKEN, _settings
from .test_api import _emit_all, _heartbeat, _notifier, psi_body, wait_for


def _hostile(job: dict, party: str) -> list[bytes]:
    """What bob writes about its own task of `job`, each with one field out of bounds."""
    trid = f"{job['execution_id']}.{party}"
    base = {
        "event_id": "e0",
        "seq": 2,
        "task_request_id": trid,
        "task_id": job["id"],
        "subtask_id": "psi",
        "execution_id": job["execution_id"],
        "party": party,
        "status": "RUNNING",
        "timestamp": "2030-01-01T00:00:00Z",
        "data": {"stage": "algorithm_running"},
    }
    bad = [
        {"seq": 1_200_000_000},  # fits PostgreSQL's Integer; the timers' 1e9 + seq does not
        {"seq": 2**63 - 1},  # fits SQLite; the timers' seq does not
        {"seq": 2**63},
        {"event_id": "e" * 65},
        {"data": {"stage": "s" * 33}},
        {"data": {"stage": "x\u0000y"}},
        {"data": {"progress": float("nan")}},
        {"data": {"result": {"intersection_count": float("inf")}}},
    ]
    out = []
    for i, over in enumerate(bad):
        doc = {**base, "event_id": f"hostile{i}", **over}
        out.append(json.dumps(doc).encode())
    out.append(b'{"seq": 3, "party": "\xff\xfe not utf-8"}')
    return out


def test_a_partys_out_of_range_entries_are_refused_and_the_timers_keep_running(env, db_url):
    app = create_app(_settings(env, database_url=db_url, start_timeout_s=600, max_attempts=1))
    bob_redis = env["servers"]["bob"].client()
    with TestClient(app, headers={"Authorization": f"Bearer {TOKEN}"}) as api:
        api.env = env
        for p in ("alice", "bob"):
            _heartbeat(env, p)
        # 1. during a job: the hostile entries between honest events of both parties
        job = api.post("/api/v1/jobs/psi", json=psi_body()).json()
        for party in ("alice", "bob"):
            _notifier(api, job, party).emit(TaskStatus.RECEIVED, Stage.TASK_RECEIVED)
        hostile = _hostile(job, "bob")
        for raw in hostile:
            bob_redis.xadd(STATUS_STREAM, {"event": raw})
        _emit_all(api, job, TaskStatus.SUCCESS)
        d = wait_for(
            lambda: (
                (d := api.get(f"/api/v1/jobs/{job['id']}").json())["status"] == "SUCCEEDED" and d
            )
        )
        assert api.get(f"/api/v1/jobs/{job['id']}/result").json()["intersection_count"] == 42
        assert not [e for e in d["timeline"] if e["event_id"].startswith("hostile")]
        refused = wait_for(
            lambda: (
                (r := api.get("/healthz").json()["refused"]).get("bob", {}).get("Malformed")
                == len(hostile)
                and r
            )
        )
        assert refused == {"bob": {"Malformed": len(hostile)}}

        # 2. again for a past task, and for the open task of the next job: then bob's worker
        # dies, and the timers still fail that job naming bob (their event for the task is
        # made from its stored seq, which the hostile seqs never reached)
        for raw in _hostile(job, "bob"):
            bob_redis.xadd(STATUS_STREAM, {"event": raw})
        job2 = api.post("/api/v1/jobs/psi", json=psi_body()).json()
        for party in ("alice", "bob"):
            _notifier(api, job2, party).emit(TaskStatus.RECEIVED, Stage.TASK_RECEIVED)
        for raw in _hostile(job2, "bob"):
            bob_redis.xadd(STATUS_STREAM, {"event": raw})
        wait_for(
            lambda: api.get("/healthz").json()["refused"]["bob"]["Malformed"] == 3 * len(hostile)
        )
        bob_redis.delete(HEARTBEAT_KEY.format(role="sf"))  # bob's worker dies
        d2 = wait_for(
            lambda: (d := api.get(f"/api/v1/jobs/{job2['id']}").json())["status"] == "FAILED" and d,
            timeout=60,
        )
        assert d2["failed_party"] == "bob" and "WorkerLost" in d2["error"]
