"""Warm federation sessions through the coordinator (COORD_WARM_SESSIONS=true) on the real
federation: back-to-back jobs in one session, a driver killed mid-job, a cancel, and sessions
kept apart per party set. Every answer is checked against the plain-Python intersection."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deploy.local.standin import read_keys, write_csv
from node.sessions.client import list_sessions
from tests.e2e.helpers import final, psi_body, running_coordinator, wait_for, wait_job

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture(scope="module")
def coordinator(federation):
    with running_coordinator(
        federation, ARTIFACTS / "e2e-sessions", env={"COORD_WARM_SESSIONS": "true"}
    ) as proc:
        yield proc  # (on exit every node's sessions are closed: helpers.running_coordinator)


@pytest.fixture
def http(coordinator):
    with coordinator.client() as client:
        yield client


def sessions(federation, party: str) -> list[dict]:
    return list_sessions(federation.nodes[party].settings())


def write_pair(federation, folder: str, peer: str, rows: int, seed: int) -> set[str]:
    """alice's and `peer`'s tables (overlapping at random); the true intersection."""
    rng = random.Random(seed)
    universe = range(rows * 3)
    mine = [f"u{i}" for i in rng.sample(universe, rows)]
    theirs = [f"u{i}" for i in rng.sample(universe, rows)]
    write_csv(federation.nodes["alice"].data_root / folder / "alice.csv", "uid", mine)
    write_csv(federation.nodes[peer].data_root / folder / f"{peer}.csv", "id", theirs)
    return set(mine) & set(theirs)


def body(folder: str, peer: str = "bob") -> dict:
    b = psi_body(f"{folder}/alice.csv", f"{folder}/bob.csv", f"{folder}/out.csv")
    if peer != "bob":
        b["parties"] = {
            "alice": b["parties"]["alice"],
            peer: {"keys": ["id"], "input": f"{folder}/{peer}.csv", "output": f"{folder}/out.csv"},
        }
    return b


def answer(federation, folder: str) -> set[str]:
    return set(read_keys(federation.nodes["alice"].data_root / folder / "out.csv", "uid"))


def submit(http, b: dict) -> str:
    r = http.post("/api/v1/jobs/psi", json=b)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def test_twenty_back_to_back_jobs_run_in_one_session_and_are_all_right(federation, http):
    seen = []
    for i in range(20):
        folder = f"sess/b2b{i}"
        truth = write_pair(federation, folder, "bob", rows=300 + 37 * i, seed=i)
        job = final(http, submit(http, body(folder)), timeout=300)
        assert job["status"] == "SUCCEEDED", job["error"]
        assert answer(federation, folder) == truth, f"job {i}: wrong intersection"
        assert job["session_id"], "the job did not run in a warm session"
        seen.append(job["session_id"])
    assert len(set(seen)) == 1, seen  # one session for all twenty
    for party in ("alice", "bob"):
        (live,) = [s for s in sessions(federation, party) if s["id"] == seen[0]]
        assert live["jobs"] == 20 and live["busy"] is None


def _party_errors(http, job_id: str) -> dict[str, dict]:
    job = http.get(f"/api/v1/jobs/{job_id}").json()
    return {
        t["party"]: t["error"] for t in job["tasks"] if t["execution_id"] == job["execution_id"]
    }


def test_a_job_refused_before_any_work_leaves_the_session_as_it_was(federation, http):
    """A refusal at the sender (a missing key column) and one at the receiver (a repeated key,
    duplicates=refuse), each after the party set's session is up: the job FAILS at once naming
    the refusing party and its cause, the other party's part ends as PeerRefused naming it,
    and the next job runs in the same session, by the same drivers — no SecretFlow start-up."""
    truth = write_pair(federation, "sess/ref-warm", "bob", rows=400, seed=31)
    warm = final(http, submit(http, body("sess/ref-warm")), timeout=300)
    assert warm["status"] == "SUCCEEDED", warm["error"]
    assert answer(federation, "sess/ref-warm") == truth
    drivers = {p: {s["id"]: s["pid"] for s in sessions(federation, p)} for p in ("alice", "bob")}

    write_pair(federation, "sess/ref-col", "bob", rows=100, seed=32)
    no_column = body("sess/ref-col")
    no_column["parties"]["bob"]["keys"] = ["no_such_column"]
    write_pair(federation, "sess/ref-dup", "bob", rows=100, seed=33)
    repeated = federation.nodes["alice"].data_root / "sess/ref-dup/alice.csv"
    rows = repeated.read_text().splitlines()
    repeated.write_text("\n".join([*rows, rows[1]]) + "\n")  # alice's first key twice
    twice = {**body("sess/ref-dup"), "duplicates": "refuse"}
    for refused, other, b, cause in (
        ("bob", "alice", no_column, "KeyColumnMissing"),
        ("alice", "bob", twice, "DuplicateKeys"),
    ):
        job_id = submit(http, b)
        job = final(http, job_id, timeout=120)
        assert job["status"] == "FAILED" and job["failed_party"] == refused, job
        assert cause in job["error"] and f"party {refused} refused the task" in job["error"]
        assert job["session_id"] == warm["session_id"]
        errors = wait_for(
            lambda jid=job_id, o=other: (e := _party_errors(http, jid)) and e.get(o) and e,
            30,
            f"{other}'s part to end",
        )
        assert errors[other]["type"] == "PeerRefused", errors[other]
        said = errors[other]["message"]
        assert said.startswith(f"party {other}: ended before any work: party {refused} refused")

    folder = "sess/ref-after"
    truth = write_pair(federation, folder, "bob", rows=600, seed=34)
    after = final(http, submit(http, body(folder)), timeout=120)
    assert after["status"] == "SUCCEEDED", after["error"]
    assert answer(federation, folder) == truth
    assert after["session_id"] == warm["session_id"]  # the same session …
    for party in ("alice", "bob"):  # … by the same drivers
        now = {s["id"]: s["pid"] for s in sessions(federation, party)}
        assert now[warm["session_id"]] == drivers[party][warm["session_id"]]


def _running_job_with_stopped_peer(federation, http, folder: str) -> tuple[str, dict, dict]:
    """A job whose PSI cannot finish: bob's session driver is stopped (SIGSTOP) once both
    parties run it. → (job id, alice's session, bob's session)."""
    write_pair(federation, f"{folder}/warm", "bob", rows=500, seed=98)
    warm = final(http, submit(http, body(f"{folder}/warm")), timeout=300)  # the session is up
    assert warm["status"] == "SUCCEEDED", warm["error"]
    (bob_s,) = [s for s in sessions(federation, "bob") if s["id"] == warm["session_id"]]
    os.kill(bob_s["pid"], signal.SIGSTOP)
    write_pair(federation, folder, "bob", rows=500, seed=99)
    job_id = submit(http, body(folder))
    wait_job(http, job_id, lambda d: d["status"] == "RUNNING", timeout=60)

    def busy(party: str) -> dict | None:
        return next((s for s in sessions(federation, party) if s["busy"]), None)

    alice_s = wait_for(lambda: busy("alice"), 30, "alice's session to run the job")
    wait_for(lambda: busy("bob"), 30, "bob's session to take the job")
    return job_id, alice_s, bob_s


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # a zombie is gone too (its parent reaps it a moment later)
    return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"


def test_a_driver_killed_mid_job_is_followed_by_a_right_job_in_a_new_session(federation, http):
    job_id, alice_s, bob_s = _running_job_with_stopped_peer(federation, http, "sess/kill")
    os.kill(alice_s["pid"], signal.SIGKILL)
    job = final(http, job_id, timeout=120)
    assert job["status"] == "FAILED"
    assert job["failed_party"] == "alice" and "killed" in job["error"], job["error"]
    wait_for(lambda: _gone(bob_s["pid"]), 30, "bob's stopped driver to be ended")
    assert all(s["id"] != alice_s["id"] for s in sessions(federation, "bob"))
    folder = "sess/after-kill"
    truth = write_pair(federation, folder, "bob", rows=800, seed=7)
    after = final(http, submit(http, body(folder)), timeout=300)
    assert after["status"] == "SUCCEEDED", after["error"]
    assert answer(federation, folder) == truth
    assert after["session_id"] and after["session_id"] != alice_s["id"]


def test_cancel_in_a_warm_session_ends_it_on_both_sides(federation, http):
    job_id, alice_s, bob_s = _running_job_with_stopped_peer(federation, http, "sess/cancel")
    t0 = time.monotonic()
    r = http.post(f"/api/v1/jobs/{job_id}/cancel")
    assert r.status_code == 200, r.text
    for s in (alice_s, bob_s):
        wait_for(lambda s=s: _gone(s["pid"]), 30, f"driver {s['pid']} to be ended")
    ended_in = time.monotonic() - t0
    for party in ("alice", "bob"):
        assert all(s["id"] != alice_s["id"] for s in sessions(federation, party))
    job = final(http, job_id, timeout=60)
    assert job["status"] == "CANCELLED"
    print(f"cancel → both drivers ended in {ended_in:.1f} s")
    folder = "sess/after-cancel"
    truth = write_pair(federation, folder, "bob", rows=600, seed=8)
    after = final(http, submit(http, body(folder)), timeout=300)
    assert after["status"] == "SUCCEEDED", after["error"]
    assert answer(federation, folder) == truth


def test_a_session_is_never_used_by_a_job_of_another_party_pair(federation, http):
    ids = {}
    for peer, folder in (("bob", "sess/ab1"), ("carol", "sess/ac1"), ("bob", "sess/ab2")):
        truth = write_pair(federation, folder, peer, rows=400, seed=len(ids))
        job = final(http, submit(http, body(folder, peer)), timeout=300)
        assert job["status"] == "SUCCEEDED", job["error"]
        assert answer(federation, folder) == truth
        ids[folder] = job["session_id"]
    assert ids["sess/ab1"] == ids["sess/ab2"] != ids["sess/ac1"]
    at_alice = {s["id"]: s["parties"] for s in sessions(federation, "alice")}
    assert at_alice[ids["sess/ab1"]] == ["alice", "bob"]
    assert at_alice[ids["sess/ac1"]] == ["alice", "carol"]
    assert {s["id"] for s in sessions(federation, "carol")} == {ids["sess/ac1"]}
    assert ids["sess/ac1"] not in {s["id"] for s in sessions(federation, "bob")}


def _node_cli(federation, party: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, **federation.nodes[party].env())
    return subprocess.run(
        [sys.executable, "-m", "node", "sessions", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_session_closed_at_one_party_costs_one_retry_then_a_new_session(federation, http):
    folder = "sess/closed1"
    write_pair(federation, folder, "bob", rows=300, seed=11)
    first = final(http, submit(http, body(folder)), timeout=300)
    assert first["status"] == "SUCCEEDED", first["error"]
    listed = json.loads(_node_cli(federation, "bob", "--json").stdout)
    assert first["session_id"] in {s["id"] for s in listed}
    done = _node_cli(federation, "bob", "--close", first["session_id"])
    assert done.returncode == 0 and first["session_id"] in done.stdout, done.stderr
    folder = "sess/closed2"
    truth = write_pair(federation, folder, "bob", rows=300, seed=12)
    job = final(http, submit(http, body(folder)), timeout=300)
    assert job["status"] == "SUCCEEDED", job["error"]
    assert answer(federation, folder) == truth
    assert job["attempt"] == 2 and job["session_id"] != first["session_id"]
    lost = [
        t for t in job["tasks"] if t["party"] == "bob" and t["execution_id"] != job["execution_id"]
    ]
    assert lost and lost[0]["error"]["type"] == "SessionLost", lost
    assert "has ended here (closed by request)" in lost[0]["error"]["message"]


def test_a_party_set_named_in_prewarm_has_its_session_before_its_first_job(federation):
    """COORD_PREWARM=dave+erin: as soon as both are ready the coordinator sends a warm-up (no
    data read), and the first PSI of dave and erin runs in that session — its second job — with
    the right answer. (Last in this module: leaving, its coordinator closes every session.)"""
    env = {"COORD_WARM_SESSIONS": "true", "COORD_PREWARM": "dave+erin"}
    with (
        running_coordinator(federation, ARTIFACTS / "e2e-prewarm", env=env) as coord,
        coord.client() as http,
    ):

        def warmed() -> dict | None:
            items = http.get("/api/v1/jobs").json()["items"]
            return next((j for j in items if j["kind"] == "warmup"), None)

        warmup = final(http, wait_for(warmed, 60, "the warm-up to be sent")["id"], timeout=300)
        assert warmup["status"] == "SUCCEEDED", warmup["error"]
        assert sorted(warmup["parties"]) == ["dave", "erin"]
        rng = random.Random(5)
        dave = [f"u{i}" for i in rng.sample(range(3000), 1000)]
        erin = [f"u{i}" for i in rng.sample(range(3000), 1000)]
        write_csv(federation.nodes["dave"].data_root / "pre/dave.csv", "k", dave)
        write_csv(federation.nodes["erin"].data_root / "pre/erin.csv", "k", erin)
        body = {
            "parties": {
                p: {"keys": ["k"], "input": f"pre/{p}.csv", "output": "pre/out.csv"}
                for p in ("dave", "erin")
            },
            "receiver": "dave",
        }
        job = final(http, submit(http, body), timeout=120)
        assert job["status"] == "SUCCEEDED", job["error"]
        assert job["session_id"] == warmup["session_id"]
        got = read_keys(federation.nodes["dave"].data_root / "pre/out.csv", "k")
        assert sorted(got) == sorted(set(dave) & set(erin))
        detail = http.get(f"/api/v1/jobs/{job['id']}").json()
        for t in detail["tasks"]:
            assert t["performance_metrics"]["session_job"] == 2, t  # the warm-up was the first
