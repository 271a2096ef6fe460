"""Real two-party PSI through each party's own queue: SecretFlow Ray production mode, mTLS."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
from celery.exceptions import TaskRevokedError

from deploy.local.standin import psi_params, read_keys, send, write_csv
from node.contract import NodeTaskError, StatusEvent, TaskResult, TaskStatus
from node.worker.notifier import read_events

PARTIES = ["alice", "bob"]
TIMEOUT = 300


@pytest.fixture(scope="module")
def datasets(federation):
    """alice: customers.csv (uid), bob: accounts.csv (id); keys are strings: '007' != '7'."""
    rng = random.Random(7)
    common = [f"u{n:06d}" for n in rng.sample(range(1_000_000), 700)]
    only_a = [f"a{n:06d}" for n in rng.sample(range(1_000_000), 500)]
    only_b = [f"b{n:06d}" for n in rng.sample(range(1_000_000), 800)]
    a_keys = [*common, *only_a, "007", "42"]
    b_keys = [*common, *only_b, "7", "42"]
    rng.shuffle(a_keys)
    rng.shuffle(b_keys)
    write_csv(federation.nodes["alice"].data_root / "customers.csv", "uid", a_keys, extra_cols=2)
    write_csv(federation.nodes["bob"].data_root / "accounts.csv", "id", b_keys, extra_cols=1)
    truth = set(a_keys) & set(b_keys)
    assert "42" in truth and "007" not in truth and "7" not in truth
    return truth


def _params(federation, out_name, protocol="RR22", receiver="alice", broadcast=False, **kw):
    return psi_params(
        federation,
        PARTIES,
        keys={"alice": ["uid"], "bob": ["id"]},
        inputs={"alice": "customers.csv", "bob": "accounts.csv"},
        outputs={"alice": out_name, "bob": out_name},
        receiver=receiver,
        protocol=protocol,
        broadcast_result=broadcast,
        **kw,
    )


def _outcomes(results: dict, timeout: float = TIMEOUT) -> dict[str, tuple[str, dict]]:
    """party → ("success", result dict) | ("error", result dict)."""
    out = {}
    for party, res in results.items():
        try:
            out[party] = ("success", res.get(timeout=timeout))
        except NodeTaskError as exc:
            out[party] = ("error", exc.result)
    return out


def _events(federation, party, task_request_id) -> list[StatusEvent]:
    return read_events(federation.nodes[party].redis(), task_request_id)


def _logs(federation, per_party: dict, lines: int = 25) -> str:
    """The tail of every party's job log, for failure messages."""
    from node.launch.runner import log_tail

    out = []
    for party, params in per_party.items():
        path = (
            federation.nodes[party].state_dir
            / "jobs"
            / f"{params['execution_id']}.{party}"
            / "job.log"
        )
        out.append(f"--- {party} job log ({path}) ---")
        out.extend(log_tail(path, lines))
    return "\n".join(out)


def _assert_success_stream(events: list[StatusEvent]) -> None:
    statuses = [e.status for e in events]
    assert statuses[0] == TaskStatus.RECEIVED, statuses
    assert statuses[1] == TaskStatus.RUNNING, statuses
    assert statuses[-1] == TaskStatus.SUCCESS, statuses
    assert set(statuses[2:-1]) <= {TaskStatus.PROGRESS}, statuses
    stages = [e.data.stage for e in events]
    for stage in (
        "task_received",
        "cluster_initialized",
        "devices_ready",
        "algorithm_running",
        "algorithm_done",
        "task_finished",
    ):
        assert stage in stages, stages
    seqs = [e.seq for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), seqs


@pytest.mark.parametrize("protocol", ["RR22", "ECDH_PSI_2PC", "KKRT_PSI_2PC"])
def test_psi_receiver_gets_exact_intersection(federation, datasets, protocol):
    out_name = f"out/psi-{protocol.lower()}.csv"
    per_party = _params(federation, out_name, protocol=protocol)
    traces = set(Path("/tmp").glob("psi_*.trace"))  # SPU's default place for its PSI traces
    outcomes = _outcomes(send(federation, per_party))
    for party, (status, result) in outcomes.items():
        assert status == "success", (
            f"{party}: {result.get('error')}\n{_logs(federation, per_party)}"
        )
        TaskResult.model_validate(result)
        assert result["task_metadata"]["party"] == party
        assert result["task_metadata"]["execution_id"] == per_party[party]["execution_id"]
        metrics = result["performance_metrics"]
        assert metrics["total_s"] > 0 and metrics["algorithm_s"] > 0

    alice_out = federation.nodes["alice"].data_root / out_name
    got = read_keys(alice_out, "uid")
    assert len(got) == len(set(got)), "duplicate rows in the intersection"
    assert set(got) == datasets
    assert outcomes["alice"][1]["result"]["intersection_count"] == len(datasets)
    # each party's own input size, as SPU counted it (less the sentinel line of node.dataroot.tables)
    for party, name, key in (("alice", "customers.csv", "uid"), ("bob", "accounts.csv", "id")):
        own = read_keys(federation.nodes[party].data_root / name, key)
        assert outcomes[party][1]["result"]["original_count"] == len(set(own)), party
    assert outcomes["alice"][1]["result"]["protocol"].startswith("PROTOCOL_")
    # the sender receives no rows without broadcast_result
    assert not (federation.nodes["bob"].data_root / out_name).exists()
    assert outcomes["bob"][1]["result"]["output_path"] is None
    # only the receiver learns the count: the sender's node neither reports nor received it
    # (neither party's PSI report crossed the link — RayFed's own record of what it sent)
    assert outcomes["bob"][1]["result"]["intersection_count"] is None
    for party in PARTIES:
        assert outcomes[party][1]["result"]["report_sent_to"] == [], party
    # nothing of the job is left outside the data root (SPU's trace went to the work folder)
    assert set(Path("/tmp").glob("psi_*.trace")) <= traces

    for party in PARTIES:
        task_request_id = f"{per_party[party]['execution_id']}.{party}"
        events = _events(federation, party, task_request_id)
        _assert_success_stream(events)
        if party == "bob":
            assert events[-1].data.result["intersection_count"] is None
        # after the result, the job process shut its links down cleanly (no Ray worker failed
        # to import what the teardown ran: node/sfjob/rayworker.py's workers have no jax)
        teardown = _teardown(federation, party, task_request_id)
        assert "teardown_s" in teardown and "error" not in teardown, teardown


def _teardown(federation, party: str, task_request_id: str, wait_s: float = 90.0) -> dict:
    """The job process's teardown.json (written by the node once the process has ended)."""
    path = federation.nodes[party].state_dir / "jobs" / task_request_id / "teardown.json"
    end = time.monotonic() + wait_s
    while not path.exists():
        assert time.monotonic() < end, f"{party}: no teardown.json after {wait_s:.0f} s"
        time.sleep(0.2)
    return json.loads(path.read_text())


def test_broadcast_result_gives_both_parties_the_rows(federation, datasets):
    out_name = "out/broadcast.csv"
    outcomes = _outcomes(
        send(federation, _params(federation, out_name, receiver="bob", broadcast=True))
    )
    assert all(s == "success" for s, _ in outcomes.values()), outcomes
    assert set(read_keys(federation.nodes["alice"].data_root / out_name, "uid")) == datasets
    assert set(read_keys(federation.nodes["bob"].data_root / out_name, "id")) == datasets


def _assert_refused_before_work(federation, party, params, result, *needles):
    assert result["status"] == "error"
    message = result["error"]["message"]
    assert f"party {party}" in message
    for needle in needles:
        assert needle in message, message
    task_request_id = f"{params['execution_id']}.{party}"
    statuses = [e.status for e in _events(federation, party, task_request_id)]
    assert statuses == [TaskStatus.RECEIVED, TaskStatus.FAILURE], statuses
    assert not (federation.nodes[party].state_dir / "jobs" / task_request_id).exists(), (
        "a job process was started"
    )


def test_path_outside_data_root_is_refused_and_peer_cancelled(federation, datasets):
    per_party = _params(federation, "out/never.csv")
    per_party["alice"]["task_config"]["input_paths"]["alice"] = "../bob/data/accounts.csv"
    results = send(federation, per_party)
    with pytest.raises(NodeTaskError) as info:
        results["alice"].get(timeout=60)
    _assert_refused_before_work(federation, "alice", per_party["alice"], info.value.result, "'..'")

    # the coordinator's part, played here: terminate the survivor at once
    bob_trid = results["bob"].id
    t0 = time.monotonic()
    deadline = t0 + 60
    while not any(e.status == TaskStatus.RUNNING for e in _events(federation, "bob", bob_trid)):
        assert time.monotonic() < deadline, "bob never started"
        time.sleep(0.2)
    results["bob"].revoke(terminate=True, signal="SIGTERM")
    while True:
        statuses = [e.status for e in _events(federation, "bob", bob_trid)]
        if statuses[-1] in (TaskStatus.CANCELLED, TaskStatus.FAILURE, TaskStatus.SUCCESS):
            break
        assert time.monotonic() < deadline, statuses
        time.sleep(0.2)
    assert statuses[-1] == TaskStatus.CANCELLED, statuses


@pytest.mark.parametrize(
    "escape",
    ["/etc/passwd", "link_out/passwd"],
    ids=["absolute-outside", "symlink-out"],
)
def test_other_escapes_refused(federation, datasets, escape):
    root = federation.nodes["alice"].data_root
    if escape.startswith("link_out") and not (root / "link_out").exists():
        (root / "link_out").symlink_to("/etc")
    per_party = _params(federation, "out/never.csv")
    per_party["alice"]["task_config"]["input_paths"]["alice"] = escape
    results = send(federation, {"alice": per_party["alice"]})
    with pytest.raises(NodeTaskError) as info:
        results["alice"].get(timeout=60)
    _assert_refused_before_work(
        federation, "alice", per_party["alice"], info.value.result, "outside the data root"
    )


def test_missing_key_column_is_named(federation, datasets):
    per_party = _params(federation, "out/never.csv")
    per_party["bob"]["task_config"]["keys"]["bob"] = ["customer_id"]
    results = send(federation, {"bob": per_party["bob"]})
    with pytest.raises(NodeTaskError) as info:
        results["bob"].get(timeout=60)
    _assert_refused_before_work(
        federation, "bob", per_party["bob"], info.value.result, "'customer_id'", "accounts.csv"
    )


def test_task_for_the_other_party_is_refused(federation, datasets):
    per_party = _params(federation, "out/never.csv")
    # alice's params pushed into bob's queue
    results = send(federation, {"alice": per_party["alice"]}, to={"alice": "bob"})
    with pytest.raises(NodeTaskError) as info:
        results["alice"].get(timeout=60)
    result = info.value.result
    assert "self_party is 'alice' but this node is 'bob'" in result["error"]["message"]


def test_params_that_break_the_contract_are_refused(federation):
    app = federation.nodes["alice"].celery_client()
    res = app.send_task(
        "tasks.secretflow.execute_task",
        args=["exe-garbage.alice", {"execution_id": "exe-garbage", "task_config": 5}],
        task_id="exe-garbage.alice",
        queue="secretflow_queue",
    )
    with pytest.raises(NodeTaskError) as info:
        res.get(timeout=60)
    err = info.value.result["error"]
    assert err["type"] == "InvalidTaskParams"
    assert "party alice refused the task" in err["message"]
    TaskResult.model_validate(info.value.result)


def test_past_deadline_refused(federation, datasets):
    import datetime as dt

    per_party = _params(
        federation, "out/never.csv", deadline=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)
    )
    results = send(federation, {"alice": per_party["alice"]})
    with pytest.raises(NodeTaskError) as info:
        results["alice"].get(timeout=60)
    _assert_refused_before_work(
        federation, "alice", per_party["alice"], info.value.result, "deadline"
    )


def test_party_not_among_allowed_peers_refused(federation, datasets):
    params = json.loads(
        json.dumps(_params(federation, "out/never.csv")["alice"]).replace('"bob"', '"mallory"')
    )
    assert "mallory" in params["sf_init_config"]["parties"]
    results = send(federation, {"alice": params})
    with pytest.raises(NodeTaskError) as info:
        results["alice"].get(timeout=60)
    _assert_refused_before_work(
        federation, "alice", params, info.value.result, "mallory", "allowed peers"
    )


def test_peer_with_certificate_from_another_ca_fails_both_sides(federation, datasets, tmp_path):
    from certs.authority import init_federation
    from certs.revocation import write_crl

    evil = tmp_path / "evil-ca"
    # bob's whole PKI is the other CA's, its revocation list too (the federation's would stop
    # bob's fed link before any handshake: a list not of NODE_CA_FILE fails closed)
    write_crl(evil, init_federation(evil, ["bob"], ca_name="Some other CA"))
    bob = federation.nodes["bob"]
    federation.stop_worker(bob)
    federation.start_worker(
        bob,
        NODE_CERT_FILE=str(evil / "bob.crt"),
        NODE_KEY_FILE=str(evil / "bob.key"),
        NODE_CA_FILE=str(evil / "ca.crt"),
        NODE_CRL_FILE=str(evil / "crl.pem"),
    )
    try:
        federation.wait_workers()
        t0 = time.monotonic()
        outcomes = _outcomes(send(federation, _params(federation, "out/evil.csv")), timeout=180)
        elapsed = time.monotonic() - t0
        for party, (status, result) in outcomes.items():
            assert status == "error", f"{party} should have failed: {result}"
            err = result["error"]
            other = "bob" if party == "alice" else "alice"
            assert err["type"] == "TLSHandshakeError", err
            assert err["message"].startswith(f"party {party}: TLS handshake with {other} failed")
            assert "\n" not in err["message"] and "\x1b" not in err["message"]
            assert len(err["message"]) <= 300 and err["details"]
        assert elapsed < 120, f"took {elapsed:.0f}s"
        assert not (federation.nodes["alice"].data_root / "out/evil.csv").exists()
    finally:
        federation.stop_worker(bob)
        federation.start_worker(bob)
        federation.wait_workers()


def test_health_cli_reports_ok(federation):
    alice = federation.nodes["alice"]
    import os

    env = dict(os.environ, **alice.env())
    done = subprocess.run(
        [sys.executable, "-m", "node", "health", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    report = json.loads(done.stdout)
    assert done.returncode == 0, report
    names = {c["name"] for c in report["checks"] if c["ok"]}
    assert {
        "redis",
        "celery worker",
        "ray head",
        "certificate",
        "key matches certificate",
        "revocation list",  # the federation's CA list (NODE_CRL_FILE), as on real hosts
        "data root",
    } <= names


def test_party_redis_is_not_open(federation):
    import redis

    node = federation.nodes["alice"]
    port = node.ports["redis"]
    ca = str(node.redis_ca_file)
    assert node.redis().ping()
    # TLS without credentials: the default user is off
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=ca).ping()
    # the worker's user with a wrong password
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(
            host="127.0.0.1",
            port=port,
            ssl=True,
            ssl_ca_certs=ca,
            username="node",
            password="wrong",
        ).ping()
    # plain TCP (no TLS) with the right password: no answer
    with pytest.raises(redis.ConnectionError):
        redis.Redis(
            host="127.0.0.1", port=port, username="node", password=node.password, socket_timeout=3
        ).ping()


def test_the_coordinators_redis_user_gets_only_what_it_needs(federation):
    """The coordinator's ACL user (deploy/redis/coordinator.acl) on a real node: no scripts, no
    command that lists or counts every key, no key of the node's own (e.g. its replay record)."""
    import redis

    node = federation.nodes["alice"]
    coord = redis.Redis(
        host="127.0.0.1",
        port=node.ports["redis"],
        ssl=True,
        ssl_ca_certs=str(node.redis_ca_file),
        username="coordinator",
        password=node.coordinator_password,
    )
    assert coord.ping()
    node.redis().set("node_executed:exe-x.alice", "1", ex=60)  # a node-private key
    for attempt in (
        lambda: coord.eval("return redis.call('get', KEYS[1])", 1, "node_executed:exe-x.alice"),
        lambda: coord.execute_command("FUNCTION", "LIST"),
        lambda: coord.keys("*"),
        lambda: coord.scan(0),
        lambda: coord.randomkey(),
        lambda: coord.dbsize(),
        lambda: coord.get("node_executed:exe-x.alice"),
        lambda: coord.flushall(),
        lambda: coord.config_get("*"),
        lambda: coord.acl_list(),
    ):
        with pytest.raises(redis.exceptions.NoPermissionError):
            attempt()
    # … and what it needs still works: the heartbeat, the status stream, a queue's length
    assert coord.get("node_heartbeat:sf")
    # the listener's own consumer group (made with MKSTREAM, as coordinator.listener does)
    coord.xgroup_create("task_status_stream", "acl-test", id="$", mkstream=True)
    try:
        assert "acl-test" in {g["name"].decode() for g in coord.xinfo_groups("task_status_stream")}
    finally:
        coord.xgroup_destroy("task_status_stream", "acl-test")
    assert coord.llen("secretflow_queue") >= 0


def test_ray_head_status_cli(federation):
    import os

    for node in federation.nodes.values():
        env = dict(os.environ, **node.env())
        done = subprocess.run(
            [sys.executable, "-m", "node", "ray-head", "status"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        info = json.loads(done.stdout)
        assert done.returncode == 0 and info["up"] and info["address"] == node.ray_address, (
            done.stdout
        )
        assert info["processes"] > 1


def test_job_process_crash_is_a_named_failure(federation, datasets):
    import os
    import signal

    per_party = _params(federation, "out/crash.csv")
    results = send(federation, per_party)
    alice_trid = results["alice"].id
    deadline = time.monotonic() + 120
    while not any(
        e.data.stage == "algorithm_running" for e in _events(federation, "alice", alice_trid)
    ):
        assert time.monotonic() < deadline, "alice never reached algorithm_running"
        time.sleep(0.1)
    pid = int((federation.nodes["alice"].state_dir / "jobs" / alice_trid / "pid").read_text())
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(NodeTaskError) as info:
        results["alice"].get(timeout=60)
    err = info.value.result["error"]
    assert err["type"] == "JobProcessCrashed"
    assert err["message"].startswith("party alice: its job process was killed before finishing")
    results["bob"].revoke(terminate=True, signal="SIGTERM")
    with pytest.raises((NodeTaskError, TaskRevokedError)):
        results["bob"].get(timeout=60)
    deadline = time.monotonic() + 30
    while _events(federation, "bob", results["bob"].id)[-1].status != TaskStatus.CANCELLED:
        assert time.monotonic() < deadline, "bob's task was not cancelled"
        time.sleep(0.2)


def test_workers_keep_running_jobs_after_failures(federation, datasets):
    out_name = "out/after-failures.csv"
    outcomes = _outcomes(send(federation, _params(federation, out_name, protocol="RR22")))
    assert all(s == "success" for s, _ in outcomes.values()), outcomes
    assert set(read_keys(federation.nodes["alice"].data_root / out_name, "uid")) == datasets


def test_send_task_cli_goes_through_the_queue(federation):
    import os

    bob = federation.nodes["bob"]
    env = dict(
        os.environ,
        **bob.env(),
        NODE_SIGN_KEY_FILE=str(bob.signing.key_file),
        NODE_SIGN_CERT_FILE=str(bob.signing.cert_file),
    )
    for kind, check in (
        ("hello", lambda v: v["message"] == "hello from bob"),
        ("health", lambda v: v["party"] == "bob"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "node", "send-task", kind, "--timeout", "60"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert check(json.loads(done.stdout)), done.stdout


# --- replay: a captured signed task message pushed again ----------------------------------------
CAPTURE_QUEUE = "capture"  # no worker reads it: the signed messages wait there to be copied


def _capture(federation, per_party: dict) -> dict[str, bytes]:
    """Each party's signed task message exactly as it sits in a Redis queue (the attacker's
    copy): published to a queue no worker reads, then read raw."""
    from node.contract import TASK_EXECUTE, task_request_id

    raw = {}
    for p, params in per_party.items():
        node = federation.nodes[p]
        request_id = task_request_id(params["execution_id"], p)
        node.celery_client().send_task(
            TASK_EXECUTE,
            args=[request_id, params],
            task_id=request_id,
            queue=CAPTURE_QUEUE,
            routing_key=CAPTURE_QUEUE,
        )
        r = node.redis()
        raw[p] = r.rpop(CAPTURE_QUEUE)
        assert raw[p], f"no message captured for {p}"
    return raw


def test_a_replayed_task_message_does_not_run_again(federation, datasets):
    """The PSI runs from the captured signed messages; alice's message pushed again is dropped:
    no second run, no new status event, her Celery result untouched, and health says so."""
    from celery.result import AsyncResult

    from node.contract import SECRETFLOW_QUEUE, TASK_HEALTH, task_request_id
    from node.ops.refusals import refused_counts

    out_name = "out/replay.csv"
    per_party = _params(federation, out_name)
    raw = _capture(federation, per_party)
    for p, msg in raw.items():
        federation.nodes[p].redis().lpush(SECRETFLOW_QUEUE, msg)
    task_request_ids = {p: task_request_id(per_party[p]["execution_id"], p) for p in PARTIES}
    alice = federation.nodes["alice"]
    app = alice.celery_client()
    first = AsyncResult(task_request_ids["alice"], app=app)
    assert first.get(timeout=TIMEOUT, propagate=False)["status"] == "success"
    assert set(read_keys(alice.data_root / out_name, "uid")) == datasets
    events_before = _events(federation, "alice", task_request_ids["alice"])
    before = refused_counts(alice.redis()).get("Replay", 0)

    alice.redis().lpush(SECRETFLOW_QUEUE, raw["alice"])  # the replay
    end = time.monotonic() + 60
    while refused_counts(alice.redis()).get("Replay", 0) == before:
        assert time.monotonic() < end, "the replayed message was not seen by the worker"
        time.sleep(0.2)
    assert _events(federation, "alice", task_request_ids["alice"]) == events_before  # no second run
    assert AsyncResult(task_request_ids["alice"], app=app).state == "SUCCESS"
    health = subprocess.run(
        [sys.executable, "-m", "node", "health", "--json"],
        env={**os.environ, **alice.env()},
        capture_output=True,
        text=True,
        timeout=60,
    )
    check = next(c for c in json.loads(health.stdout)["checks"] if c["name"] == "refused tasks")
    assert check["warn"] and "Replay" in check["detail"], check
    # the same check through the health task, which the coordinator's parties page shows
    report = app.send_task(TASK_HEALTH).get(timeout=60)
    check = next(c for c in report["checks"] if c["name"] == "refused tasks")
    assert check["warn"] and "Replay" in check["detail"], check


# --- the cross-silo link: what a peer may send to a node's fed port -----------------------------
def _fed_send(federation, port: int, as_party: str, data: bytes, job: str, seq=("1", "2")):
    """One SendData call to 127.0.0.1:`port` with `as_party`'s federation certificate."""
    import grpc
    from fed.proxy.grpc.grpc_proxy import fed_pb2, fed_pb2_grpc

    from certs.authority import party_cert_name, party_key_name

    d = federation.certs_dir
    creds = grpc.ssl_channel_credentials(
        root_certificates=(d / "ca.crt").read_bytes(),
        private_key=(d / party_key_name(as_party)).read_bytes(),
        certificate_chain=(d / party_cert_name(as_party)).read_bytes(),
    )
    with grpc.secure_channel(f"127.0.0.1:{port}", creds) as channel:
        grpc.channel_ready_future(channel).result(timeout=5)
        stub = fed_pb2_grpc.GrpcServiceStub(channel)
        return stub.SendData(
            fed_pb2.SendDataRequest(
                data=data, upstream_seq_id=seq[0], downstream_seq_id=seq[1], job_name=job
            ),
            timeout=10,
        )


class _Exec:
    def __reduce__(self):
        return (exec, (f"open({str(PWNED)!r}, 'w')",))


PWNED = __import__("pathlib").Path("/tmp/partyline-e2e-pwned")


def test_a_peer_cannot_make_a_node_unpickle_code_or_hold_a_strangers_data(federation, datasets):
    """alice waits at her fed port for bob (whose task is never sent). bob's certificate sends
    a pickled `exec`; carol's (a federation member outside this job) sends plain data; bob
    sends the same message twice. Each is refused on arrival; nothing runs. (The refusals are
    also logged on partyline.security in the receiver's Ray worker; the job may end — bob never
    comes — before Ray forwards that line to the job log, so the test does not wait for it.)"""
    import cloudpickle

    PWNED.unlink(missing_ok=True)
    per_party = _params(federation, "out/never-link.csv")
    alice = per_party["alice"]
    port = int(alice["sf_init_config"]["cluster"]["alice"]["address"].rpartition(":")[2])
    results = send(federation, {"alice": alice})
    job = alice["execution_id"]
    try:
        end = time.monotonic() + 120
        while True:  # alice's receiver is up once the job process has run fed.init
            try:
                r = _fed_send(federation, port, "bob", cloudpickle.dumps(_Exec()), job)
                break
            except Exception:
                assert time.monotonic() < end, "alice's fed port never answered"
                time.sleep(0.5)
        assert r.code == 403 and "forbidden global builtins.exec" in r.result, r
        r = _fed_send(federation, port, "carol", cloudpickle.dumps(b"data"), job, ("3", "4"))
        assert r.code == 403 and "not a party of this job" in r.result, r
        ok = _fed_send(federation, port, "bob", cloudpickle.dumps({"x": 1}), job, ("5", "6"))
        assert ok.code == 200, ok
        again = _fed_send(federation, port, "bob", cloudpickle.dumps({"x": 2}), job, ("5", "6"))
        assert again.code == 409, again
        assert not PWNED.exists()
    finally:
        results["alice"].revoke(terminate=True, signal="SIGTERM")
        with pytest.raises((NodeTaskError, TaskRevokedError)):
            results["alice"].get(timeout=60)
    assert not PWNED.exists()
