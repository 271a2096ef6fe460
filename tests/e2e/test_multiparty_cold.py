"""PSI among three parties run cold (COORD_WARM_SESSIONS=false: a job process per party, its SPU
link made for the job): each protocol gives the plain-Python answer. A bucket PSI of three or
more parties connects its link's mesh a second time as it starts; started the moment the link is
up it hung in most runs (bench/floor_psi.py): the runtimes swap the attempt's id first, cold as
warm (node/jobtypes/spucall.py)."""

from __future__ import annotations

import csv
import random

import pytest

from .conftest import ARTIFACTS
from .helpers import final, running_coordinator

THREE = ["alice", "bob", "carol"]


@pytest.fixture(scope="module")
def tables(federation) -> dict[str, set[str]]:
    rng = random.Random(25)
    universe = [f"u{i:04d}" for i in range(1200)]
    keys = {p: rng.sample(universe, 700) for p in THREE}
    for p, rows in keys.items():
        path = federation.nodes[p].data_root / "mc" / "in.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="") as fh:
            csv.writer(fh).writerows([["uid"], *([k] for k in rows)])
    return {p: set(rows) for p, rows in keys.items()}


@pytest.fixture(scope="module")
def http(federation):
    env = {"COORD_WARM_SESSIONS": "false"}
    with (
        running_coordinator(federation, ARTIFACTS / "multiparty-cold", env=env) as coord,
        coord.client(timeout=30) as client,
    ):
        yield client


@pytest.mark.parametrize("protocol", ["ECDH_3PC", "ECDH_NPC", "KKRT_NPC"])
def test_a_cold_three_party_psi_gives_the_exact_intersection(federation, tables, http, protocol):
    out = f"mc/out-{protocol}.csv"
    io = {"keys": ["uid"], "input": "mc/in.csv", "output": out}
    body = {"parties": {p: io for p in THREE}, "receiver": "carol", "protocol": protocol}
    r = http.post("/api/v1/jobs/psi", json={**body, "overwrite": True})
    assert r.status_code == 201, r.text
    job = final(http, r.json()["id"], timeout=300)
    assert job["status"] == "SUCCEEDED", job["error"]
    assert job["session_id"] is None and job["attempt"] == 1  # cold, and right the first time
    with open(federation.nodes["carol"].data_root / out, newline="") as fh:
        got = [row["uid"] for row in csv.DictReader(fh)]
    assert sorted(got) == sorted(set.intersection(*tables.values()))
