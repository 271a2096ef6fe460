"""PSI among three, four and five parties through the coordinator and real nodes, in every
protocol that runs for that count (ECDH_3PC for three; ECDH_NPC and KKRT_NPC for three or more):
the receiver's output equals the plain-Python intersection of every party's table, with
repeated keys in each duplicates mode, an empty intersection and one party's table empty; the
protocols that do not run for a count are refused before launch, naming the counts they do."""

from __future__ import annotations

import csv
import datetime as dt
import os
import random
import signal
import time
from pathlib import Path

import pytest

from .conftest import ARTIFACTS
from .helpers import (
    final,
    peer_driver_stopped,
    running_coordinator,
    session_busy,
    wait_for,
    wait_job,
)

THREE = ["alice", "bob", "carol"]
ALL = ["alice", "bob", "carol", "dave", "erin"]
KEY = {"alice": "uid", "bob": "id", "carol": "cust", "dave": "k", "erin": "key"}


def _write(path: Path, key: str, rows: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["note", key])
        w.writerows([[f"{path.stem}-{i}", k] for i, k in enumerate(rows)])


def _keys(path: Path, key: str) -> list[str]:
    with open(path, newline="") as fh:
        return [r[key] for r in csv.DictReader(fh)]


@pytest.fixture(scope="module")
def tables(federation) -> dict[str, list[str]]:
    """Per party a table `m/<party>.csv` of 1,500–2,500 keys drawn from 3,000 (so every
    pair and the whole set share some, none share all); carol's repeats 40 of its keys."""
    rng = random.Random(24)
    universe = [f"c{i:05d}" for i in range(3000)]
    keys = {p: rng.sample(universe, rng.randint(1500, 2500)) for p in ALL}
    keys["carol"] += rng.sample(keys["carol"], 40)  # repeated keys (visits)
    rng.shuffle(keys["carol"])
    for p, rows in keys.items():
        root = federation.nodes[p].data_root
        _write(root / "m" / f"{p}.csv", KEY[p], rows)
        _write(root / "m" / "empty.csv", KEY[p], [])  # header only: a valid empty set
        _write(root / "m" / "lone.csv", KEY[p], [f"{p}-only-{i}" for i in range(50)])
    return keys


@pytest.fixture(scope="module")
def http(federation):
    with (
        running_coordinator(federation, ARTIFACTS / "multiparty-coord") as coord,
        coord.client(timeout=30) as client,
    ):
        yield client


def _body(parties: list[str], out: str, *, table: dict[str, str] | None = None, **over) -> dict:
    table = table or {}
    return {
        "parties": {
            p: {"keys": [KEY[p]], "input": f"m/{table.get(p, p)}.csv", "output": f"m/out/{out}"}
            for p in parties
        },
        "receiver": parties[1],  # not the first party: the receiver is any rank
        **over,
    }


def _run(http, body: dict, want: str = "SUCCEEDED") -> dict:
    r = http.post("/api/v1/jobs/psi", json=body)
    assert r.status_code == 201, r.text
    job = final(http, r.json()["id"], timeout=400)
    assert job["status"] == want, job["error"]
    return job


def _rows(federation, party: str, out: str) -> list[dict[str, str]]:
    with open(federation.nodes[party].data_root / "m/out" / out, newline="") as fh:
        return list(csv.DictReader(fh))


def _common(tables: dict[str, list[str]], parties: list[str]) -> set[str]:
    return set.intersection(*(set(tables[p]) for p in parties))


@pytest.mark.parametrize("protocol", ["ECDH_3PC", "ECDH_NPC", "KKRT_NPC"])
def test_three_parties_receiver_gets_the_exact_intersection(federation, tables, http, protocol):
    out = f"three-{protocol}.csv"
    job = _run(http, _body(THREE, out, protocol=protocol))
    receiver = THREE[1]
    got = _keys(federation.nodes[receiver].data_root / "m/out" / out, KEY[receiver])
    want = _common(tables, THREE)
    assert 0 < len(want) < min(len(set(tables[p])) for p in THREE)
    assert sorted(got) == sorted(want)  # distinct: one row per common key
    for p in THREE:
        if p != receiver:
            assert not (federation.nodes[p].data_root / "m/out" / out).exists()
    assert job["protocol"] == protocol.replace("_", "_PSI_")
    assert set(job["learns"]) == set(THREE)  # what each learned, as said before launch
    assert job["learns"][receiver].startswith("the intersection")


@pytest.mark.parametrize(("n", "protocol"), [(4, "ECDH_NPC"), (5, "KKRT_NPC")])
def test_four_and_five_parties(federation, tables, http, n, protocol):
    parties = ALL[:n]
    out = f"n{n}-{protocol}.csv"
    _run(http, _body(parties, out, protocol=protocol))
    got = _keys(federation.nodes[parties[1]].data_root / "m/out" / out, KEY[parties[1]])
    want = _common(tables, parties)
    assert len(want) > 0 and sorted(got) == sorted(want)


def test_every_row_of_a_common_key_reaches_every_party_with_broadcast(federation, tables, http):
    """duplicates=join and broadcast_result in ECDH_3PC: each party's output holds every one of
    its own rows whose key all three hold (carol's repeated keys, every time)."""
    out = "join-broadcast.csv"
    _run(http, _body(THREE, out, duplicates="join", broadcast_result=True))
    want = _common(tables, THREE)
    for p in THREE:
        got = [r[KEY[p]] for r in _rows(federation, p, out)]
        assert sorted(got) == sorted(k for k in tables[p] if k in want), p
    assert len(_rows(federation, "carol", out)) > len(want)  # a repeated key's every row


def test_a_refusal_names_the_party_releases_the_others_and_keeps_the_session(
    federation, tables, http
):
    """carol's repeated keys refused (duplicates=refuse) before any SecretFlow work, between
    two jobs of the same three parties: the job FAILS naming carol, alice's and bob's parts end
    as PeerRefused, and the next job runs in the same warm session."""
    before = _run(http, _body(THREE, "before-refusal.csv"))
    job = _run(http, _body(THREE, "refused.csv", duplicates="refuse"), want="FAILED")
    assert job["failed_party"] == "carol"
    assert "DuplicateKeys" in job["error"] and "party carol refused" in job["error"], job["error"]
    ended = wait_for(
        lambda: (
            (d := http.get(f"/api/v1/jobs/{job['id']}").json())
            and all(t["status"] == "FAILURE" for t in d["tasks"])
            and d
        ),
        30,
        "every party's part to end",
    )
    for t in ended["tasks"]:
        assert t["error"]["type"] == ("DuplicateKeys" if t["party"] == "carol" else "PeerRefused")
    after = _run(http, _body(THREE, "after-refusal.csv"))
    assert before["session_id"] and after["session_id"] == before["session_id"]


@pytest.mark.parametrize("protocol", ["ECDH_3PC", "KKRT_NPC"])
def test_no_common_key_and_an_empty_table_give_an_empty_output(federation, tables, http, protocol):
    for table in ("lone", "empty"):
        out = f"{table}-{protocol}.csv"
        _run(http, _body(THREE, out, protocol=protocol, table={"carol": table}))
        assert _rows(federation, THREE[1], out) == []
        header = (federation.nodes[THREE[1]].data_root / "m/out" / out).read_text()
        assert header.splitlines()[0].split(",") == ["note", KEY[THREE[1]]]


def _first_status(d: dict, party: str) -> str:
    return next(
        t["status"]
        for t in d["tasks"]
        if t["execution_id"] == d["execution_id"] and t["party"] == party
    )


def test_cancel_ends_every_partys_part_of_a_three_party_job(federation, tables, http):
    """carol's session driver is held (SIGSTOP) so the job cannot finish; a cancel ends alice's,
    bob's and carol's parts within seconds, and the next job of the three runs right."""
    with peer_driver_stopped(
        federation, http, _body(THREE, "cancel-warm.csv"), party="carol"
    ) as held:
        r = http.post("/api/v1/jobs/psi", json=_body(THREE, "cancelled.csv"))
        job_id = r.json()["id"]
        wait_job(http, job_id, lambda d: d["status"] == "RUNNING", timeout=60)
        wait_for(lambda: session_busy(federation, "carol"), 30, "carol's session to take it")
        t0 = time.monotonic()
        assert http.post(f"/api/v1/jobs/{job_id}/cancel").status_code == 200
        ended = wait_job(
            http,
            job_id,
            lambda d: all(_first_status(d, p) in ("CANCELLED", "FAILURE") for p in THREE),
            timeout=60,
        )
        took = time.monotonic() - t0
    assert ended["status"] == "CANCELLED" and took < 30, (took, ended["party_status"])
    wait_for(
        lambda: not os.path.exists(f"/proc/{held['pid']}") or _zombie(held["pid"]),
        30,
        "carol's driver to end",
    )
    after = _run(http, _body(THREE, "after-cancel.csv"))
    got = _keys(federation.nodes["bob"].data_root / "m/out/after-cancel.csv", KEY["bob"])
    assert sorted(got) == sorted(_common(tables, THREE))
    assert after["session_id"] != held["id"]


def test_a_deadline_ends_every_partys_part_of_a_three_party_job(federation, tables, http):
    """carol's session driver is held, so the job cannot finish: at its deadline the job is
    TIMED_OUT and alice's, bob's and carol's parts end within seconds of it."""
    with peer_driver_stopped(federation, http, _body(THREE, "late-warm.csv"), party="carol"):
        deadline = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=25)
        body = _body(THREE, "late.csv", deadline=deadline.isoformat())
        r = http.post("/api/v1/jobs/psi", json=body)
        assert r.status_code == 201, r.text
        job_id = r.json()["id"]
        wait_job(http, job_id, lambda d: d["status"] == "RUNNING", timeout=60)
        ended = wait_job(
            http,
            job_id,
            lambda d: all(_first_status(d, p) in ("CANCELLED", "FAILURE") for p in THREE),
            timeout=120,
        )
        late = time.time() - deadline.timestamp()
    assert ended["status"] == "TIMED_OUT" and late < 30, (late, _endings(ended))
    assert not (federation.nodes["bob"].data_root / "m/out/late.csv").exists()


def _endings(d: dict) -> list:
    """The job's ending, and per party of the current attempt its last event: when the node
    sent it, its status and error (the assertion message when a deadline ends late)."""
    last = {
        e["party"]: (e["party"], e["status"], e["timestamp"], (e["data"] or {}).get("error"))
        for e in d.get("timeline", [])
        if e["execution_id"] == d["execution_id"]
    }
    return [d["status"], d["error"], *last.values()]


def _zombie(pid: int) -> bool:
    try:
        return open(f"/proc/{pid}/stat").read().split()[2] == "Z"
    except OSError:
        return True


def test_a_party_whose_worker_is_killed_mid_job_is_named_and_the_job_runs_again(
    federation, tables, http
):
    """carol's whole worker is killed during a three-party PSI: the job names carol
    (WorkerLost, retryable) and waits for her (the retry is not spent on her dead queue); once
    her worker is back it SUCCEEDS as attempt 2 with the plain-Python answer."""
    carol = federation.nodes["carol"]
    restarted = False
    try:
        with peer_driver_stopped(federation, http, _body(THREE, "kill-warm.csv"), party="carol"):
            r = http.post("/api/v1/jobs/psi", json=_body(THREE, "killed.csv"))
            job_id = r.json()["id"]
            wait_job(http, job_id, lambda d: d["status"] == "RUNNING", timeout=60)
            wait_for(lambda: session_busy(federation, "carol"), 30, "carol's session to take it")
            os.killpg(carol.procs["worker"].pid, signal.SIGKILL)
        # alice's and bob's SPU links break first (PeerLost, pointing at a peer); carol's own
        # WorkerLost names her once her heartbeat has expired — meanwhile the retry waits for
        # every party that went silent (not sent to a queue no worker reads)
        d = wait_job(
            http, job_id, lambda d: "party carol failed: WorkerLost" in (d["error"] or ""), 90
        )
        assert d["failed_party"] == "carol" and d["attempt"] == 1, d["error"]
        for other in ("alice", "bob"):  # the survivors are ended, not left waiting for carol
            wait_job(
                http, job_id, lambda d, o=other: _first_status(d, o) in ("CANCELLED", "FAILURE"), 60
            )
        carol.procs.pop("worker").wait(10)
        federation.start_worker(carol)
        restarted = True
        federation.wait_workers()
        d = final(http, job_id, timeout=300)
        assert d["status"] == "SUCCEEDED" and d["attempt"] == 2, d["error"]
        got = _keys(federation.nodes["bob"].data_root / "m/out/killed.csv", KEY["bob"])
        assert sorted(got) == sorted(_common(tables, THREE))
    finally:
        if not restarted:  # whatever happened: carol's worker runs for the tests after this
            federation.stop_worker(carol)
            federation.start_worker(carol)
            federation.wait_workers()
