"""What a user waits for the first job: the first PSI after the federation is ready, with the
party pair's session started ahead (COORD_PREWARM) and without, and the first PSI after a job
refused before any work — side by side with the warm p50, in one run, each answer checked.

One LocalFederation (alice, bob) of full nodes; per mode a coordinator process of its own and
every node's sessions closed first:

  prewarm   COORD_PREWARM=alice+bob: the coordinator sends a warm-up as soon as both parties
            are ready; measured: ready → warm-up SUCCEEDED, then the first PSI (--rows keys per
            party) submit → SUCCEEDED, then --jobs more (the warm p50), then a job bob refuses
            (a key column it does not have) and the job right after it
  none      COORD_PREWARM=none: the first PSI starts SecretFlow itself (the time before)

Times are the coordinator's (finished_at − created_at). Memory: each party's whole process tree
(Redis, Ray head and its workers, Celery workers, session host and drivers, probe) RSS before the
warm-up and once its session is up — the cost of one warm party pair. Nothing is asserted.
JSON: bench/results/first-job-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import shutil
import statistics
import sys
import time
from pathlib import Path

import psutil
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.fanout import body, check, close_all, write_pair  # noqa: E402
from deploy.local.coordinator_proc import CoordinatorProcess  # noqa: E402
from deploy.local.federation import LocalFederation  # noqa: E402
from deploy.local.ports import PortAllocator  # noqa: E402
from deploy.local.topology import coordinator_passwords, write_topology  # noqa: E402

console = Console(width=150)


def seconds(d: dict) -> float | None:
    import datetime as dt

    if not d.get("finished_at"):
        return None
    t = lambda s: dt.datetime.fromisoformat(s)  # noqa: E731
    return (t(d["finished_at"]) - t(d["created_at"])).total_seconds()


def tree_rss_mb(fed: LocalFederation, party: str) -> float:
    """RSS of every process of the party: its spawned processes and their descendants, and the
    Ray head's processes (started detached: found by the party's Ray temp dir in their args)."""
    node = fed.nodes[party]
    pids: set[int] = set()
    for proc in node.procs.values():
        with contextlib.suppress(psutil.Error):
            p = psutil.Process(proc.pid)
            pids |= {p.pid, *(c.pid for c in p.children(recursive=True))}
    marker = node.env()["NODE_RAY_TEMP_DIR"]
    for p in psutil.process_iter(["pid", "cmdline"]):
        if any(marker in a for a in (p.info["cmdline"] or [])):
            pids |= {p.pid, *(c.pid for c in p.children(recursive=True))}
    total = 0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            total += psutil.Process(pid).memory_info().rss
    return total / 2**20


def wait_warmup(http, timeout: float) -> dict | None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        items = http.get("/api/v1/jobs").json()["items"]
        warm = [j for j in items if j["kind"] == "warmup"]
        if warm and warm[0]["status"] in ("SUCCEEDED", "FAILED", "CANCELLED", "TIMED_OUT"):
            return warm[0]
        time.sleep(0.2)
    return None


def psi(http, fed, folder: str, args, rng, *, refuse: bool = False) -> dict:
    truth = write_pair(fed, folder, args.rows, rng)
    b = body(folder)
    if refuse:
        b["parties"]["bob"]["keys"] = ["no_such_column"]
    r = http.post("/api/v1/jobs/psi", json=b)
    job_id, end = r.json()["id"], time.monotonic() + args.timeout
    while (d := http.get(f"/api/v1/jobs/{job_id}").json())["status"] not in (
        "SUCCEEDED",
        "FAILED",
        "CANCELLED",
        "TIMED_OUT",
    ) and time.monotonic() < end:
        time.sleep(0.1)
    row = {"id": d["id"], "status": d["status"], "s": seconds(d), "session": d.get("session_id")}
    row["check"] = None if refuse else check(fed, folder, truth, {**d, "status": d["status"]})
    return row


def run_mode(fed, base: Path, mode: str, args, rng) -> dict:
    close_all(fed)
    topo = write_topology(fed, base / f"{mode}-topology.yaml", federation="bench")
    env = {
        **coordinator_passwords(fed),
        "COORD_RECONCILE_INTERVAL_S": "1",
        "COORD_PREWARM": "alice+bob" if mode == "prewarm" else "none",
    }
    out: dict = {"mode": mode}
    rss_before = {p: tree_rss_mb(fed, p) for p in fed.nodes}
    proc = CoordinatorProcess(
        base / f"coord-{mode}", topology_file=topo, certs_dir=fed.certs_dir,
        port=PortAllocator().one(), env=env,
    ).start()  # fmt: skip
    try:
        t0 = time.monotonic()
        proc.wait_ready()
        with proc.client(timeout=30) as http:
            if mode == "prewarm":
                w = wait_warmup(http, args.timeout)
                out["warmup_s"] = round(time.monotonic() - t0, 2)
                out["warmup_status"] = w and w["status"]
                out["rss_mb"] = {
                    p: (round(rss_before[p]), round(tree_rss_mb(fed, p))) for p in fed.nodes
                }
            out["first"] = psi(http, fed, f"{mode}/first", args, rng)
            if mode == "prewarm":
                out["warm"] = [psi(http, fed, f"{mode}/w{i}", args, rng) for i in range(args.jobs)]
                out["refused"] = psi(http, fed, f"{mode}/refused", args, rng, refuse=True)
                out["after_refused"] = psi(http, fed, f"{mode}/after", args, rng)
    finally:
        proc.stop()
        close_all(fed)
    return out


def report(res: dict[str, dict]) -> None:
    pre, none = res.get("prewarm", {}), res.get("none", {})
    warm = [r["s"] for r in pre.get("warm", []) if r["status"] == "SUCCEEDED" and r["s"]]
    p50 = statistics.median(warm) if warm else None
    f = lambda v: "—" if v is None else f"{v:.2f} s"  # noqa: E731
    t = Table(title="the first job a user waits for (submit → SUCCEEDED)")
    for col in ("measure", "time", "goal", "answer / session"):
        t.add_column(col)

    def row(label: str, r: dict | None, goal: str) -> None:
        r = r or {}
        verdict = r.get("check") or ("ok" if r.get("status") == "SUCCEEDED" else r.get("status"))
        t.add_row(label, f(r.get("s")), goal, f"{verdict}, {r.get('session') or 'cold'}")

    t.add_row("warm-up (coordinator ready → session up)", f(pre.get("warmup_s")), "—",
              str(pre.get("warmup_status")))  # fmt: skip
    row("first PSI, pair started ahead (COORD_PREWARM)", pre.get("first"), "≤ 3 s")
    row("first PSI, no prewarm (starts SecretFlow)", none.get("first"), "(before)")
    t.add_row(f"warm p50 over {len(warm)} jobs", f(p50), "≈ 0.3 s", "")
    row("a job refused by bob (missing column)", pre.get("refused"), "at once")
    row("first PSI after the refused job", pre.get("after_refused"), "= warm p50")
    console.print(t)
    for p, (before, after) in (pre.get("rss_mb") or {}).items():
        console.print(f"{p}: RSS of its processes {before} MB before the warm-up, {after} MB "
                      f"with the session up (+{after - before} MB)")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", type=int, default=1000, help="keys per party (default 1,000)")
    ap.add_argument("--jobs", type=int, default=10, help="warm jobs for the p50 (default 10)")
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--modes", default="prewarm,none")
    args = ap.parse_args(argv)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = ROOT / "var" / "bench" / f"first-job-{stamp}"
    fed = LocalFederation(
        base / "parties", ["alice", "bob"], log=lambda m: console.print(f"[dim]{m}[/]")
    )
    res: dict[str, dict] = {}
    rng = random.Random(1)
    try:
        fed.start()
        for mode in args.modes.split(","):
            res[mode] = run_mode(fed, base, mode, args, rng)
    finally:
        fed.stop()
    report(res)
    out = ROOT / "bench" / "results" / f"first-job-{stamp}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    console.print(f"JSON: {out}")
    shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
