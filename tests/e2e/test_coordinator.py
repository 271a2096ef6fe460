"""The coordinator against real nodes: PSI through the REST API on PostgreSQL and on SQLite,
a 3-party registry, and the faults of issue 3 (dead worker, stopped Redis, coordinator killed
and restarted mid-job). The coordinator runs as its own process (`python -m coordinator serve`).
"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
from sqlalchemy import select

from coordinator.db import make_engine, session_factory
from coordinator.models import Job, SecretflowTask, TaskStatusLog
from deploy.local.standin import read_keys
from node.contract import (
    SECRETFLOW_QUEUE,
    STATUS_STREAM,
    ErrorInfo,
    EventData,
    StatusEvent,
    TaskStatus,
)
from node.worker.notifier import read_events

from .conftest import ARTIFACTS
from .helpers import (
    final,
    peer_driver_stopped,
    psi_body,
    running_coordinator,
    session_busy,
    wait_for,
    wait_job,
    write_inputs,
)


@pytest.fixture(scope="module")
def data(federation):
    alice = [f"id{i:05d}" for i in range(0, 1500)]
    bob = [f"id{i:05d}" for i in range(700, 2400)]
    return write_inputs(federation, "coord", alice, bob)


@pytest.fixture(scope="module", params=["postgresql", "sqlite"])
def coordinator(request, federation, data):
    url = request.getfixturevalue("postgres_db") if request.param == "postgresql" else None
    # not emptied first: on SQLite the database of earlier runs is kept
    base = ARTIFACTS / "e2e-coordinator" / request.param
    with running_coordinator(federation, base, fresh=False, database_url=url) as proc:
        proc.db_url = proc.database_url
        yield proc


@pytest.fixture(scope="module")
def postgres_db(postgres_server):
    """A fresh database per coordinator run on the session's PostgreSQL server."""
    import psycopg

    name = f"coord_{os.getpid()}_{int(time.time() * 1000) % 10**8}"
    dsn = postgres_server.url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return postgres_server.url.rsplit("/", 1)[0] + f"/{name}"


def _body(out: str) -> dict:
    # each test runs against both databases on one federation: the same output twice
    return psi_body("coord/alice.csv", "coord/bob.csv", out, overwrite=True)


def test_psi_through_the_api(coordinator, federation, data):
    with coordinator.client() as http:
        r = http.post("/api/v1/jobs/psi", json=_body("out/coord-api.csv"))
        assert r.status_code == 201, r.text
        job = r.json()
        d = final(http, job["id"])
        assert d["status"] == "SUCCEEDED", d["error"]
        assert d["party_status"] == {"alice": "SUCCESS", "bob": "SUCCESS"}
        res = wait_job(
            http,
            job["id"],
            lambda d: all(t["performance_metrics"] for t in d["tasks"]),
            timeout=30,
        )
        result = http.get(f"/api/v1/jobs/{job['id']}/result").json()
    got = read_keys(federation.nodes["alice"].data_root / "out/coord-api.csv", "uid")
    assert sorted(got) == sorted(data)
    assert result["intersection_count"] == len(data)
    assert result["parties"]["alice"]["output_path"].endswith("out/coord-api.csv")
    assert result["parties"]["alice"]["performance_metrics"]["total_s"] > 0
    assert not (federation.nodes["bob"].data_root / "out/coord-api.csv").exists()
    stages = [e["stage"] for e in res["timeline"] if e["party"] == "alice"]
    assert stages[0] == "task_received" and stages[-1] == "task_finished"

    # the database holds what the API shows, and every node event exactly once
    engine = make_engine(coordinator.db_url)
    try:
        with session_factory(engine)() as s:
            row = s.get(Job, job["id"])
            assert row.status == "SUCCEEDED" and row.result["intersection_count"] == len(data)
            tasks = s.scalars(
                select(SecretflowTask).where(SecretflowTask.job_id == job["id"])
            ).all()
            assert {t.party: t.status for t in tasks} == {"alice": "SUCCESS", "bob": "SUCCESS"}
            for t in tasks:
                logged = s.scalars(
                    select(TaskStatusLog.event_id).where(
                        TaskStatusLog.task_request_id == t.task_request_id
                    )
                ).all()
                sent = [
                    e.event_id
                    for e in read_events(federation.nodes[t.party].redis(), t.task_request_id)
                ]
                assert sorted(logged) == sorted(sent)
    finally:
        engine.dispose()


def test_third_party_in_the_registry_gets_nothing(coordinator, federation):
    carol = federation.nodes["carol"].redis()
    before = carol.xlen(STATUS_STREAM) if carol.exists(STATUS_STREAM) else 0
    with coordinator.client() as http:
        job = http.post("/api/v1/jobs/psi", json=_body("out/coord-3p.csv")).json()
        d = final(http, job["id"])
    assert d["status"] == "SUCCEEDED", d["error"]
    assert set(d["party_status"]) == {"alice", "bob"}
    assert carol.llen(SECRETFLOW_QUEUE) == 0
    assert (carol.xlen(STATUS_STREAM) if carol.exists(STATUS_STREAM) else 0) == before
    parties = {p["name"] for p in coordinator.client().get("/api/v1/parties").json()}
    assert parties == set(federation.nodes)


def test_datasets_and_health_come_from_the_nodes(coordinator, federation):
    with coordinator.client() as http:
        ds = http.get("/api/v1/parties/bob/datasets").json()
        parties = {p["name"]: p for p in http.get("/api/v1/parties").json()}
    entry = next(d for d in ds["datasets"] if d["name"] == "coord/bob.csv")
    assert entry["columns"][0] == "id" and entry["size"] > 0
    assert "id00700" not in json.dumps(ds)  # names and headers only, never rows
    for name in federation.nodes:
        assert parties[name]["reachable"] and parties[name]["worker_alive"], parties[name]
        health = parties[name]["health"]
        assert health["party"] == name and health["ok"], health  # incl. both workers' heartbeats


def test_a_party_cannot_forge_another_partys_status_during_a_real_job(
    coordinator, federation, data
):
    """While a real PSI runs, bob XADDs into its own Redis a FAILURE that claims to be alice's
    (and one for alice's task under bob's name), and events for its own task with fields beyond
    what the coordinator stores (a seq its timers would overflow, a stage too long, bytes that
    are not UTF-8): all are refused and counted, alice's task is not revoked, and the job
    succeeds with the real intersection at alice."""
    _only_postgres(coordinator)
    bob_redis = federation.nodes["bob"].redis()
    with coordinator.client() as http:
        before = http.get("/healthz").json()["refused"].get("bob", {})
        job = http.post("/api/v1/jobs/psi", json=_body("out/coord-forged.csv")).json()
        wait_job(
            http,
            job["id"],
            lambda d: d["party_status"].get("alice") in ("RUNNING", "PROGRESS", "SUCCESS"),
            120,
        )
        for claims in ("alice", "bob"):
            forged = StatusEvent(
                seq=10_000,
                task_request_id=f"{job['execution_id']}.alice",
                task_id=job["id"],
                subtask_id="psi",
                execution_id=job["execution_id"],
                party=claims,
                status=TaskStatus.FAILURE,
                data=EventData(error=ErrorInfo(type="PSIError", message="forged by bob")),
            )
            bob_redis.xadd(STATUS_STREAM, forged.to_stream_fields())
        own = json.loads(forged.model_dump_json())
        own.update(task_request_id=f"{job['execution_id']}.bob", party="bob", status="RUNNING")
        hostile = [
            json.dumps({**own, "event_id": "h1", "seq": 1_200_000_000}).encode(),
            json.dumps({**own, "event_id": "h2", "data": {"stage": "s" * 33}}).encode(),
            b'{"party": "\xff\xfe"}',
        ]
        for raw in hostile:
            bob_redis.xadd(STATUS_STREAM, {"event": raw})
        d = final(http, job["id"])
        assert d["status"] == "SUCCEEDED", d["error"]
        assert "forged by bob" not in json.dumps(d)  # no trace of the forged events
        after = wait_for(
            lambda: (
                (r := http.get("/healthz").json()["refused"]["bob"]).get("Malformed", 0)
                - before.get("Malformed", 0)
                >= len(hostile)
                and r
            ),
            30,
            "bob's hostile entries to be refused",
        )
    assert after.get("OtherParty", 0) - before.get("OtherParty", 0) == 1
    assert after.get("NotItsTask", 0) - before.get("NotItsTask", 0) == 1
    assert after.get("Malformed", 0) - before.get("Malformed", 0) == len(hostile)
    got = read_keys(federation.nodes["alice"].data_root / "out/coord-forged.csv", "uid")
    assert sorted(got) == sorted(data)


# --- faults (PostgreSQL only: the production database) ---------------------------------------
def _only_postgres(coordinator):
    if "postgresql" not in coordinator.db_url:
        pytest.skip("fault tests run once, against PostgreSQL")


def _sf_worker_pid(node) -> int:
    return node.procs["worker"].pid


def test_killed_worker_is_named_at_once_and_the_job_runs_again_when_it_is_back(
    coordinator, federation, data
):
    """bob's whole worker is killed mid-PSI: the job names bob (WorkerLost) within seconds, the
    survivor is terminated, and — WorkerLost being retryable — the job waits, saying for whom,
    and succeeds as attempt 2 once bob's worker is back."""
    _only_postgres(coordinator)
    bob = federation.nodes["bob"]
    restarted = False
    try:
        with coordinator.client() as http:
            # a warm PSI of 1,500 rows ends in a fraction of a second: bob's session driver is
            # held (SIGSTOP) so that the worker dies mid-job, not after it
            with peer_driver_stopped(federation, http, _body("out/coord-kill-warm.csv")):
                job = http.post("/api/v1/jobs/psi", json=_body("out/coord-kill.csv")).json()
                wait_job(
                    http,
                    job["id"],
                    lambda d: d["party_status"].get("bob") in ("RUNNING", "PROGRESS"),
                    timeout=120,
                )
                wait_for(lambda: session_busy(federation, "bob"), 30, "bob's session to take it")
                # the whole worker: its session host and the (stopped) driver go with it
                os.killpg(bob.procs["worker"].pid, signal.SIGKILL)
            killed = time.monotonic()
            d = wait_job(http, job["id"], lambda d: d["status"] == "QUEUED", timeout=90)
            took = time.monotonic() - killed
            assert took < 60, f"the failure took {took:.0f} s to show"
            # bob is named at once: by its WorkerLost, or — when alice's SPU noticed the dead link
            # first (PeerLost) — as the one party that went silent; its WorkerLost follows
            assert d["failed_party"] == "bob", d["error"]
            d = wait_job(
                http, job["id"], lambda d: "party bob failed: WorkerLost" in (d["error"] or ""), 60
            )
            assert d["failed_party"] == "bob", d["error"]

            # the survivor is terminated, not left waiting for its dead peer
            def alice_first(d: dict) -> str:
                return next(
                    t["status"]
                    for t in d["tasks"]
                    if t["execution_id"] == job["execution_id"] and t["party"] == "alice"
                )

            wait_job(http, job["id"], lambda d: alice_first(d) in ("CANCELLED", "FAILURE"), 60)
            d = wait_job(http, job["id"], lambda d: (d["error"] or "").startswith("waiting: "), 30)
            assert "party bob's SecretFlow worker is not running" in d["error"]
            bob.procs.pop("worker").wait(10)
            federation.start_worker(bob)
            restarted = True
            federation.wait_workers()
            d = final(http, job["id"], timeout=240)
            assert d["status"] == "SUCCEEDED", d["error"]
            assert d["attempt"] == 2
        got = read_keys(federation.nodes["alice"].data_root / "out/coord-kill.csv", "uid")
        assert set(got) == data
    finally:
        if not restarted:  # whatever happened: bob's worker runs for the tests after this
            federation.stop_worker(bob)
            federation.start_worker(bob)
            federation.wait_workers()


def test_stopped_redis_refuses_the_job_naming_the_party(coordinator, federation):
    _only_postgres(coordinator)
    bob = federation.nodes["bob"]
    alice_q = federation.nodes["alice"].redis()
    with coordinator.client() as http:
        n_before = http.get("/api/v1/jobs").json()["total"]
        proc = bob.procs.pop("redis")
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
        try:
            r = http.post("/api/v1/jobs/psi", json=_body("out/coord-noredis.csv"))
            assert r.status_code == 503, r.text
            assert "party bob" in r.json()["detail"]
            assert alice_q.llen(SECRETFLOW_QUEUE) == 0
            assert http.get("/api/v1/jobs").json()["total"] == n_before
        finally:
            federation.start_redis(bob)
    federation.wait_workers()


def test_coordinator_restart_mid_job_loses_nothing(coordinator, federation):
    _only_postgres(coordinator)
    with (
        coordinator.client() as http,
        peer_driver_stopped(federation, http, _body("out/coord-restart-warm.csv")),
    ):
        # bob's session driver is held (SIGSTOP): the coordinator dies while the job runs
        job = http.post("/api/v1/jobs/psi", json=_body("out/coord-restart.csv")).json()
        wait_job(http, job["id"], lambda d: d["status"] == "RUNNING", timeout=120)
        wait_for(lambda: session_busy(federation, "bob"), 30, "bob's session to take the job")
        coordinator.kill(signal.SIGKILL)
    # bob's driver goes on (SIGCONT): the nodes finish without the coordinator
    task_request_ids = {p: f"{job['execution_id']}.{p}" for p in ("alice", "bob")}
    end = time.monotonic() + 180
    while not all(
        (ev := read_events(federation.nodes[p].redis(), t)) and ev[-1].status == "SUCCESS"
        for p, t in task_request_ids.items()
    ):
        assert time.monotonic() < end, "the nodes did not finish"
        time.sleep(0.5)
    coordinator.start()
    coordinator.wait_ready()
    with coordinator.client() as http:
        d = final(http, job["id"], timeout=60)
        assert d["status"] == "SUCCEEDED", d["error"]
        for p, t in task_request_ids.items():
            sent = {e.event_id for e in read_events(federation.nodes[p].redis(), t)}
            logged = {e["seq"] for e in d["timeline"] if e["party"] == p}
            assert len(logged) == len(sent), (p, logged)
