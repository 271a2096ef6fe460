"""The REST API and job service against three real redis-servers (one per party) and SQLite.

No node workers run here: the parties' queues are inspected directly (what reached them), and
status events are written into each party's stream exactly as a node writes them
(node.worker.notifier.StatusNotifier). Real multi-party PSI through the API is in tests/e2e.
"""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest
from fastapi.testclient import TestClient

from coordinator.api.main import create_app
from node.contract import (
    HEARTBEAT_KEY,
    SECRETFLOW_QUEUE,
    STATUS_STREAM,
    ErrorInfo,
    ErrorType,
    EventData,
    Stage,
    StatusEvent,
    TaskStatus,
)
from node.worker.notifier import StatusNotifier

from .helpers import PARTIES, TOKEN, _settings


@pytest.fixture()
def api(env):
    for p in PARTIES:
        _heartbeat(env, p)  # every party's SecretFlow worker "alive"
    app = create_app(_settings(env))
    with TestClient(app, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        client.env = env
        client.coord = app.state.coordinator
        yield client


def _heartbeat(env, party: str, problems: tuple[str, ...] = ()) -> None:
    """Stand in for a live SecretFlow worker's heartbeat (the node writes this every 5 s)."""
    env["servers"][party].client().set(
        HEARTBEAT_KEY.format(role="sf"),
        json.dumps(
            {
                "party": party,
                "worker": f"sf.{party}@x",
                "pid": 1,
                "at": dt.datetime.now(dt.UTC).isoformat(),  # a new one each time
                "active": [],
                "problems": list(problems),
            }
        ),
        ex=600,
    )


def psi_body(**over) -> dict:
    body = {
        "parties": {
            "alice": {"keys": ["uid"], "input": "a.csv", "output": "out/a.csv"},
            "bob": {"keys": ["id"], "input": "b.csv", "output": "out/b.csv"},
        },
        "receiver": "alice",
        "protocol": "RR22",
    }
    body.update(over)
    return body


def queued(env) -> dict[str, int]:
    return {p: s.client().llen(SECRETFLOW_QUEUE) for p, s in env["servers"].items()}


def queued_messages(env, party: str) -> list[dict]:
    return [json.loads(m) for m in env["servers"][party].client().lrange(SECRETFLOW_QUEUE, 0, -1)]


def wait_for(fn, timeout=30.0, every=0.2):
    end = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out; last value {value!r}")
        time.sleep(every)


# --- auth -------------------------------------------------------------------------------------
def test_api_refuses_missing_or_wrong_token(api):
    assert api.get("/api/v1/jobs", headers={"Authorization": ""}).status_code == 401
    r = api.get("/api/v1/jobs", headers={"Authorization": "Bearer wrong-token-xxxxxxxxxx"})
    assert r.status_code == 401
    assert "bearer token" in r.json()["detail"]
    assert api.get("/api/v1/jobs").status_code == 200


def test_openapi_docs_are_served(api):
    assert api.get("/docs").status_code == 200
    spec = api.get("/openapi.json").json()
    assert "/api/v1/jobs/psi" in spec["paths"]


def test_the_kinds_say_before_launch_who_learns_what(api):
    """Each kind is listed with its request schema (what the UI's form is drawn from) and its
    own statement of what each party learns."""
    kinds = {k["name"]: k for k in api.get("/api/v1/jobs/kinds").json()}
    psi = kinds["psi"]
    assert "The receiver learns the intersection" in psi["learns"]
    assert {"parties", "receiver", "protocol", "duplicates"} <= set(psi["schema"]["properties"])
    unknown = api.post("/api/v1/jobs/nosuch", json={})
    assert unknown.status_code == 404 and "there are: psi" in unknown.json()["detail"]


def _three(protocol: str | None, **over) -> dict:
    parties = {
        p: {"keys": ["k"], "input": "t.csv", "output": "o.csv"} for p in ("alice", "bob", "carol")
    }
    return psi_body(parties=parties, receiver="bob", protocol=protocol, **over)


def test_what_each_party_learns_is_said_per_protocol_and_party_count(api):
    """Before launch (POST /jobs/psi/learns, what the form shows beside the protocol select):
    in ECDH_3PC the party after the receiver in rank order learns one pairwise intersection
    size, the third nothing of any intersection; between two parties the sender nothing."""
    three = api.post("/api/v1/jobs/psi/learns", json=_three("ECDH_3PC")).json()
    assert three["bob"].startswith(
        "the intersection: which of its own keys alice and carol hold too"
    )
    assert three["carol"].startswith("the size of carol ∩ alice, not which keys")
    assert "nothing of any intersection" in three["alice"]
    npc = api.post("/api/v1/jobs/psi/learns", json=_three("KKRT_NPC")).json()
    assert "intermediate intersection" in npc["alice"] and "nothing of which keys" in npc["alice"]
    default = api.post("/api/v1/jobs/psi/learns", json=_three(None)).json()
    assert default == three  # unset: the one that reveals least
    two = api.post("/api/v1/jobs/psi/learns", json=psi_body()).json()
    assert two["bob"].endswith("nothing of the intersection, not even its size")
    both = api.post("/api/v1/jobs/psi/learns", json=psi_body(broadcast_result=True)).json()
    assert both["bob"].startswith("the intersection: which of its own keys alice holds too")
    bad = api.post("/api/v1/jobs/psi/learns", json=_three("RR22"))
    assert bad.status_code == 422 and "for 3 parties use ECDH_3PC" in bad.text


# --- validation: 422 naming the field, nothing reaches any queue ----------------------------
def _drop(body, party, field):
    del body["parties"][party][field]
    return body


BAD = {
    "three parties in a two-party protocol": (
        psi_body(
            parties={
                **psi_body()["parties"],
                "carol": {"keys": ["k"], "input": "c.csv", "output": "o.csv"},
            }
        ),
        "protocol RR22 runs with 2 parties, got 3; for 3 parties use ECDH_3PC, ECDH_NPC, KKRT_NPC",
    ),
    "unknown party": (
        psi_body(
            parties={
                **psi_body()["parties"],
                "dave": {"keys": ["k"], "input": "d.csv", "output": "o.csv"},
            },
            protocol="ECDH_3PC",
        ),
        "unknown party 'dave'",
    ),
    "unknown party name": (
        {
            **psi_body(),
            "parties": {
                "alice": psi_body()["parties"]["alice"],
                "zed": psi_body()["parties"]["bob"],
            },
        },
        "unknown party 'zed'",
    ),
    "one party": (
        {**psi_body(), "parties": {"alice": psi_body()["parties"]["alice"]}},
        "a PSI runs between 2 and 8 parties, got 1",
    ),
    "receiver not a party": (
        psi_body(receiver="carol"),
        "receiver 'carol' is not one of the parties",
    ),
    "no keys": (
        {
            **psi_body(),
            "parties": {
                **psi_body()["parties"],
                "bob": {"keys": [], "input": "b.csv", "output": "o.csv"},
            },
        },
        "keys",
    ),
    "no input": (_drop(psi_body(), "bob", "input"), "input"),
    "no output": (_drop(psi_body(), "alice", "output"), "output"),
    "absolute path": (
        {
            **psi_body(),
            "parties": {
                **psi_body()["parties"],
                "bob": {"keys": ["id"], "input": "/etc/passwd", "output": "o.csv"},
            },
        },
        "absolute",
    ),
    "escaping path": (
        {
            **psi_body(),
            "parties": {
                **psi_body()["parties"],
                "bob": {"keys": ["id"], "input": "b.csv", "output": "../../x.csv"},
            },
        },
        "'..'",
    ),
    "unknown protocol": (psi_body(protocol="MAGIC"), "protocol"),
    "naive deadline": (psi_body(deadline="2030-01-01T00:00:00"), "time zone"),
    "past deadline": (psi_body(deadline="2001-01-01T00:00:00Z"), "already passed"),
    "far deadline": (psi_body(deadline="2099-01-01T00:00:00Z"), "more than 7 days ahead"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_request_is_422_naming_the_problem_and_sends_nothing(api, case):
    body, needle = BAD[case]
    r = api.post("/api/v1/jobs/psi", json=body)
    assert r.status_code == 422, r.text
    assert needle in r.text
    assert queued(api.env) == {p: 0 for p in PARTIES}
    assert api.get("/api/v1/jobs").json()["total"] == 0


def test_duplicate_party_is_refused(api):
    raw = (
        '{"parties": {"alice": {"keys": ["uid"], "input": "a.csv", "output": "o.csv"},'
        ' "alice": {"keys": ["uid"], "input": "b.csv", "output": "o.csv"}}, "receiver": "alice"}'
    )
    r = api.post("/api/v1/jobs/psi", content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == 422
    assert queued(api.env) == {p: 0 for p in PARTIES}


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_over_the_limit_is_413_and_sends_nothing(api, chunked):
    """COORD_MAX_BODY_BYTES (1 MiB): refused as it arrives, with or without a Content-Length."""
    filler = b" " * (64 << 10)
    parts = [b'{"receiver": "alice", "pad": "', *([filler] * 20), b'"}']  # 1.25 MiB
    content = iter(parts) if chunked else b"".join(parts)
    r = api.post("/api/v1/jobs/psi", content=content, headers={"Content-Type": "application/json"})
    assert r.status_code == 413, r.text
    assert r.headers["x-content-type-options"] == "nosniff"  # our headers on Starlette's refusal
    assert queued(api.env) == {p: 0 for p in PARTIES}
    assert api.get("/api/v1/jobs").json()["total"] == 0
    assert api.post("/api/v1/jobs/psi", json=psi_body()).status_code == 201  # the app goes on


def test_unreachable_party_is_503_naming_it_and_nothing_is_sent(api):
    api.env["servers"]["bob"].stop()
    r = api.post("/api/v1/jobs/psi", json=psi_body())
    assert r.status_code == 503, r.text
    assert "party bob" in r.json()["detail"]
    assert api.env["servers"]["alice"].client().llen(SECRETFLOW_QUEUE) == 0
    assert api.get("/api/v1/jobs").json()["total"] == 0


# --- fan-out -----------------------------------------------------------------------------------
def test_job_is_sent_signed_to_exactly_its_parties(api):
    r = api.post("/api/v1/jobs/psi", json=psi_body())
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["status"] == "DISPATCHED", job["error"]
    assert queued(api.env) == {"alice": 1, "bob": 1, "carol": 0}
    for party in ("alice", "bob"):
        (msg,) = queued_messages(api.env, party)
        assert msg["content-type"] == "application/data"  # the auth serializer's wire type
        assert msg["headers"]["id"] == f"{job['execution_id']}.{party}"
        assert msg["headers"]["task"] == "tasks.secretflow.execute_task"
    detail = api.get(f"/api/v1/jobs/{job['id']}").json()
    params = {t["party"]: t for t in detail["tasks"]}
    assert set(params) == {"alice", "bob"}
    assert detail["party_status"] == {"alice": "PENDING", "bob": "PENDING"}


def test_only_template_self_party_differs_and_ports_come_from_each_range(api):
    job = api.post("/api/v1/jobs/psi", json=psi_body()).json()
    with api.coord.db() as s:
        from coordinator.models import SecretflowTask

        rows = {t.party: t.params for t in s.query(SecretflowTask).filter_by(job_id=job["id"])}
    a, b = rows["alice"], rows["bob"]
    assert a["sf_init_config"]["self_party"] == "alice"
    assert b["sf_init_config"]["self_party"] == "bob"
    b["sf_init_config"]["self_party"] = "alice"
    assert a == b
    topo = api.coord.topology
    for p in ("alice", "bob"):
        port = int(a["sf_init_config"]["cluster"][p]["address"].rsplit(":", 1)[1])
        assert port in topo.party(p).fed_ports


def test_gang_scheduling_queues_a_second_job_on_a_busy_party(api):
    first = api.post("/api/v1/jobs/psi", json=psi_body()).json()
    second = api.post("/api/v1/jobs/psi", json=psi_body()).json()
    assert first["status"] == "DISPATCHED"
    assert second["status"] == "QUEUED"  # alice and bob have 1 slot each
    assert queued(api.env)["alice"] == 1
    # the first job finishes → the second is dispatched
    _emit_all(api, first, TaskStatus.SUCCESS)
    wait_for(lambda: api.get(f"/api/v1/jobs/{second['id']}").json()["status"] == "DISPATCHED")
    listed = api.get("/api/v1/jobs", params={"status": "SUCCEEDED"}).json()
    assert [j["id"] for j in listed["items"]] == [first["id"]]


# --- status merge through the real streams -----------------------------------------------------
def _notifier(api, job: dict, party: str) -> StatusNotifier:
    return StatusNotifier(
        api.env["servers"][party].client(),
        task_request_id=f"{job['execution_id']}.{party}",
        task_id=job["id"],
        subtask_id="psi",
        execution_id=job["execution_id"],
        party=party,
        task_name="tasks.secretflow.execute_task",
    )


def _emit_all(api, job, final: TaskStatus):
    for party in job["parties"]:
        n = _notifier(api, job, party)
        n.emit(TaskStatus.RECEIVED, Stage.TASK_RECEIVED, progress=0.0)
        n.emit(TaskStatus.RUNNING, None, progress=0.05)
        result = {
            "intersection_count": 42 if party == "alice" else None,
            "output_path": "out/a.csv",
        }
        metrics = {"cluster_init_s": 1.0, "algorithm_s": 2.0, "total_s": 3.5}
        n.emit(final, Stage.TASK_FINISHED, progress=1.0, result=result, performance_metrics=metrics)


def test_events_merge_to_succeeded_with_timeline_and_result(api):
    job = api.post("/api/v1/jobs/psi", json=psi_body()).json()
    _emit_all(api, job, TaskStatus.SUCCESS)
    detail = wait_for(
        lambda: (d := api.get(f"/api/v1/jobs/{job['id']}").json())["status"] == "SUCCEEDED" and d
    )
    assert detail["party_status"] == {"alice": "SUCCESS", "bob": "SUCCESS"}
    assert [e["status"] for e in detail["timeline"] if e["party"] == "alice"] == [
        "RECEIVED",
        "RUNNING",
        "SUCCESS",
    ]
    result = api.get(f"/api/v1/jobs/{job['id']}/result").json()
    assert result["intersection_count"] == 42
    assert result["receiver"] == "alice"
    # complete from the events alone (these tasks have no Celery result to fetch)
    assert result["parties"]["bob"]["performance_metrics"]["total_s"] == 3.5
    # every event was acknowledged only after it was applied: nothing pending
    for p in ("alice", "bob"):
        pending = api.env["servers"][p].client().xpending(STATUS_STREAM, "coordinator")
        assert pending["pending"] == 0


def test_failure_at_one_party_fails_the_job_naming_it(api):
    job = api.post("/api/v1/jobs/psi", json=psi_body()).json()
    a, b = _notifier(api, job, "alice"), _notifier(api, job, "bob")
    a.emit(TaskStatus.RECEIVED, Stage.TASK_RECEIVED)
    b.emit(TaskStatus.RECEIVED, Stage.TASK_RECEIVED)
    a.emit(TaskStatus.RUNNING)
    b.emit(
        TaskStatus.FAILURE,
        Stage.TASK_FINISHED,
        error=ErrorInfo(type="TaskRefused", message="party bob refused the task: no such column"),
    )
    detail = wait_for(
        lambda: (d := api.get(f"/api/v1/jobs/{job['id']}").json())["status"] == "FAILED" and d
    )
    assert detail["failed_party"] == "bob"
    assert "party bob failed: TaskRefused" in detail["error"]
    assert "no such column" in detail["error"]
    assert detail["attempt"] == 1  # a refusal is not retryable


def test_duplicate_and_out_of_order_events_change_nothing(api):
    job = api.post("/api/v1/jobs/psi", json=psi_body()).json()
    a = _notifier(api, job, "alice")
    ev1 = a.emit(TaskStatus.RECEIVED, Stage.TASK_RECEIVED)
    ev2 = a.emit(TaskStatus.RUNNING)
    r = api.env["servers"]["alice"].client()
    r.xadd(STATUS_STREAM, ev2.to_stream_fields())  # duplicate
    r.xadd(STATUS_STREAM, ev1.to_stream_fields())  # stale
    wait_for(lambda: len(api.get(f"/api/v1/jobs/{job['id']}").json()["timeline"]) == 2)
    time.sleep(1.0)
    d = api.get(f"/api/v1/jobs/{job['id']}").json()
    assert d["party_status"]["alice"] == "RUNNING"
    assert d["status"] == "RUNNING"
    assert len(d["timeline"]) == 2


def test_dead_worker_fails_the_job_naming_the_party(env):
    """No heartbeat from bob's SecretFlow worker ⇒ FAILED naming bob, without waiting for the
    start timeout. (WorkerLost is retryable: with attempts left the job would wait for bob.)"""
    app = create_app(_settings(env, start_timeout_s=600, max_attempts=1))
    with TestClient(app, headers={"Authorization": f"Bearer {TOKEN}"}) as api:
        api.env = env
        for p in ("alice", "bob"):
            _heartbeat(env, p)
        job = api.post("/api/v1/jobs/psi", json=psi_body()).json()
        env["servers"]["bob"].client().delete(HEARTBEAT_KEY.format(role="sf"))  # bob's worker dies
        t0 = time.monotonic()
        detail = wait_for(
            lambda: (d := api.get(f"/api/v1/jobs/{job['id']}").json())["status"] == "FAILED" and d,
            timeout=60,
        )
        assert time.monotonic() - t0 < 40
        assert detail["failed_party"] == "bob"
        assert "WorkerLost" in detail["error"] and "bob" in detail["error"]


def test_cancel_then_retry_runs_a_new_attempt(api):
    job = api.post("/api/v1/jobs/psi", json=psi_body()).json()
    r = api.post(f"/api/v1/jobs/{job['id']}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "CANCELLED"
    assert api.post(f"/api/v1/jobs/{job['id']}/cancel").status_code == 409
    r = api.post(f"/api/v1/jobs/{job['id']}/retry")
    assert r.status_code == 200, r.text
    again = r.json()
    assert again["status"] == "DISPATCHED"
    assert again["attempt"] == 2
    assert again["execution_id"] != job["execution_id"]
    ids = {m["headers"]["id"] for m in queued_messages(api.env, "alice")}
    assert f"{again['execution_id']}.alice" in ids


def test_sse_stream_ends_with_the_final_state(api):
    job = api.post("/api/v1/jobs/psi", json=psi_body()).json()
    _emit_all(api, job, TaskStatus.SUCCESS)
    statuses = []
    with api.stream("GET", f"/api/v1/jobs/{job['id']}/events") as resp:
        for line in resp.iter_lines():
            if line.startswith("data: "):
                statuses.append(json.loads(line[6:])["status"])
    assert statuses[-1] == "SUCCEEDED"


def test_parties_endpoint_reports_reachability(api):
    api.env["servers"]["carol"].stop()
    _heartbeat(api.env, "alice")
    api.env["servers"]["bob"].client().delete(HEARTBEAT_KEY.format(role="sf"))
    parties = {p["name"]: p for p in api.get("/api/v1/parties", params={"health": False}).json()}
    assert parties["alice"]["reachable"] is True and parties["alice"]["worker_alive"] is True
    assert parties["bob"]["worker_alive"] is False
    assert parties["carol"]["reachable"] is False and "party carol" in parties["carol"]["error"]
    assert (
        "***" in parties["alice"]["broker"]
        and api.env["servers"]["alice"].password not in parties["alice"]["broker"]
    )


def _api_with(env, **settings):
    app = create_app(_settings(env, **settings))
    client = TestClient(app, headers={"Authorization": f"Bearer {TOKEN}"})
    client.env = env
    return client


def test_retryable_failure_runs_the_whole_job_again_as_a_new_attempt(env):
    with _api_with(env, max_attempts=2) as api:
        for p in ("alice", "bob"):
            _heartbeat(env, p)
        job = api.post("/api/v1/jobs/psi", json=psi_body()).json()
        _notifier(api, job, "alice").emit(
            TaskStatus.FAILURE,
            Stage.TASK_FINISHED,
            error=ErrorInfo(
                type=ErrorType.PEER_UNREACHABLE, message="connect to bob: Connection refused"
            ),
        )
        # bob went silent: the retry waits until bob's worker has been heard from again
        held = wait_for(
            lambda: (
                (d := api.get(f"/api/v1/jobs/{job['id']}").json())["status"] == "QUEUED"
                and "party bob has not been heard from since attempt 1" in (d["error"] or "")
                and d
            )
        )
        assert held["error"].startswith("waiting: "), held["error"]
        _heartbeat(env, "bob")  # its next beat
        again = wait_for(
            lambda: (d := api.get(f"/api/v1/jobs/{job['id']}").json())["attempt"] == 2 and d
        )
        assert again["status"] == "DISPATCHED"
        assert again["execution_id"] != job["execution_id"]
        assert "retrying" in again["error"] and "party alice failed" in again["error"]
        ids = {m["headers"]["id"] for m in queued_messages(env, "bob")}
        assert f"{again['execution_id']}.bob" in ids  # every party gets the new attempt
        # the second failure ends it: attempts are bounded
        _notifier(api, again, "bob").emit(
            TaskStatus.FAILURE,
            Stage.TASK_FINISHED,
            error=ErrorInfo(type=ErrorType.PEER_UNREACHABLE, message="Connection refused"),
        )
        final = wait_for(
            lambda: (d := api.get(f"/api/v1/jobs/{job['id']}").json())["status"] == "FAILED" and d
        )
        # bob could not reach alice, and alice never started this attempt: alice is named
        assert final["attempt"] == 2 and final["failed_party"] == "alice"
        assert final["error"].startswith("party alice did not start its part of the job")


def test_party_that_never_starts_fails_the_job_after_the_start_timeout(env):
    with _api_with(env, start_timeout_s=3, max_attempts=1) as api:
        for p in ("alice", "bob"):
            _heartbeat(env, p)  # workers "alive" but bob never takes the task
        job = api.post("/api/v1/jobs/psi", json={**psi_body(), "protocol": "ECDH"}).json()
        a = _notifier(api, job, "alice")
        a.emit(TaskStatus.RECEIVED, Stage.TASK_RECEIVED)
        a.emit(TaskStatus.RUNNING)
        d = wait_for(
            lambda: (d := api.get(f"/api/v1/jobs/{job['id']}").json())["status"] == "FAILED" and d,
            timeout=60,
        )
        assert "party bob did not start" in d["error"]
        assert d["failed_party"] == "bob"


def test_deadline_times_the_job_out(env):
    import datetime as dt

    with _api_with(env) as api:
        for p in ("alice", "bob"):
            _heartbeat(env, p)
        deadline = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=3)).isoformat()
        job = api.post("/api/v1/jobs/psi", json=psi_body(deadline=deadline)).json()
        d = wait_for(
            lambda: (
                (d := api.get(f"/api/v1/jobs/{job['id']}").json())["status"] == "TIMED_OUT" and d
            ),
            timeout=30,
        )
        assert "deadline" in d["error"]
        sent = json.loads(env["servers"]["alice"].client().lrange(SECRETFLOW_QUEUE, 0, -1)[0])
        assert sent["headers"]["id"] == f"{job['execution_id']}.alice"


# --- readiness: a job is never sent to a party that cannot run it ----------------------------------
def test_submit_is_refused_naming_a_party_whose_worker_reports_a_problem(api):
    _heartbeat(api.env, "bob", problems=("Ray head: nothing answers on 127.0.0.1:6380",))
    r = api.post("/api/v1/jobs/psi", json=psi_body())
    assert r.status_code == 503, r.text
    detail = r.json()["detail"]
    assert detail.startswith("party bob is not ready: Ray head: nothing answers on 127.0.0.1:6380")
    assert "nothing was sent" in detail
    assert queued(api.env) == {"alice": 0, "bob": 0, "carol": 0}


def test_submit_is_refused_naming_a_party_without_a_worker(api):
    api.env["servers"]["bob"].client().delete(HEARTBEAT_KEY.format(role="sf"))
    r = api.post("/api/v1/jobs/psi", json=psi_body())
    assert r.status_code == 503
    assert "party bob's SecretFlow worker is not running" in r.json()["detail"]


def test_a_queued_job_waits_for_an_unready_party_and_says_why(api):
    first = api.post("/api/v1/jobs/psi", json=psi_body()).json()
    second = api.post("/api/v1/jobs/psi", json=psi_body()).json()  # queued behind the first
    _heartbeat(api.env, "bob", problems=("Ray head: nothing answers on 127.0.0.1:6380",))
    api.post(f"/api/v1/jobs/{first['id']}/cancel")  # frees the slot
    held = wait_for(lambda: (d := api.get(f"/api/v1/jobs/{second['id']}").json())["error"] and d)
    assert held["status"] == "QUEUED"
    assert held["error"].startswith("waiting: party bob is not ready: Ray head")
    _heartbeat(api.env, "bob")  # bob's head is back
    sent = wait_for(
        lambda: (
            (d := api.get(f"/api/v1/jobs/{second['id']}").json())["status"] == "DISPATCHED" and d
        )
    )
    assert sent["error"] is None


# --- the Celery-result fallback fills in only what the stream really lost ---------------------------
def _store_celery_result(api, job: dict, party: str, value: dict) -> None:
    task_request_id = f"{job['execution_id']}.{party}"
    api.coord.clients.app(party).backend.store_result(task_request_id, value, "SUCCESS")


def _success_value(job, party):
    return {
        "status": "success",
        "result": {"intersection_count": 42 if party == "alice" else None, "output_path": None},
        "error": None,
        "performance_metrics": {"total_s": 1.0},
        "task_metadata": {},
    }


def test_a_final_celery_result_does_not_overtake_the_nodes_own_events(env):
    """The node stores its Celery result only after its final event; a listener that is a
    moment behind must not see the coordinator race it with a made-up event."""
    for p in ("alice", "bob"):
        _heartbeat(env, p)
    with _api_with(env, result_fallback_grace_s=4.0) as api:
        api.coord = api.app.state.coordinator
        job = api.post("/api/v1/jobs/psi", json=psi_body()).json()
        for party in ("alice", "bob"):
            _store_celery_result(api, job, party, _success_value(job, party))
        time.sleep(2.0)  # four reconcile passes see a final result, but the grace has not run out
        d = api.get(f"/api/v1/jobs/{job['id']}").json()
        assert d["status"] == "DISPATCHED" and d["timeline"] == []
        _emit_all(api, job, TaskStatus.SUCCESS)  # the node's events, just late
        d = wait_for(
            lambda: (
                (d := api.get(f"/api/v1/jobs/{job['id']}").json())["status"] == "SUCCEEDED" and d
            )
        )
        time.sleep(5.0)  # past the grace: still nothing made up
        d = api.get(f"/api/v1/jobs/{job['id']}").json()
        assert all(not e["event_id"].startswith("coord-") for e in d["timeline"]), d["timeline"]
        assert len(d["timeline"]) == 2 * 3  # RECEIVED, RUNNING, SUCCESS per party


def test_a_really_lost_final_event_is_taken_from_the_celery_result(env):
    for p in ("alice", "bob"):
        _heartbeat(env, p)
    with _api_with(env, result_fallback_grace_s=1.0) as api:
        api.coord = api.app.state.coordinator
        job = api.post("/api/v1/jobs/psi", json=psi_body()).json()
        for party in ("alice", "bob"):
            n = _notifier(api, job, party)
            n.emit(TaskStatus.RECEIVED, Stage.TASK_RECEIVED, progress=0.0)
            n.emit(TaskStatus.RUNNING, None, progress=0.05)
            _store_celery_result(api, job, party, _success_value(job, party))  # event lost
        d = wait_for(
            lambda: (
                (d := api.get(f"/api/v1/jobs/{job['id']}").json())["status"] == "SUCCEEDED" and d
            )
        )
        made = [e for e in d["timeline"] if e["event_id"].startswith("coord-")]
        assert {e["party"] for e in made} == {"alice", "bob"}
        assert d["result"]["intersection_count"] == 42


def test_api_times_carry_their_zone_and_errors_carry_no_ansi_codes(api):
    import datetime as dt

    job = api.post("/api/v1/jobs/psi", json=psi_body()).json()
    _notifier(api, job, "bob").emit(
        TaskStatus.FAILURE,
        Stage.TASK_FINISHED,
        error=ErrorInfo(
            type=ErrorType.PSI_FAILED,
            message="party bob: \x1b[31mRuntimeError\x1b[0m: boom",
            details="\x1b[36m(SPURuntime pid=12)\x1b[0m Traceback …",
        ),
    )
    r = wait_for(
        lambda: (r := api.get(f"/api/v1/jobs/{job['id']}")).json()["status"] == "FAILED" and r
    )
    assert "\x1b" not in r.text and "\\u001b" not in r.text
    d = r.json()
    assert d["error"] == "party bob failed: PSIError: party bob: RuntimeError: boom"
    bob = next(t for t in d["tasks"] if t["party"] == "bob")
    assert bob["error"]["details"].startswith("(SPURuntime pid=12) Traceback")
    times = [d["created_at"], d["deadline"], d["dispatched_at"], d["finished_at"]]
    times += [e["timestamp"] for e in d["timeline"]] + [t["created_at"] for t in d["tasks"]]
    for value in times:
        assert dt.datetime.fromisoformat(value).tzinfo is not None, value
    listed = api.get("/api/v1/jobs").json()["items"][0]
    assert dt.datetime.fromisoformat(listed["created_at"]).tzinfo is not None


def test_a_peer_lost_before_the_dead_worker_is_seen_still_ends_naming_that_worker(env):
    """bob's worker dies mid-PSI and alice's SPU reports the broken link (PeerLost) before the
    coordinator notices bob's missing heartbeat. The job is requeued at once naming bob (the one
    party that went silent), and bob's WorkerLost still reaches the queued job's message."""
    with _api_with(env, max_attempts=2, start_timeout_s=600) as api:
        for p in ("alice", "bob"):
            _heartbeat(env, p)
        job = api.post("/api/v1/jobs/psi", json=psi_body()).json()
        a, b = _notifier(api, job, "alice"), _notifier(api, job, "bob")
        for n in (a, b):
            n.emit(TaskStatus.RECEIVED, Stage.TASK_RECEIVED)
            n.emit(TaskStatus.RUNNING)
        wait_for(lambda: api.get(f"/api/v1/jobs/{job['id']}").json()["status"] == "RUNNING")
        env["servers"]["bob"].client().delete(HEARTBEAT_KEY.format(role="sf"))  # bob's worker dies
        a.emit(
            TaskStatus.FAILURE,
            Stage.TASK_FINISHED,
            error=ErrorInfo(
                type=ErrorType.PEER_LOST,
                message="lost the link to bob during the job (SendImpl error [E112]Not connected)",
            ),
        )
        d = wait_for(
            lambda: (d := api.get(f"/api/v1/jobs/{job['id']}").json())["status"] == "QUEUED" and d
        )
        assert d["failed_party"] == "bob", d["error"]
        assert "party bob went silent during the job" in d["error"]
        d = wait_for(
            lambda: (
                "party bob failed: WorkerLost"
                in (d := api.get(f"/api/v1/jobs/{job['id']}").json())["error"]
                and d
            ),
            timeout=60,
        )
        assert d["status"] == "QUEUED" and d["attempt"] == 1 and d["failed_party"] == "bob"
        assert d["error"].startswith("waiting: party bob's SecretFlow worker")


# --- trust boundary: a party speaks only for itself ---------------------------------------------
def _forge(api, job: dict, *, into: str, claims: str, trid_of: str, status, seq: int, **data):
    """XADD an event into `into`'s real stream that claims to be `claims`'s, for `trid_of`'s
    task — what a malicious party can do to its own Redis. Returns the event id."""
    ev = StatusEvent(
        seq=seq,
        task_request_id=f"{job['execution_id']}.{trid_of}",
        task_id=job["id"],
        subtask_id="psi",
        execution_id=job["execution_id"],
        party=claims,
        status=status,
        data=EventData(**data),
    )
    api.env["servers"][into].client().xadd(STATUS_STREAM, ev.to_stream_fields())
    return ev.event_id


def test_a_party_cannot_forge_another_partys_status(api):
    """bob writes into its own stream a FAILURE and a SUCCESS 'from alice' and one for alice's
    task under its own name: all are refused and counted; alice's task is neither failed nor
    revoked nor faked, and the job ends on the real events."""
    job = api.post("/api/v1/jobs/psi", json=psi_body()).json()
    a, b = _notifier(api, job, "alice"), _notifier(api, job, "bob")
    for n in (a, b):
        n.emit(TaskStatus.RECEIVED, Stage.TASK_RECEIVED)
        n.emit(TaskStatus.RUNNING)
    wait_for(lambda: api.get(f"/api/v1/jobs/{job['id']}").json()["status"] == "RUNNING")
    bad = ErrorInfo(type=ErrorType.PSI_FAILED, message="alice's data is bad")
    fake = {"intersection_count": 999999, "output_path": "out/a.csv"}
    own_name = ErrorInfo(type=ErrorType.PSI_FAILED, message="under bob's own name")
    forged = [  # (who it claims to be, status, data) — all written into bob's stream
        _forge(api, job, into="bob", claims=claims, trid_of="alice", status=st, seq=seq, **data)
        for seq, (claims, st, data) in enumerate(
            [
                ("alice", TaskStatus.FAILURE, {"error": bad}),
                ("alice", TaskStatus.SUCCESS, {"result": fake}),
                ("bob", TaskStatus.FAILURE, {"error": own_name}),
            ],
            start=50,
        )
    ]
    refused = wait_for(
        lambda: (r := api.get("/healthz").json()["refused"]).get("bob", {}).get("NotItsTask") and r
    )
    assert refused == {"bob": {"OtherParty": 2, "NotItsTask": 1}}
    d = api.get(f"/api/v1/jobs/{job['id']}").json()
    assert d["status"] == "RUNNING" and d["party_status"] == {"alice": "RUNNING", "bob": "RUNNING"}
    assert not {e["event_id"] for e in d["timeline"]} & set(forged)
    _emit_all(api, job, TaskStatus.SUCCESS)
    wait_for(lambda: api.get(f"/api/v1/jobs/{job['id']}").json()["status"] == "SUCCEEDED")
    result = api.get(f"/api/v1/jobs/{job['id']}/result").json()
    assert result["intersection_count"] == 42  # alice's own report, not the forged 999999
