"""Plain helpers the e2e modules share: a coordinator process against the federation, the
inputs and request of a PSI through it, and polling — for a job's state or for anything."""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import httpx

from deploy.local.coordinator_proc import CoordinatorProcess
from deploy.local.ports import PortAllocator
from deploy.local.standin import write_csv
from deploy.local.topology import coordinator_passwords, write_topology

TERMINAL = {"SUCCEEDED", "FAILED", "CANCELLED", "TIMED_OUT"}

T = TypeVar("T")


@contextlib.contextmanager
def running_coordinator(
    federation,
    base: Path,
    *,
    fresh: bool = True,
    database_url: str | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[CoordinatorProcess]:
    """A coordinator process (`python -m coordinator serve`) in `base` on the federation's
    topology, reconciling every second; entered once every party's status listener is
    connected, stopped on exit whatever happened. `fresh`: `base` is emptied first (a fresh
    SQLite database every run); `env` adds to or overrides the coordinator's settings."""
    if fresh:
        shutil.rmtree(base, ignore_errors=True)
    topo = write_topology(federation, base / "topology.yaml", federation="e2e")
    proc = CoordinatorProcess(
        base,
        topology_file=topo,
        certs_dir=federation.certs_dir,
        port=PortAllocator().one(),
        database_url=database_url,
        env={
            **coordinator_passwords(federation),
            "COORD_RECONCILE_INTERVAL_S": "1",
            **(env or {}),
        },
    ).start()
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()
        close_all_sessions(federation)


def close_all_sessions(federation) -> None:
    """End every warm session on every node: the next module's coordinator starts afresh, and
    no idle session keeps ports another job may be given."""
    from node.sessions.client import HostUnavailable, close_sessions

    for node in federation.nodes.values():
        with contextlib.suppress(HostUnavailable):
            close_sessions(node.settings())


@contextlib.contextmanager
def peer_driver_stopped(
    federation, http: httpx.Client, warmup: dict, party: str = "bob"
) -> Iterator[dict]:
    """Runs the job `warmup` (so a warm session of its parties is up), then stops (SIGSTOP)
    `party`'s driver of that session: a job of the same parties submitted meanwhile stays
    RUNNING until the driver goes on (SIGCONT when the block ends, if it still lives).
    Yields `party`'s session as `python -m node sessions --json` lists it (id, pid, busy…)."""
    import os
    import signal

    from node.sessions.client import list_sessions

    warm = final(http, http.post("/api/v1/jobs/psi", json=warmup).json()["id"], timeout=300)
    assert warm["status"] == "SUCCEEDED", warm["error"]
    assert warm["session_id"], "the coordinator sent the job cold: no session to stop"
    settings = federation.nodes[party].settings()
    (held,) = [s for s in list_sessions(settings) if s["id"] == warm["session_id"]]
    os.kill(held["pid"], signal.SIGSTOP)
    try:
        yield held
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(held["pid"], signal.SIGCONT)


def session_busy(federation, party: str) -> dict | None:
    """`party`'s session that has a job at the moment, if one has."""
    from node.sessions.client import list_sessions

    return next((s for s in list_sessions(federation.nodes[party].settings()) if s["busy"]), None)


def write_inputs(federation, folder: str, alice: list[str], bob: list[str]) -> set[str]:
    """alice's keys as `<folder>/alice.csv` (column uid), bob's as `<folder>/bob.csv` (column
    id), each in its party's data root; returns the true intersection."""
    write_csv(federation.nodes["alice"].data_root / folder / "alice.csv", "uid", alice)
    write_csv(federation.nodes["bob"].data_root / folder / "bob.csv", "id", bob)
    return set(alice) & set(bob)


def psi_body(alice: str, bob: str, out: str, **over) -> dict:
    """The coordinator's PSI request: alice's table `alice` on column uid against bob's `bob`
    on column id, both writing `out`, the answer to alice, in RR22; `over` adds or replaces
    top-level fields."""
    return {
        "parties": {
            "alice": {"keys": ["uid"], "input": alice, "output": out},
            "bob": {"keys": ["id"], "input": bob, "output": out},
        },
        "receiver": "alice",
        "protocol": "RR22",
        **over,
    }


def get_job(http: httpx.Client, job_id: str) -> dict:
    return http.get(f"/api/v1/jobs/{job_id}").json()


def wait_job(http: httpx.Client, job_id: str, pred, timeout: float = 240.0) -> dict:
    """The job as the API shows it, once `pred` holds for it (polled every 0.3 s)."""
    end = time.monotonic() + timeout
    while True:
        d = get_job(http, job_id)
        if pred(d):
            return d
        assert time.monotonic() < end, f"job {job_id} stuck: {json.dumps(d, indent=1)[:3000]}"
        time.sleep(0.3)


def final(http: httpx.Client, job_id: str, timeout: float = 240.0) -> dict:
    """The job once it has ended (SUCCEEDED, FAILED, CANCELLED or TIMED_OUT)."""
    return wait_job(http, job_id, lambda d: d["status"] in TERMINAL, timeout)


def wait_for(pred: Callable[[], T], timeout: float, what: str) -> T:
    """`pred()`'s first truthy value, polled every 0.3 s for at most `timeout` s."""
    end = time.monotonic() + timeout
    while not (value := pred()):
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.3)
    return value
