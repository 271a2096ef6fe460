"""PSI among three, four and five parties through the coordinator and real nodes, in every
protocol that runs for that count (ECDH_3PC for three; ECDH_NPC and KKRT_NPC for three or more):
the receiver's output equals the plain-Python intersection of every party's table, with
repeated keys in each duplicates mode, an empty intersection and one party's table empty; the
protocols that do not run for a count are refused before launch, naming the counts they do."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import pytest

from .conftest import ARTIFACTS
from .helpers import final, running_coordinator, wait_for

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
