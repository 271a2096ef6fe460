"""A party that writes hostile entries into its own status stream, against the real coordinator
app, real redis-servers and both databases (issue 22, points 1 and 3).

Each entry is for a task bob was really given, with one field beyond what the coordinator's
columns hold (or its own timer events could hold once added to it). Before the contract bounded
them, one such entry stored in SQLite or PostgreSQL made every later reconcile pass fail (no
WorkerLost, no start timeout for any job), or failed honest parties' batches applied in the same
transaction. Now each is refused as Malformed, the honest job succeeds, and the timers still
name a dead worker afterwards.
"""

from __future__ import annotations

import json
import resource
import threading
import time

from fastapi.testclient import TestClient

from coordinator.api.main import create_app
from coordinator.intake import Refusal
from coordinator.services.results import celery_result
from node.contract import HEARTBEAT_KEY, STATUS_STREAM, WEB_QUEUE, Stage, TaskStatus

from .helpers import TOKEN, _settings
from .test_api import _emit_all, _heartbeat, _notifier, psi_body, wait_for


def _hostile(job: dict, party: str) -> list[bytes]:
    """What bob writes about its own task of `job`, each with one field out of bounds."""
    task_request_id = f"{job['execution_id']}.{party}"
    base = {
        "event_id": "e0",
        "seq": 2,
        "task_request_id": task_request_id,
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


# --- point 3: nothing a party wrote is loaded past its bound ----------------------------------
def _answer_web_tasks(redis_client, value: bytes, stop: threading.Event) -> threading.Thread:
    """Stand in for bob's web worker: take each task from web_queue and store `value` as its
    Celery result (a hostile worker may store anything there)."""

    def run():
        while not stop.is_set():
            got = redis_client.blpop(WEB_QUEUE, timeout=0.2)
            if got:
                task_id = json.loads(got[1])["headers"]["id"]
                redis_client.set(f"celery-task-meta-{task_id}", value)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_a_partys_oversized_entries_results_and_heartbeat_are_refused_unloaded(env):
    """bob writes stream entries over the bound (4 MB; 10,000 fields; 30 of 200 KB, each
    within a value's bound but 6 MB together), a 2 MB Celery result for its task, a 5 MB
    answer to a datasets call and a 2 MB heartbeat: each is refused from its stated length (the
    coordinator's peak memory stays within 48 MB of where it was), alice and bob's job still
    succeeds on the honest events, and each refusal names bob."""
    app = create_app(_settings(env, start_timeout_s=600, max_attempts=1))
    bob_redis = env["servers"]["bob"].client()
    stop = threading.Event()
    with TestClient(app, headers={"Authorization": f"Bearer {TOKEN}"}) as api:
        api.env = env
        for p in ("alice", "bob"):
            _heartbeat(env, p)
        job = api.post("/api/v1/jobs/psi", json=psi_body()).json()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        bob_redis.xadd(STATUS_STREAM, {"event": b"x" * 4 * 1024 * 1024})
        bob_redis.xadd(STATUS_STREAM, {f"f{i}": b"1" for i in range(10_000)})
        for _ in range(30):
            bob_redis.xadd(STATUS_STREAM, {"event": b"y" * 200_000})
        _emit_all(api, job, TaskStatus.SUCCESS)
        wait_for(lambda: api.get(f"/api/v1/jobs/{job['id']}").json()["status"] == "SUCCEEDED")
        refused = wait_for(
            lambda: (
                (r := api.get("/healthz").json()["refused"].get("bob", {})).get("Oversize") == 32
                and r
            )
        )
        assert refused == {"Oversize": 32}

        task_request_id = f"{job['execution_id']}.bob"
        bob_redis.set(
            f"celery-task-meta-{task_request_id}",
            b'{"status": "SUCCESS", "result": "' + b"r" * 2**21 + b'"}',
        )
        coord = app.state.coordinator
        assert celery_result(coord.clients, coord.intake, "bob", task_request_id) is None
        assert coord.intake.count("bob", Refusal.RESULT_OVERSIZE) == 1

        _answer_web_tasks(bob_redis, b"d" * 5 * 1024 * 1024, stop)
        r = api.get("/api/v1/parties/bob/datasets")
        assert r.status_code == 504 and "refused before loading" in r.json()["detail"], r.text

        bob_redis.set(HEARTBEAT_KEY.format(role="sf"), b"h" * 2 * 1024 * 1024, ex=600)
        parties = {p["name"]: p for p in api.get("/api/v1/parties?health=false").json()}
        assert "party bob" in parties["bob"]["error"] and "heartbeat" in parties["bob"]["error"]
        assert parties["alice"]["worker_alive"] and not parties["alice"]["error"]
        stop.set()
        assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - peak < 48


def test_a_party_flooding_its_own_task_cannot_grow_the_timeline_and_the_timeline_is_paged(
    env, monkeypatch
):
    """bob writes 40 valid PROGRESS events for its own task (a node writes ≈ 8): past the cap
    (here 12) they change the task but are not logged — its final event still is. The detail
    carries the newest page only (here 5) with the total; /timeline pages through them all."""
    from coordinator.services import status, views

    monkeypatch.setattr(status, "MAX_LOGGED_PER_TASK", 12)
    monkeypatch.setattr(views, "TIMELINE_PAGE", 5)
    app = create_app(_settings(env))
    with TestClient(app, headers={"Authorization": f"Bearer {TOKEN}"}) as api:
        api.env = env
        for p in ("alice", "bob"):
            _heartbeat(env, p)
        job = api.post("/api/v1/jobs/psi", json=psi_body()).json()
        bob = _notifier(api, job, "bob")
        for i in range(40):
            bob.emit(TaskStatus.PROGRESS, Stage.ALGORITHM_RUNNING, progress=i / 40)
        _emit_all(api, job, TaskStatus.SUCCESS)
        d = wait_for(
            lambda: (
                (d := api.get(f"/api/v1/jobs/{job['id']}").json())["status"] == "SUCCEEDED" and d
            )
        )
        pages, offset = [], 0
        while True:
            page = api.get(f"/api/v1/jobs/{job['id']}/timeline?offset={offset}&limit=4").json()
            pages += page["items"]
            offset += len(page["items"])
            if not page["items"]:
                break
        by_party = {p: [e for e in pages if e["party"] == p] for p in ("alice", "bob")}
        assert len(by_party["alice"]) == 3  # RECEIVED, RUNNING, SUCCESS: nothing near the cap
        assert len(by_party["bob"]) == 13  # 12, and the event that ended its task
        assert by_party["bob"][-1]["status"] == "SUCCESS"
        assert d["timeline_total"] == len(pages) == 16
        assert [e["event_id"] for e in d["timeline"]] == [e["event_id"] for e in pages[-5:]]
        assert api.get("/api/v1/jobs/job-nope/timeline").status_code == 404


# --- a misbehaving party, while honest jobs run (issue 22) ----------------------------------
def _honest_node(env, app, party: str, stop: threading.Event, done: list) -> threading.Thread:
    """Stands in for an honest party's SecretFlow worker: takes each task from its queue and
    reports it as a node does (RECEIVED, RUNNING, SUCCESS), through its own stream."""
    from coordinator.models import SecretflowTask
    from node.contract import SECRETFLOW_QUEUE
    from node.worker.notifier import StatusNotifier

    client = env["servers"][party].client()

    def run() -> None:
        while not stop.is_set():
            got = client.blpop(SECRETFLOW_QUEUE, timeout=0.2)
            if not got:
                continue
            task_request_id = json.loads(got[1])["headers"]["id"]
            with app.state.coordinator.db() as s:
                row = s.query(SecretflowTask).filter_by(task_request_id=task_request_id).one()
                task_id, execution_id = row.task_id, row.execution_id
            n = StatusNotifier(
                client, task_request_id=task_request_id, task_id=task_id, subtask_id="psi",
                execution_id=execution_id, party=party, task_name="tasks.secretflow.execute_task",
            )  # fmt: skip
            n.emit(TaskStatus.RECEIVED, Stage.TASK_RECEIVED, progress=0.0)
            n.emit(TaskStatus.RUNNING, None, progress=0.05)
            n.emit(
                TaskStatus.SUCCESS, Stage.TASK_FINISHED, progress=1.0,
                result={"intersection_count": 42 if party == "alice" else None},
                performance_metrics={"total_s": 0.1},
            )  # fmt: skip
            done.append(task_request_id)

    t = threading.Thread(target=run, name=f"honest-{party}", daemon=True)
    t.start()
    return t


def _misbehave(env, stop: threading.Event, sent: list) -> threading.Thread:
    """carol, for as long as it runs: malformed, oversized, out-of-range and forged entries in
    its stream, and big values under result keys."""
    carol = env["servers"]["carol"].client()
    hostile = [
        {"event": b"{not json"},
        {"event": b"\xff\xfe"},
        {"event": b"x" * 300_000},  # over the entry bound, within a value's
        {"event": json.dumps({"seq": 2**63, "party": "carol"}).encode()},
        {
            "event": json.dumps(
                {
                    "event_id": "f",
                    "seq": 5,
                    "task_request_id": "exe-1.alice",
                    "task_id": "job-1",
                    "subtask_id": "psi",
                    "execution_id": "exe-1",
                    "party": "alice",
                    "status": "FAILURE",
                }
            ).encode()
        },
    ]

    def run() -> None:
        i = 0
        while not stop.is_set():
            carol.xadd(STATUS_STREAM, hostile[i % len(hostile)], maxlen=2000, approximate=True)
            if i % 50 == 0:
                carol.set(f"celery-task-meta-flood-{i}", b"r" * 1_000_000, ex=60)
                carol.xadd(STATUS_STREAM, {"event": b"z" * 2_000_000})  # over a value's bound
            sent.append(i)
            i += 1
            time.sleep(0.002)

    t = threading.Thread(target=run, name="misbehaving-carol", daemon=True)
    t.start()
    return t


N_JOBS = 200


def test_honest_jobs_all_end_right_while_a_party_misbehaves_for_their_whole_run(env):
    """200 jobs between alice and bob, while carol writes hostile entries into its stream and
    floods its result keys the whole time: every job SUCCEEDED with alice's count (0 lost, 0
    hung), carol's entries are refused, and the coordinator's peak memory grows by less than
    200 MB."""
    app = create_app(_settings(env, warm_sessions=False))
    stop, done, sent = threading.Event(), [], []
    with TestClient(app, headers={"Authorization": f"Bearer {TOKEN}"}) as api:
        # the test registry has 8 link ports a party: without the 60 s a released SPU port
        # rests (a real listener may linger), 8 jobs a minute would be the pace
        app.state.coordinator.jobs.ports.cooldown_s = 0.0
        for p in ("alice", "bob", "carol"):
            _heartbeat(env, p)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        threads = [
            _misbehave(env, stop, sent),
            _honest_node(env, app, "alice", stop, done),
            _honest_node(env, app, "bob", stop, done),
        ]
        try:
            jobs = [
                api.post("/api/v1/jobs/psi", json=psi_body()).json()["id"] for _ in range(N_JOBS)
            ]
            end = time.monotonic() + 600
            while True:
                page = api.get("/api/v1/jobs?limit=200").json()["items"]
                states = {j["id"]: j["status"] for j in page if j["id"] in jobs}
                if all(
                    s in ("SUCCEEDED", "FAILED", "CANCELLED", "TIMED_OUT") for s in states.values()
                ):
                    break
                assert time.monotonic() < end, f"hung: {sorted(set(states.values()))}"
                time.sleep(0.5)
                for p in ("alice", "bob", "carol"):
                    _heartbeat(env, p)
        finally:
            stop.set()
            for t in threads:
                t.join(10)
        assert set(states.values()) == {"SUCCEEDED"} and len(states) == N_JOBS
        counts = {api.get(f"/api/v1/jobs/{j}/result").json()["intersection_count"] for j in jobs}
        assert counts == {42}
        refused = api.get("/healthz").json()["refused"]["carol"]
        assert refused.get("Malformed", 0) > 0 and refused.get("Oversize", 0) > 0
        assert refused.get("OtherParty", 0) > 0 and len(sent) > 1000
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - peak
        assert grown < 200, f"the coordinator's peak memory grew by {grown:.0f} MB"
