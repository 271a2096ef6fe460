"""Unbalanced PSI: the offline cache of a big table and the online queries of a small one, through
Partyline and bare, side by side in one run, each answer checked against plain Python.

  floor   two OS processes (python -m bench.floor_ub: rank 0 = alice, the server; rank 1 = bob,
          the client): SPU's UbPsiConfig over a brpc link with mTLS, nothing else — MODE_OFFLINE
          on the server's CSV, then MODE_ONLINE --queries times on one link
  stack   LocalFederation (alice, bob) with a coordinator whose alice+bob session is started
          ahead (COORD_PREWARM): POST /api/v1/jobs/ub_psi_cache (the table check, the key copy,
          the cache, its halves put in place), then --queries × POST /api/v1/jobs/ub_psi
          (submit → SUCCEEDED, the coordinator's times)

Prints: offline stack ÷ floor (goal ≤ 1.2×), online p50 of the stack (goal ≤ 2 s) beside the
bare call's, each party's process-tree RSS with the session up. Nothing is asserted. JSON:
bench/results/ub-psi-<timestamp>.json.

    .venv/bin/python bench/ub_psi.py                                 # 10M server, 10k client
    .venv/bin/python bench/ub_psi.py --server-rows 1000000 --queries 5
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.fanout import close_all  # noqa: E402
from bench.first_job import seconds, tree_rss_mb, wait_warmup  # noqa: E402
from deploy.local.coordinator_proc import CoordinatorProcess  # noqa: E402
from deploy.local.federation import LocalFederation  # noqa: E402
from deploy.local.ports import PortAllocator  # noqa: E402
from deploy.local.standin import read_keys, write_csv  # noqa: E402
from deploy.local.topology import coordinator_passwords, write_topology  # noqa: E402

console = Console(width=150)
TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED", "TIMED_OUT")


def make_data(server_rows: int, client_rows: int, rng: random.Random) -> tuple[list, list]:
    """The server's keys and the client's: half of the client's are the server's."""
    server = [f"k{n}" for n in rng.sample(range(10**11), server_rows)]
    client = rng.sample(server, client_rows // 2) + [
        f"x{i}" for i in range(client_rows - client_rows // 2)
    ]
    rng.shuffle(client)
    return server, client


def floor(base: Path, files: dict[str, Path], certs: Path, args) -> dict:
    """The bare offline call, then the bare online calls, each a pair of processes."""
    out: dict = {}
    for mode in ("offline", "online"):
        ports = PortAllocator().block(2)
        reports, procs = [base / f"{mode}-{r}.json" for r in (0, 1)], []
        t0 = time.monotonic()
        for rank in (0, 1):
            cmd = [
                sys.executable, "-m", "bench.floor_ub", "--rank", str(rank), "--mode", mode,
                "--addresses", ",".join(f"127.0.0.1:{p}" for p in ports), "--certs", str(certs),
                "--cache", str(base / f"cache-{rank}"), "--report", str(reports[rank]),
                "--repeat", str(args.queries),
            ]  # fmt: skip
            if rank == 0 and mode == "offline":
                cmd += ["--input", str(files["server"])]
            if rank == 1 and mode == "online":
                cmd += ["--input", str(files["client"]), "--output", str(base / "answer.csv")]
            procs.append(
                subprocess.Popen(
                    cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                )
            )
        for p in procs:
            p.wait(args.timeout)
        if not all(r.exists() for r in reports):
            out[mode] = {"failed": f"a bare {mode} process ended without its report"}
            return out
        got = [json.loads(r.read_text()) for r in reports]
        out[mode] = {"wall_s": round(time.monotonic() - t0, 2), "parties": got}
    return out


def stack(fed: LocalFederation, base: Path, args, truth: set[str]) -> dict:
    close_all(fed)
    topo = write_topology(fed, base / "topology.yaml", federation="bench")
    env = {
        **coordinator_passwords(fed),
        "COORD_RECONCILE_INTERVAL_S": "1",
        "COORD_PREWARM": "alice+bob",
    }
    proc = CoordinatorProcess(
        base / "coord",
        topology_file=topo,
        certs_dir=fed.certs_dir,
        port=PortAllocator().one(),
        env=env,
    ).start()
    out: dict = {}
    try:
        proc.wait_ready()
        with proc.client(timeout=60) as http:
            out["warmup"] = (wait_warmup(http, args.timeout) or {}).get("status")
            cache = {
                "cache": "big",
                "server": "alice",
                "input": "ub/server.csv",
                "keys": ["uid"],
                "client": "bob",
            }
            out["offline"] = job(http, "ub_psi_cache", cache, args.timeout)
            out["queries"] = []
            for i in range(args.queries):
                q = {"cache": "big", "server": "alice", "client": "bob", "input": "ub/client.csv",
                     "keys": ["uid"], "output": f"ub/out-{i}.csv"}  # fmt: skip
                row = job(http, "ub_psi", q, args.timeout)
                answer = fed.nodes["bob"].data_root / f"ub/out-{i}.csv"
                row["right"] = (
                    row["status"] == "SUCCEEDED" and set(read_keys(answer, "uid")) == truth
                )
                out["queries"].append(row)
            out["rss_mb"] = {p: round(tree_rss_mb(fed, p)) for p in fed.nodes}
    finally:
        proc.stop()
        close_all(fed)
    return out


def job(http, kind: str, body: dict, timeout: float) -> dict:
    r = http.post(f"/api/v1/jobs/{kind}", json=body)
    if r.status_code != 201:
        return {"status": "REFUSED", "error": r.text[:300], "s": None}
    job_id, end = r.json()["id"], time.monotonic() + timeout
    while (d := http.get(f"/api/v1/jobs/{job_id}").json())["status"] not in TERMINAL:
        if time.monotonic() > end:
            break
        time.sleep(0.05)
    return {"id": job_id, "status": d["status"], "s": seconds(d), "error": d.get("error"),
            "phases": phases(d)}  # fmt: skip


def phases(d: dict) -> dict[str, dict]:
    """Per party: when each stage of the last attempt was reported (s after submit) and the
    node's own timings (cluster_init_s, device_init_s, algorithm_s)."""
    import datetime as dt

    t0 = dt.datetime.fromisoformat(d["created_at"])
    last = d["tasks"][-1]["execution_id"] if d.get("tasks") else None
    out: dict[str, dict] = {}
    for e in d.get("timeline", []):
        if e["execution_id"] == last and e.get("stage"):
            at = (dt.datetime.fromisoformat(e["timestamp"]) - t0).total_seconds()
            out.setdefault(e["party"], {})[e["stage"]] = round(at, 2)
    for t in d.get("tasks", []):
        if t["execution_id"] == last and t.get("performance_metrics"):
            m = t["performance_metrics"]
            out.setdefault(t["party"], {})["node"] = {
                k: m[k] for k in ("cluster_init_s", "device_init_s", "algorithm_s") if k in m
            }
    return out


def report(res: dict, args) -> None:
    fl, st = res["floor"], res["stack"]
    f = lambda v: "—" if v is None else f"{v:.2f} s"  # noqa: E731
    if "parties" not in fl.get("offline", {}) or "parties" not in fl.get("online", {}):
        console.print(f"[red]the bare run failed: {fl}")
        return
    off_floor = max(p["call_s"][0] for p in fl["offline"]["parties"])
    off_stack = st["offline"]["s"]
    on_floor = statistics.median(fl["online"]["parties"][1]["call_s"])
    on = [q["s"] for q in st["queries"] if q["status"] == "SUCCEEDED" and q["s"]]
    t = Table(
        title=f"unbalanced PSI: server {args.server_rows:,} rows, client {args.client_rows:,} rows"
    )
    for col in ("measure", "stack", "bare UbPsiConfig", "ratio", "goal"):
        t.add_column(col)
    ratio = f"{off_stack / off_floor:.2f}×" if off_stack else "—"
    t.add_row("offline: the cache", f(off_stack), f(off_floor), ratio, "≤ 1.2×")
    t.add_row(
        f"online: p50 of {len(on)} queries",
        f(statistics.median(on) if on else None),
        f(on_floor),
        "",
        "≤ 2 s",
    )
    console.print(t)
    right = sum(1 for q in st["queries"] if q.get("right"))
    console.print(f"answers right: {right} of {len(st['queries'])}; warm-up {st.get('warmup')}; "
                  f"offline job {st['offline']['status']} {st['offline'].get('error') or ''}")  # fmt: skip
    for party, ph in (st["offline"].get("phases") or {}).items():
        console.print(f"offline job at {party} (s after submit): {ph}")
    console.print(f"peak RSS of the bare processes: offline {[p['maxrss_mb'] for p in fl['offline']['parties']]} MB, "
                  f"online {[p['maxrss_mb'] for p in fl['online']['parties']]} MB; each party's process tree with "
                  f"the session up: {st.get('rss_mb')} MB")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--server-rows", type=int, default=10_000_000)
    ap.add_argument("--client-rows", type=int, default=10_000)
    ap.add_argument("--queries", type=int, default=10)
    ap.add_argument("--timeout", type=float, default=3600.0)
    args = ap.parse_args(argv)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = ROOT / "var" / "bench" / f"ub-psi-{stamp}"
    server, client = make_data(args.server_rows, args.client_rows, random.Random(7))
    truth = set(server) & set(client)
    fed = LocalFederation(
        base / "parties", ["alice", "bob"], log=lambda m: console.print(f"[dim]{m}[/]")
    )
    res: dict = {"args": vars(args)}
    try:
        fed.start()
        files = {
            "server": fed.nodes["alice"].data_root / "ub/server.csv",
            "client": fed.nodes["bob"].data_root / "ub/client.csv",
        }
        write_csv(files["server"], "uid", server)
        write_csv(files["client"], "uid", client)
        del server
        with console.status("floor: bare UbPsiConfig, offline then online"):
            from certs.authority import init_federation

            (base / "floor").mkdir(parents=True, exist_ok=True)
            init_federation(base / "floor-certs", ["alice", "bob"])
            res["floor"] = floor(base / "floor", files, base / "floor-certs", args)
        with console.status("stack: the cache job, then the queries"):
            res["stack"] = stack(fed, base, args, truth)
    finally:
        fed.stop()
    report(res, args)
    out = ROOT / "bench" / "results" / f"ub-psi-{stamp}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    console.print(f"JSON: {out}")
    shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
