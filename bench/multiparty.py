"""PSI among three or more parties: each protocol that runs, through Partyline (a warm session)
and bare, side by side in one run, each answer checked against plain Python.

  floor   one OS process per party (python -m bench.floor_psi --parties a,b,c …): the legacy
          bucket PSI (ECDH_PSI_3PC, ECDH_PSI_NPC, KKRT_PSI_NPC) over brpc links with mTLS,
          nothing else; the bare call = the slowest party's bucket_psi once every link is up
          (the processes swap a word first, as the node's session does before each PSI), and
          the bare process = the slowest process, spawn → exit
  stack   LocalFederation of five parties and a coordinator: a small PSI of the same party set
          first (its session starts), then the measured one, submit → SUCCEEDED (the
          coordinator's times); the party set's process trees' RSS with the session up

Rows: every party holds --rows keys, of which half are common to all (the answer) and the
rest its own. The receiver is alice. Prints Partyline ÷ the bare call per protocol and count
(goal for three parties at 1M rows: ≤ 1.3×) and, for 4 and 5 parties, time and memory. Nothing
is asserted.
JSON: bench/results/multiparty-<timestamp>.json.

    .venv/bin/python bench/multiparty.py                          # 3 parties 1M, 4 and 5 at 100k
    .venv/bin/python bench/multiparty.py --rows-3 100000 --protocols ECDH_3PC
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.fanout import close_all  # noqa: E402
from bench.first_job import seconds, tree_rss_mb  # noqa: E402
from deploy.local.coordinator_proc import CoordinatorProcess  # noqa: E402
from deploy.local.federation import LocalFederation  # noqa: E402
from deploy.local.ports import PortAllocator  # noqa: E402
from deploy.local.standin import read_keys, write_csv  # noqa: E402
from deploy.local.topology import coordinator_passwords, write_topology  # noqa: E402

console = Console(width=150)
PARTIES = ["alice", "bob", "carol", "dave", "erin"]
TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED", "TIMED_OUT")


def tables(
    fed: LocalFederation, parties: list[str], rows: int, rng: random.Random
) -> tuple[str, set]:
    """`mp/<rows>/<party>.csv` at each party (column uid); the common half is the answer."""
    folder = f"mp/{rows}-{len(parties)}"
    pool = rng.sample(range(10**11), rows // 2 + len(parties) * (rows - rows // 2))
    common, rest = pool[: rows // 2], pool[rows // 2 :]
    share = rows - rows // 2
    for i, p in enumerate(parties):
        keys = [f"k{n}" for n in common + rest[i * share : (i + 1) * share]]
        rng.shuffle(keys)
        write_csv(fed.nodes[p].data_root / folder / "in.csv", "uid", keys)
    return folder, {f"k{n}" for n in common}


def floor(
    fed, parties: list[str], folder: str, protocol: str, base: Path, certs: Path, timeout: float
) -> dict:
    ports = PortAllocator().block(len(parties))
    addresses = ",".join(f"127.0.0.1:{p}" for p in ports)
    run = base / f"floor-{protocol}-{folder.replace('/', '-')}"
    run.mkdir(parents=True, exist_ok=True)
    procs, t0 = [], time.monotonic()
    for rank, p in enumerate(parties):
        cmd = [
            sys.executable, "-m", "bench.floor_psi", f"--rank={rank}", f"--parties={','.join(parties)}",
            f"--addresses={addresses}", f"--certs={certs}",
            f"--input={fed.nodes[p].data_root / folder / 'in.csv'}", f"--output={run / f'{p}.out.csv'}",
            "--key=uid", f"--protocol={protocol}", "--receiver=alice", f"--report={run / f'{p}.json'}",
        ]  # fmt: skip
        tmp = run / f"{p}.tmp"
        tmp.mkdir(exist_ok=True)
        with open(run / f"{p}.log", "wb") as log:  # SPU's own lines, for a run that fails
            procs.append(subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                          env={"TMPDIR": str(tmp), **_env()}))  # fmt: skip
    try:
        for proc in procs:
            proc.wait(max(1.0, t0 + timeout - time.monotonic()))
    except subprocess.TimeoutExpired:
        console.print(f"  floor: no answer within {timeout:.0f} s, stopped")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    wall = time.monotonic() - t0
    reports = {}
    for p in parties:
        f = run / f"{p}.json"
        reports[p] = json.loads(f.read_text()) if f.exists() else None
    got = (
        set(read_keys(run / "alice.out.csv", "uid")) if (run / "alice.out.csv").exists() else set()
    )
    return {"wall_s": round(wall, 2), "reports": reports, "answer": got}


def _env() -> dict:
    import os

    return dict(os.environ)


def stack(http, fed, parties: list[str], folder: str, protocol: str, timeout: float) -> dict:
    def body(f: str, out: str) -> dict:
        io = {"keys": ["uid"], "input": f"{f}/in.csv", "output": f"{f}/{out}"}
        return {"parties": {p: io for p in parties}, "receiver": "alice", "protocol": protocol}

    small = f"mp/small-{len(parties)}"
    for p in parties:  # the session's first job: a few keys
        write_csv(fed.nodes[p].data_root / small / "in.csv", "uid", ["k1", "k2", p])
    warm = job(http, body(small, f"o-{protocol}.csv"), timeout)
    row = job(http, body(folder, f"o-{protocol}.csv"), timeout)
    row["warmup"] = warm["status"]
    answer = fed.nodes["alice"].data_root / folder / f"o-{protocol}.csv"
    row["answer"] = set(read_keys(answer, "uid")) if answer.exists() else set()
    row["rss_mb"] = {p: round(tree_rss_mb(fed, p)) for p in parties}
    return row


def job(http, body: dict, timeout: float) -> dict:
    r = http.post("/api/v1/jobs/psi", json={**body, "overwrite": True})
    if r.status_code != 201:
        return {"status": "REFUSED", "error": r.text[:300], "s": None}
    job_id, end = r.json()["id"], time.monotonic() + timeout
    while (d := http.get(f"/api/v1/jobs/{job_id}").json())["status"] not in TERMINAL:
        if time.monotonic() > end:
            break
        time.sleep(0.1)
    return {
        "status": d["status"],
        "s": seconds(d),
        "error": d.get("error"),
        "session": d.get("session_id"),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows-3", type=int, default=1_000_000, help="keys per party, three parties")
    ap.add_argument("--rows-n", type=int, default=100_000, help="keys per party, four and five")
    ap.add_argument("--protocols", default="ECDH_3PC,ECDH_NPC,KKRT_NPC", help="for three parties")
    ap.add_argument("--counts", default="4,5", help="more parties, with ECDH_NPC and KKRT_NPC")
    ap.add_argument("--timeout", type=float, default=3600.0)
    args = ap.parse_args(argv)
    # `timeout`/kill -TERM: unwind, so the federation and the coordinator are stopped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = ROOT / "var" / "bench" / f"multiparty-{stamp}"
    plan = [(3, args.rows_3, p) for p in args.protocols.split(",")]
    plan += [
        (int(n), args.rows_n, p)
        for n in args.counts.split(",")
        if n
        for p in ("ECDH_NPC", "KKRT_NPC")
    ]
    fed = LocalFederation(base / "parties", PARTIES, log=lambda m: console.print(f"[dim]{m}[/]"))
    rng, rows_out = random.Random(3), []
    try:
        fed.start()
        from certs.authority import init_federation

        init_federation(base / "floor-certs", PARTIES)
        topo = write_topology(fed, base / "topology.yaml", federation="bench")
        env = {
            **coordinator_passwords(fed),
            "COORD_RECONCILE_INTERVAL_S": "1",
            "COORD_PREWARM": "none",
        }
        proc = CoordinatorProcess(base / "coord", topology_file=topo, certs_dir=fed.certs_dir,
                                  port=PortAllocator().one(), env=env).start()  # fmt: skip
        try:
            proc.wait_ready()
            with proc.client(timeout=60) as http:
                for n, rows, protocol in plan:
                    parties = PARTIES[:n]
                    folder, truth = tables(fed, parties, rows, rng)
                    step = f"{n} parties, {rows:,} rows, {protocol}"
                    console.print(f"{step}: bare …")
                    fl = floor(
                        fed, parties, folder, protocol, base, base / "floor-certs", args.timeout
                    )
                    console.print(f"{step}: bare {fl['wall_s']} s; through Partyline …")
                    st = stack(http, fed, parties, folder, protocol, args.timeout)
                    console.print(f"{step}: Partyline {st['status']} {st['s']} s")
                    close_all(fed)  # the next party set's sessions start from nothing
                    rows_out.append({
                        "parties": n, "rows": rows, "protocol": protocol,
                        "floor_s": fl["wall_s"], "floor_right": fl["answer"] == truth,
                        "floor_call_s": max((r or {}).get("psi_s") or 0 for r in fl["reports"].values()),
                        "floor_rss_mb": {p: (r or {}).get("maxrss_mb") for p, r in fl["reports"].items()},
                        "stack_s": st["s"], "stack_status": st["status"], "stack_right": st["answer"] == truth,
                        "stack_error": st.get("error"), "rss_mb": st["rss_mb"], "warmup": st["warmup"],
                    })  # fmt: skip
        finally:
            proc.stop()
    finally:
        fed.stop()
    t = Table(title="PSI among three or more parties: Partyline (warm session) ÷ the bare call")
    cols = ("parties", "rows", "protocol", "Partyline", "bare call", "ratio", "bare process",
            "right (Partyline/bare)", "RSS per party, MB")  # fmt: skip
    for col in cols:
        t.add_column(col)
    for r in rows_out:
        call = r["floor_call_s"]
        ratio = f"{r['stack_s'] / call:.2f}×" if r["stack_s"] and call else r["stack_status"]
        t.add_row(str(r["parties"]), f"{r['rows']:,}", r["protocol"], f"{r['stack_s'] or 0:.2f} s",
                  f"{call:.2f} s", ratio, f"{r['floor_s']:.1f} s",
                  f"{r['stack_right']}/{r['floor_right']}",
                  " ".join(str(v) for v in r["rss_mb"].values()))  # fmt: skip
    console.print(t)
    console.print(
        "Partyline: submit → SUCCEEDED in a warm session. bare call: spu's bucket_psi in one "
        "process per party (the slowest party), its link up; bare process: spawn → exit, with "
        "the imports and the link. goal: three parties at 1M rows ≤ 1.3× the bare call. "
        "RSS: each party's whole process tree with the session up"
    )
    out = ROOT / "bench" / "results" / f"multiparty-{stamp}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(rows_out, indent=1))
    console.print(f"JSON: {out}")
    shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
