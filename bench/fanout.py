"""Fan-out benchmark: submit a PSI to the coordinator → every party RUNNING, with warm nodes.

Real parts: a local federation (per party redis-server with TLS, Ray head, Celery worker with
its pre-started job process), the coordinator as its own process (`python -m coordinator
serve`, SQLite), signed tasks. For each of N jobs (run one after another, each to the end) it
takes from the job's timeline:

  submit→sent      the job's dispatched_at − created_at (validation, broker checks, DB, send)
  submit→RECEIVED  the last party's RECEIVED event − created_at (queue → worker)
  submit→RUNNING   the last party's RUNNING event − created_at (the number of the goal)
  submit→done      finished_at − created_at (the whole 1,000-row PSI, for scale)

and prints p50/p99 (with N=10, p99 is the maximum). Nothing is asserted.
    python bench/fanout.py [--jobs 10] [--rows 1000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deploy.local.coordinator_proc import CoordinatorProcess  # noqa: E402
from deploy.local.driver import write_csv  # noqa: E402
from deploy.local.federation import LocalFederation  # noqa: E402
from deploy.local.ports import PortAllocator  # noqa: E402
from deploy.local.topology import coordinator_passwords, write_topology  # noqa: E402

console = Console(width=150)


def _t(s: str) -> dt.datetime:
    t = dt.datetime.fromisoformat(s.replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--jobs", type=int, default=10)
    ap.add_argument("--rows", type=int, default=1000)
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="partyline-fanout-"))
    fed = LocalFederation(
        base / "parties", ["alice", "bob"], log=lambda m: console.print(f"[dim]{m}[/]")
    )
    coord = None
    rows = []
    try:
        fed.start()
        for p, col in (("alice", "uid"), ("bob", "id")):
            write_csv(fed.nodes[p].data_root / "in.csv", col, [f"k{i}" for i in range(args.rows)])
        topo = write_topology(fed, base / "topology.yaml", federation="bench")
        coord = CoordinatorProcess(
            base / "coordinator",
            topology_file=topo,
            certs_dir=fed.certs_dir,
            port=PortAllocator().one(),
            env=coordinator_passwords(fed),
        ).start()
        coord.wait_ready()
        body = {
            "parties": {
                "alice": {"keys": ["uid"], "input": "in.csv", "output": "out/f.csv"},
                "bob": {"keys": ["id"], "input": "in.csv", "output": "out/f.csv"},
            },
            "receiver": "alice",
        }
        with coord.client() as http:
            for i in range(args.jobs):
                job = http.post("/api/v1/jobs/psi", json=body).json()
                while True:
                    d = http.get(f"/api/v1/jobs/{job['id']}").json()
                    if d["status"] in ("SUCCEEDED", "FAILED", "CANCELLED", "TIMED_OUT"):
                        break
                    time.sleep(0.2)
                created = _t(d["created_at"])
                ev = [e for e in d["timeline"] if e["execution_id"] == d["execution_id"]]

                def last(status: str, ev=ev, created=created) -> float:
                    ts = [
                        (_t(e["timestamp"]) - created).total_seconds()
                        for e in ev
                        if e["status"] == status
                    ]
                    return max(ts) if len(ts) == 2 else float("nan")

                row = {
                    "status": d["status"],
                    "sent": (_t(d["dispatched_at"]) - created).total_seconds(),
                    "received": last("RECEIVED"),
                    "running": last("RUNNING"),
                    "done": (_t(d["finished_at"]) - created).total_seconds(),
                }
                rows.append(row)
                console.print(f"job {i + 1}/{args.jobs}: {json.dumps(row)}")
    finally:
        if coord is not None:
            coord.stop()
        fed.stop()
    ok = [r for r in rows if r["status"] == "SUCCEEDED"]
    table = Table(
        title=f"fan-out, {len(ok)}/{len(rows)} jobs succeeded (goal: submit→RUNNING p50 < 0.5 s)"
    )
    for c in ("", "p50 s", "p99 s", "mean s"):
        table.add_column(c, justify="right")
    for key, label in (
        ("sent", "submit→sent"),
        ("received", "submit→RECEIVED (all)"),
        ("running", "submit→RUNNING (all)"),
        ("done", "submit→SUCCEEDED"),
    ):
        xs = [r[key] for r in ok]
        if xs:
            table.add_row(
                label, f"{pct(xs, 0.5):.3f}", f"{pct(xs, 0.99):.3f}", f"{statistics.mean(xs):.3f}"
            )
    console.print(table)
    out = ROOT / "bench" / "results" / f"fanout-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(rows, indent=1))
    console.print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
