"""The tables users really have, through the coordinator and real nodes, in RR22, ECDH and KKRT:
no common key, a header-only table (a valid empty set), repeated keys (distinct / join /
refuse), odd encodings (BOM, CRLF, quoted commas), and tables the node refuses before any
SecretFlow work (ragged, unclosed quote, not UTF-8). Every intersection is compared with the plain-Python answer of the two files."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import pytest

from .conftest import ARTIFACTS
from .helpers import final, psi_body, running_coordinator

PROTOCOLS = ["RR22", "ECDH", "KKRT"]


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _rows(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        return [r for r in csv.reader(fh) if r]


def _table(header: list[str], rows: list[list[str]], *, crlf=False, bom=False) -> bytes:
    import io

    buf = io.StringIO()
    csv.writer(buf, lineterminator="\r\n" if crlf else "\n").writerows([header, *rows])
    return (b"\xef\xbb\xbf" if bom else b"") + buf.getvalue().encode()


# alice: repeated keys (visits), a quoted key with a comma, '007' vs '7'; bob: BOM + CRLF
ALICE = [[f"u{i:04d}", f"v{i}"] for i in range(300)]
ALICE += [["u0200", "again-1"], ["u0200", "again-2"], ["u0299", "again"], ["x,1", "comma"]]
ALICE += [["007", "a"], ["u5000", "alice only"]]
BOB = [[f"n{i}", f"u{i:04d}"] for i in range(150, 400)]
BOB += [["dup", "u0150"], ["dup", "u0299"], ["c", "x,1"], ["s", "7"]]


@pytest.fixture(scope="module")
def tables(federation):
    a_root = federation.nodes["alice"].data_root
    b_root = federation.nodes["bob"].data_root
    _write(a_root / "t/visits.csv", _table(["uid", "note"], ALICE))
    _write(b_root / "t/accounts.csv", _table(["name", "id"], BOB, crlf=True, bom=True))
    _write(a_root / "t/other.csv", _table(["uid", "note"], [[f"a{i}", "x"] for i in range(200)]))
    _write(b_root / "t/unique.csv", _table(["name", "id"], BOB[:250]))  # no repeated key
    _write(b_root / "t/header_only.csv", b"name,id\n\n")  # and a blank line
    _write(a_root / "t/header_only.csv", b"uid,note")  # not even a line end
    _write(b_root / "t/ragged.csv", b"name,id\nn1,u0001\nn2\nn3,u0003\n")
    _write(b_root / "t/unclosed.csv", b'name,id\nn1,u0001\n"n2,u0002\nn3,u0003\n')
    _write(b_root / "t/latin1.csv", b"name,id\nn1,u0001\nn\xe9,u0002\n")
    a_keys = [r[0] for r in ALICE]
    b_keys = [r[1] for r in BOB]
    common = set(a_keys) & set(b_keys)
    assert "x,1" in common and "007" not in common and "u0200" in common
    return {"common": common, "alice_rows": ALICE}


@pytest.fixture(scope="module")
def coordinator(federation, tables):
    base = ARTIFACTS / "e2e-coordinator" / "results"
    with running_coordinator(federation, base, env={"COORD_MAX_ATTEMPTS": "1"}) as proc:
        yield proc


def _run(coordinator, *, alice="t/visits.csv", bob="t/accounts.csv", out, **over) -> dict:
    with coordinator.client() as http:
        r = http.post("/api/v1/jobs/psi", json=psi_body(alice, bob, out, **over))
        assert r.status_code == 201, r.text
        job = r.json()
        d = final(http, job["id"], timeout=300)
        d["result_view"] = http.get(f"/api/v1/jobs/{job['id']}/result").json()
        return d


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_no_common_key_is_a_normal_empty_answer(coordinator, federation, protocol):
    out = f"out/none-{protocol}.csv"
    d = _run(coordinator, alice="t/other.csv", out=out, protocol=protocol)
    assert d["status"] == "SUCCEEDED", d["error"]
    assert d["result_view"]["intersection_count"] == 0
    rows = _rows(federation.nodes["alice"].data_root / out)
    assert rows == [["uid", "note"]]  # the header only


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("empty", ["bob", "alice"], ids=["sender-empty", "receiver-empty"])
def test_a_header_only_table_is_a_valid_empty_set(coordinator, federation, protocol, empty):
    """A table with its header and no rows, at the sender or at the receiver, is an empty set:
    the job SUCCEEDS with 0 rows in every protocol (it is not refused)."""
    out = f"out/empty-{empty}-{protocol}.csv"
    inputs = {"alice": "t/visits.csv", "bob": "t/accounts.csv", empty: "t/header_only.csv"}
    d = _run(coordinator, **inputs, out=out, protocol=protocol)
    assert d["status"] == "SUCCEEDED", d["error"]
    assert d["result_view"]["intersection_count"] == 0
    assert _rows(federation.nodes["alice"].data_root / out) == [["uid", "note"]]
    assert d["result_view"]["parties"]["alice"]["output_path"] == out


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_distinct_gives_one_row_per_common_key(coordinator, federation, tables, protocol):
    out = f"out/distinct-{protocol}.csv"
    d = _run(coordinator, out=out, protocol=protocol, duplicates="distinct")
    assert d["status"] == "SUCCEEDED", d["error"]
    rows = _rows(federation.nodes["alice"].data_root / out)
    assert rows[0] == ["uid", "note"]
    keys = [r[0] for r in rows[1:]]
    assert sorted(keys) == sorted(tables["common"])  # each common key once
    first = {}
    for k, note in tables["alice_rows"]:
        first.setdefault(k, note)
    assert all(first[k] == note for k, note in rows[1:])  # the first row of each key
    assert d["result_view"]["intersection_count"] == len(tables["common"])
    raw = (federation.nodes["alice"].data_root / out).read_bytes()
    assert b"\r" not in raw  # bob's CRLF never leaks into alice's output


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_join_gives_every_row_of_each_common_key(coordinator, federation, tables, protocol):
    out = f"out/join-{protocol}.csv"
    d = _run(coordinator, out=out, protocol=protocol, duplicates="join")
    assert d["status"] == "SUCCEEDED", d["error"]
    rows = _rows(federation.nodes["alice"].data_root / out)
    want = [r for r in tables["alice_rows"] if r[0] in tables["common"]]
    assert rows[1:] == want  # every alice row of a common key, in alice's order
    assert d["result_view"]["intersection_count"] == len(tables["common"])
    alice = d["result_view"]["parties"]["alice"]
    assert alice["output_path"] == out


def test_refuse_names_the_first_repeated_key_and_its_lines(coordinator, federation):
    d = _run(coordinator, bob="t/unique.csv", out="out/refused.csv", duplicates="refuse")
    assert d["status"] == "FAILED"
    assert d["failed_party"] == "alice"
    err = next(t["error"] for t in d["tasks"] if t["party"] == "alice")
    assert err["type"] == "DuplicateKeys"
    assert err["message"].startswith(
        "party alice refused the task: table t/visits.csv repeats key 'u0200' on lines 202, 302, 303"
    )
    assert not (federation.nodes["alice"].data_root / "out/refused.csv").exists()


@pytest.mark.parametrize(
    ("table", "etype", "message"),
    [
        (
            "t/ragged.csv",
            "MalformedCsv",
            "party bob refused the task: table t/ragged.csv line 3: 1 field(s), the header has 2",
        ),
        (
            "t/unclosed.csv",
            "MalformedCsv",
            "party bob refused the task: table t/unclosed.csv line 3: a quoted field is never closed",
        ),
        (
            "t/latin1.csv",
            "MalformedCsv",
            "party bob refused the task: table t/latin1.csv line 3: not UTF-8 (byte 0xe9",
        ),
    ],
    ids=["ragged", "unclosed-quote", "latin-1"],
)
def test_bad_table_is_refused_before_any_secretflow_work(
    coordinator, federation, table, etype, message
):
    t0 = time.monotonic()
    d = _run(coordinator, bob=table, out="out/never.csv")
    took = time.monotonic() - t0
    assert d["status"] == "FAILED" and d["failed_party"] == "bob", d["error"]
    assert d["error"].startswith(f"party bob failed: {etype}: {message}"), d["error"]
    bob = next(t for t in d["tasks"] if t["party"] == "bob")
    assert bob["error"]["type"] == etype
    # no SecretFlow work at bob: its part went from received to finished, nothing between (a
    # warm session's driver may keep a folder with the release of the peers' log, no output)
    stages = [e["stage"] for e in d["timeline"] if e["party"] == "bob"]
    assert set(stages) <= {"task_received", "task_finished"}, stages
    job_dir = federation.nodes["bob"].state_dir / "jobs" / bob["task_request_id"]
    assert {p.name for p in job_dir.glob("*")} <= {"job.log"}
    assert took < 60, f"the refusal took {took:.0f} s"


def test_an_existing_output_is_refused_unless_overwrite_is_asked(coordinator, federation, tables):
    """Naming another dataset (or an earlier answer) as the output fails at once, the file
    untouched; with overwrite: true the job replaces it."""
    root = federation.nodes["alice"].data_root
    before = (root / "t/other.csv").read_bytes()
    d = _run(coordinator, out="t/other.csv")
    assert d["status"] == "FAILED" and d["failed_party"] == "alice", d["error"]
    assert d["error"].startswith(
        "party alice failed: OutputExists: party alice refused the task: output 't/other.csv' "
        "already exists in the data root; choose another name, or ask for overwrite: true"
    ), d["error"]
    assert (root / "t/other.csv").read_bytes() == before

    _write(root / "out/replace-me.csv", b"stale\n")
    d = _run(coordinator, bob="t/unique.csv", out="out/replace-me.csv", overwrite=True)
    assert d["status"] == "SUCCEEDED", d["error"]
    got = {r[0] for r in _rows(root / "out/replace-me.csv")[1:]}
    assert got == {r[0] for r in ALICE} & {r[1] for r in BOB[:250]}
