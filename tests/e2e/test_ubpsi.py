"""Unbalanced PSI between real parties (separate Ray heads, mTLS): bob's big table made into a
cache for carol once, then carol's small tables answered against it — each answer the
plain-Python intersection; the cache's halves private to each party's data root; a query
against a table that changed since, or from another client, refused naming why."""

from __future__ import annotations

import csv
import os
import random
import stat
import time
from pathlib import Path

import pytest

from .conftest import ARTIFACTS
from .helpers import final, running_coordinator, wait_for, wait_job

SERVER, CLIENT = "bob", "carol"


def _write(path: Path, header: list[str], rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def tables(federation) -> dict[str, list[str]]:
    """bob: 20,000 accounts (30 repeated); carol: 600 visitors, about half of them bob's, 25
    repeated (visits), in an order of her own."""
    rng = random.Random(26)
    accounts = [f"a{i:06d}" for i in rng.sample(range(100_000), 20_000)]
    server = accounts + rng.sample(accounts, 30)
    rng.shuffle(server)
    visitors = rng.sample(accounts, 300) + [f"x{i:05d}" for i in range(300)]
    visitors += rng.sample(visitors, 25)
    rng.shuffle(visitors)
    bob, carol = federation.nodes[SERVER].data_root, federation.nodes[CLIENT].data_root
    _write(
        bob / "u/accounts.csv", ["acct", "branch"], [[k, f"b{i % 7}"] for i, k in enumerate(server)]
    )
    _write(
        carol / "u/visits.csv", ["visit", "cust"], [[f"v{i}", k] for i, k in enumerate(visitors)]
    )
    _write(carol / "u/empty.csv", ["visit", "cust"], [])
    return {"server": server, "client": visitors}


@pytest.fixture(scope="module")
def http(federation):
    with (
        running_coordinator(federation, ARTIFACTS / "ubpsi-coord") as coord,
        coord.client(timeout=30) as client,
    ):
        yield client


def _cache_body(name: str = "accounts", **over) -> dict:
    return {
        "cache": name,
        "server": SERVER,
        "input": "u/accounts.csv",
        "keys": ["acct"],
        "client": CLIENT,
        **over,
    }


def _query_body(out: str, name: str = "accounts", **over) -> dict:
    return {
        "cache": name,
        "server": SERVER,
        "client": CLIENT,
        "input": "u/visits.csv",
        "keys": ["cust"],
        "output": f"u/out/{out}",
        **over,
    }


def _run(http, kind: str, body: dict, want: str = "SUCCEEDED") -> dict:
    r = http.post(f"/api/v1/jobs/{kind}", json=body)
    assert r.status_code == 201, r.text
    job = final(http, r.json()["id"], timeout=400)
    assert job["status"] == want, job["error"]
    return job


def _result(job: dict, party: str) -> dict:
    return next(
        t["result"]
        for t in job["tasks"]
        if t["party"] == party and t["execution_id"] == job["execution_id"]
    )


def _private(folder: Path) -> None:
    """Only the node's user may open the folder, or read anything in it."""
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    for base, dirs, files in os.walk(folder):
        for d in dirs:
            assert stat.S_IMODE((Path(base) / d).stat().st_mode) == 0o700, d
        for f in files:
            assert stat.S_IMODE((Path(base) / f).stat().st_mode) == 0o600, f


def test_a_cache_then_two_queries_give_the_exact_intersection(federation, tables, http):
    cache = _run(http, "ub_psi_cache", _cache_body())
    server_half = _result(cache, SERVER)
    assert server_half["rows"] == len(set(tables["server"]))
    assert cache["learns"][CLIENT].startswith(f"the number of {SERVER}'s distinct keys")

    listed = http.get("/api/v1/caches").json()
    (entry,) = [c for c in listed if c["cache"] == "accounts"]
    assert (entry["server"], entry["client"], entry["table"]) == (SERVER, CLIENT, "u/accounts.csv")
    assert entry["rows"] == len(set(tables["server"])) and entry["made_by"] == cache["id"]
    assert entry["server_bytes"] > 0 and entry["client_bytes"] > 0 and entry["age_s"] >= 0

    # each half in its party's data root, the node user's only
    for party in (SERVER, CLIENT):
        half = federation.nodes[party].data_root / ".partyline/ubcache" / SERVER / "accounts"
        assert (half / "cache.json").is_file() and (half / "spu").is_dir()
        _private(half)
    assert not list(
        (federation.nodes[SERVER].data_root / ".partyline/work").glob(f"{cache['execution_id']}*")
    )

    want = set(tables["client"]) & set(tables["server"])
    q1 = _run(http, "ub_psi", _query_body("first.csv"))
    rows = _rows(federation.nodes[CLIENT].data_root / "u/out/first.csv")
    assert sorted(r["cust"] for r in rows) == sorted(want)  # distinct: the first row of each
    assert [r["cust"] for r in rows] == [k for k in dict.fromkeys(tables["client"]) if k in want]
    got = _result(q1, CLIENT)
    assert got["intersection_count"] == len(want) and got["server_rows"] == len(
        set(tables["server"])
    )
    assert "intersection_count" not in _result(q1, SERVER)  # the server learns no intersection
    view = http.get(f"/api/v1/jobs/{q1['id']}/result").json()
    assert (view["receiver"], view["intersection_count"]) == (CLIENT, len(want))
    assert not (federation.nodes[SERVER].data_root / "u/out/first.csv").exists()

    q2 = _run(http, "ub_psi", _query_body("second.csv", duplicates="join"))
    rows = _rows(federation.nodes[CLIENT].data_root / "u/out/second.csv")
    assert sorted(r["cust"] for r in rows) == sorted(k for k in tables["client"] if k in want)
    assert q2["session_id"], "the query ran cold"


def test_an_empty_client_table_is_an_empty_answer(federation, tables, http):
    _run(http, "ub_psi", _query_body("empty.csv", input="u/empty.csv"))
    assert _rows(federation.nodes[CLIENT].data_root / "u/out/empty.csv") == []


def test_queries_are_refused_before_launch_for_another_client_or_an_unknown_cache(http, tables):
    r = http.post("/api/v1/jobs/ub_psi", json=_query_body("x.csv", client="alice"))
    assert r.status_code == 422 and "was made for carol, not alice" in r.text, r.text
    r = http.post("/api/v1/jobs/ub_psi", json=_query_body("x.csv", name="nope"))
    assert r.status_code == 422 and "no cache 'nope' of bob" in r.text, r.text
    again = _run(http, "ub_psi_cache", _cache_body(), want="FAILED")
    assert again["error"].startswith("party ") and "OutputExists" in again["error"]
    assert "cache 'accounts' of bob already exists" in again["error"]


def test_a_changed_server_table_refuses_the_next_query_naming_it(federation, tables, http):
    table = federation.nodes[SERVER].data_root / "u/accounts.csv"
    with open(table, "a") as fh:
        fh.write("a999999,b0\n")
    job = _run(http, "ub_psi", _query_body("stale.csv"), want="FAILED")
    assert job["failed_party"] == SERVER, job["error"]
    assert "UbCacheStale" in job["error"], job["error"]
    assert "cache 'accounts' was made from table u/accounts.csv as it was then" in job["error"]
    assert "make the cache again" in job["error"]
    assert not (federation.nodes[CLIENT].data_root / "u/out/stale.csv").exists()

    _run(http, "ub_psi_cache", _cache_body(overwrite=True))  # made again: queries run again
    _run(http, "ub_psi", _query_body("fresh.csv"))
    rows = _rows(federation.nodes[CLIENT].data_root / "u/out/fresh.csv")
    want = set(tables["client"]) & (set(tables["server"]) | {"a999999"})
    assert sorted(r["cust"] for r in rows) == sorted(want)


def test_a_cancelled_cache_job_leaves_no_half_anywhere(federation, tables, http):
    """A cache of 1,000,000 keys cancelled while SPU makes it: both parties' parts end within
    seconds, neither holds a half of it (they are put in place only once SPU succeeded), the
    coordinator lists no such cache, and the caches made before still answer."""
    big = federation.nodes[SERVER].data_root / "u/big.csv"
    _write(big, ["acct"], [[f"z{i:07d}"] for i in range(1_000_000)])
    r = http.post("/api/v1/jobs/ub_psi_cache", json=_cache_body("big", input="u/big.csv"))
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    wait_job(
        http,
        job_id,
        lambda d: all(_task(d, p).get("stage") == "algorithm_running" for p in (SERVER, CLIENT)),
        timeout=240,
    )
    t0 = time.monotonic()
    assert http.post(f"/api/v1/jobs/{job_id}/cancel").status_code == 200
    ended = wait_job(
        http,
        job_id,
        lambda d: all(
            _task(d, p).get("status") in ("CANCELLED", "FAILURE") for p in (SERVER, CLIENT)
        ),
        timeout=60,
    )
    took = time.monotonic() - t0
    assert ended["status"] == "CANCELLED" and took < 30, (took, ended["party_status"])
    for party in (SERVER, CLIENT):
        assert not (
            federation.nodes[party].data_root / ".partyline/ubcache" / SERVER / "big"
        ).exists()
    assert "big" not in {c["cache"] for c in http.get("/api/v1/caches").json()}
    for party in (SERVER, CLIENT):  # its scratch (the key copy, the half being made) removed
        work = federation.nodes[party].data_root / ".partyline/work"
        wait_for(
            lambda w=work: not list(w.glob(f"{ended['execution_id']}*")),
            30,
            f"{party}'s work folder of the cancelled job to go",
        )
    _run(http, "ub_psi", _query_body("after-cancel.csv"))


def _task(d: dict, party: str) -> dict:
    """`party`'s task of the job's current attempt ({} before it is recorded)."""
    mine = [t for t in d["tasks"] if t["party"] == party and t["execution_id"] == d["execution_id"]]
    return mine[0] if mine else {}
