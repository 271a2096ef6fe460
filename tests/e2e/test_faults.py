"""Wrong party, wrong cause — each real fault is named by the party that has it, with its cause:
a peer's Ray head down, a peer that never starts its part (and the retry that then succeeds),
a peer's link port closed. (A peer's worker killed: test_coordinator; a peer with another CA's
certificate: test_psi.)"""

from __future__ import annotations

import datetime as dt
import time

import pytest

from coordinator.merge import PartyStatus, PartyTask, blame
from deploy.local.ports import PortAllocator
from deploy.local.standin import psi_params, read_keys, send
from node.contract import HEARTBEAT_KEY, SECRETFLOW_QUEUE, NodeTaskError, WorkerHeartbeat
from node.worker.notifier import read_events

from .conftest import ARTIFACTS
from .helpers import final, get_job, psi_body, running_coordinator, wait_for, write_inputs


@pytest.fixture(scope="module")
def data(federation):
    alice = [f"f{i:05d}" for i in range(0, 800)]
    bob = [f"f{i:05d}" for i in range(500, 1200)]
    return write_inputs(federation, "faults", alice, bob)


@pytest.fixture(scope="module")
def coordinator(federation, data):
    base = ARTIFACTS / "e2e-coordinator" / "faults"
    with running_coordinator(federation, base, env={"COORD_MAX_ATTEMPTS": "2"}) as proc:
        yield proc


def _body(out: str) -> dict:
    return psi_body("faults/alice.csv", "faults/bob.csv", out)


def _params(federation, out: str) -> dict[str, dict]:
    return psi_params(
        federation,
        ["alice", "bob"],
        keys={"alice": ["uid"], "bob": ["id"]},
        inputs={"alice": "faults/alice.csv", "bob": "faults/bob.csv"},
        outputs={"alice": out, "bob": out},
        receiver="alice",
        protocol="RR22",
    )


def _heartbeat(node) -> WorkerHeartbeat | None:
    raw = node.redis().get(HEARTBEAT_KEY.format(role="sf"))
    return WorkerHeartbeat.from_json(raw) if raw else None


def _party_task(federation, party: str, task_request_id: str) -> PartyTask:
    events = read_events(federation.nodes[party].redis(), task_request_id)
    if not events:
        return PartyTask(party)
    last = events[-1]
    return PartyTask(
        party,
        PartyStatus(last.status),
        last.seq,
        error=last.data.error,
        updated_at=last.timestamp,
    )


def test_a_peers_ray_head_down_is_named_by_that_peer_at_once(coordinator, federation, data):
    from node.rayhead import head

    bob = federation.nodes["bob"]
    head.stop(bob.settings())
    try:
        # (b) a job that reaches bob anyway: bob reports its own cause within seconds
        per_party = _params(federation, "out/faults-rayhead.csv")
        t0 = time.monotonic()
        results = send(federation, per_party)
        with pytest.raises(NodeTaskError) as info:
            results["bob"].get(timeout=60)
        took = time.monotonic() - t0
        err = info.value.result["error"]
        assert err["type"] == "RayHeadUnreachable", err
        assert err["message"].startswith(f"party bob: its Ray head at {bob.ray_address}")
        assert took < 20, f"bob took {took:.0f} s to report its dead Ray head"
        results["alice"].revoke(terminate=True, signal="SIGTERM")  # as the coordinator does
        task_request_ids = {p: f"{per_party[p]['execution_id']}.{p}" for p in per_party}
        wait_for(
            lambda: _party_task(federation, "alice", task_request_ids["alice"]).terminal,
            60,
            "alice's end",
        )
        tasks = [_party_task(federation, p, t) for p, t in task_request_ids.items()]
        message, party = blame(tasks)
        assert party == "bob" and "RayHeadUnreachable" in message, message
        assert "TLS" not in message

        # (a) the coordinator refuses a new job for bob, naming bob and the failed check
        wait_for(lambda: (hb := _heartbeat(bob)) and hb.problems, 30, "bob's heartbeat problem")
        with coordinator.client() as http:
            r = http.post("/api/v1/jobs/psi", json=_body("out/faults-refused.csv"))
        assert r.status_code == 503, r.text
        assert r.json()["detail"].startswith(
            f"party bob is not ready: Ray head: nothing answers on {bob.ray_address}"
        )
        assert federation.nodes["alice"].redis().llen(SECRETFLOW_QUEUE) == 0
    finally:
        federation.start_ray(bob)
    wait_for(lambda: (hb := _heartbeat(bob)) and not hb.problems, 30, "bob ready again")


def test_a_peer_that_never_starts_is_named_and_the_retry_succeeds(coordinator, federation, data):
    """bob's worker is alive but takes no SecretFlow task (its consumer is cancelled): alice
    times out waiting; the job names bob, retries as attempt 2, and succeeds once bob's worker
    consumes its queue again — the retry happens for the case it exists for."""
    bob = federation.nodes["bob"]
    hostname = _heartbeat(bob).worker
    control = bob.celery_client().control
    control.cancel_consumer(SECRETFLOW_QUEUE, destination=[hostname], reply=True, timeout=10)
    resumed = False
    try:
        with coordinator.client() as http:
            job = http.post("/api/v1/jobs/psi", json=_body("out/faults-retry.csv")).json()
            first = job["execution_id"]
            d = wait_for(
                lambda: (d := get_job(http, job["id"]))["attempt"] == 2 and d,
                180,
                "the second attempt",
            )
            assert d["failed_party"] == "bob", d["error"]
            assert "party bob did not start its part of the job" in d["error"], d["error"]
            assert "PeerConnectTimeout" in d["error"]
            old = {t["party"]: t for t in d["tasks"] if t["execution_id"] == first}
            assert old["alice"]["error"]["type"] == "PeerConnectTimeout"
            control.add_consumer(SECRETFLOW_QUEUE, destination=[hostname], reply=True, timeout=10)
            resumed = True
            d = final(http, job["id"], timeout=240)
        assert d["status"] == "SUCCEEDED", d["error"]
        assert d["attempt"] == 2
        assert (
            set(read_keys(federation.nodes["alice"].data_root / "out/faults-retry.csv", "uid"))
            == data
        )
        # bob never ran the stale first attempt (revoked before its worker took it)
        assert not read_events(bob.redis(), f"{first}.bob")
    finally:
        if not resumed:
            control.add_consumer(SECRETFLOW_QUEUE, destination=[hostname], reply=True, timeout=10)


def test_a_peers_closed_link_port_is_named_not_blamed_on_tls(federation, data):
    closed = PortAllocator().one()  # nothing listens there
    per_party = _params(federation, "out/faults-closed.csv")
    alice = per_party["alice"]
    alice["sf_init_config"]["cluster"]["bob"]["address"] = f"127.0.0.1:{closed}"
    for node in alice["spu_config"]["cluster_def"]["nodes"]:
        if node["party"] == "bob":
            node["address"] = f"127.0.0.1:{PortAllocator().one()}"
    t0 = time.monotonic()
    results = send(federation, {"alice": alice})
    with pytest.raises(NodeTaskError) as info:
        results["alice"].get(timeout=240)
    err = info.value.result["error"]
    assert err["type"] in ("PeerUnreachable", "PeerConnectTimeout"), err
    assert err["message"].startswith("party alice: "), err
    assert "bob" in err["message"] and "TLS" not in err["message"], err
    assert time.monotonic() - t0 < 150
    assert dt.datetime.now(dt.UTC)  # the node is still there for the next job
