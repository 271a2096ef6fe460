"""Back-to-back PSI jobs through the coordinator: warm federation sessions vs. a job process per
job (cold), side by side in one run, each job's answer checked, each job's time split by stage."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import random
import shutil
import statistics
import sys
import threading
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deploy.local.coordinator_proc import CoordinatorProcess  # noqa: E402
from deploy.local.federation import LocalFederation  # noqa: E402
from deploy.local.standin import read_keys, write_csv  # noqa: E402
from deploy.local.topology import coordinator_passwords, write_topology  # noqa: E402
from node.sessions.client import HostUnavailable, close_sessions  # noqa: E402

EPILOG = """\
One LocalFederation (alice, bob; --carol: an idle, registered third) of full nodes. Per mode
(--modes) a coordinator process of its own (COORD_WARM_SESSIONS=true: warm, false: cold) runs
one unmeasured warm-up job, then --jobs measured jobs, each to its end before the next; the
nodes' warm sessions are closed before and after each mode. Every job has fresh random inputs
(--rows keys per party, half of alice's in bob's table); it is right if it SUCCEEDED and alice's
output (column uid) is the plain-Python intersection, else CHECK FAILED. No time is asserted.

Summary (per mode; cold/warm is the ratio of the two columns):
  p50, p90 submit→SUCCEEDED  the job's finished_at − created_at, both coordinator times, over
                             the measured jobs that succeeded (p50: median; p90: nearest rank)
  jobs per minute            jobs that succeeded ÷ wall time of the measured loop × 60; the wall
                             is the client's, from the first submit to seeing the last job end
                             (it includes the HTTP polling: every --poll s)
  degradation                p50 of the last k jobs ÷ p50 of the first k, k = min(5, jobs // 2)
  session start              warm only: the warm-up job's submit→SUCCEEDED; it starts the session
                             (sf.init, RayFed proxies, SPU runtime) that the measured jobs reuse
  in a warm session          measured jobs whose API view names a session_id (warm: should be
                             all; a job that found the session busy runs cold)

Stage breakdown: medians over the measured jobs that succeeded, per mode (medians of parts do
not add up to the median of the whole). Upper part, from the job's timeline (status events
stamped by each node, same machine clock as the coordinator); "all" = the later of the two
parties, and each row is the step from the row above, so per job they add up to the total:
  submit → sent        dispatched_at − created_at (validation, broker checks, DB, signed send)
  queue                → RECEIVED: the task waited in the party's Redis queue for the worker
  preflight            → RUNNING: params check, replay claim, input table check
  job process+sf.init  → stage cluster_initialized: hand-off to the spare job process or the
                       session driver, then sf.init (Ray connect, RayFed proxies, wait for peer)
  SPU devices          → stage devices_ready: sf.PYU/sf.SPU created (the SPU actors start async)
  PSI                  → stage algorithm_done: the PSI, incl. the SPU link connect of a new SPU
  result reported      → SUCCESS: result back from the job process, SUCCESS event written
  coordinator applies  → finished_at: the coordinator reads the events, job SUCCEEDED
Lower part, the node's own timings (performance_metrics of each party's SUCCESS; the larger of
the two parties per job): input_check_s, cluster_init_s (sf.init; 0 for a reused session),
device_init_s, algorithm_s, total_s (their sum); hand-off = (cluster_initialized event −
RUNNING event) − cluster_init_s; node overhead = (SUCCESS event − RECEIVED event) − total_s.

JSON: bench/results/fanout-<timestamp>.json: every job (milestones, per-party offsets and
metrics, check), the warm-up jobs, the summary, load average at start and end, cores.
Scratch (federation dir with job logs, coordinator DBs/logs) goes to var/bench/fanout-<ts>/,
removed at the end unless --keep, a failed check or an abort. Exit status: 0 all jobs right,
1 a check failed, 2 the run was aborted (what ran is still printed and written).
"""

TERMINAL = {"SUCCEEDED", "FAILED", "CANCELLED", "TIMED_OUT"}
# milestones in order: (key, label, event field, value); a party's first event of that value
MILESTONES = [
    ("sent", "submit → sent", None, None),
    ("received", "queue (→ RECEIVED, all)", "status", "RECEIVED"),
    ("running", "preflight (→ RUNNING, all)", "status", "RUNNING"),
    ("cluster", "job process + sf.init (→ cluster_initialized)", "stage", "cluster_initialized"),
    ("devices", "SPU devices (→ devices_ready)", "stage", "devices_ready"),
    ("psi", "PSI (→ algorithm_done)", "stage", "algorithm_done"),
    ("success", "result reported (→ SUCCESS, all)", "status", "SUCCESS"),
    ("done", "coordinator applies (→ SUCCEEDED)", None, None),
]
EVENTS = {key: (field, value) for key, _label, field, value in MILESTONES if field}
METRICS = ["input_check_s", "cluster_init_s", "device_init_s", "algorithm_s", "total_s"]
NODE_ROWS = [*METRICS, "handoff_s", "node_overhead_s"]
GOALS = {"p50": "≤ 3 s", "jobs_per_min": "≥ 20", "degradation": "≤ 1.1"}
console = Console(width=150)


def _t(s: str) -> dt.datetime:  # the API's times carry their zone (schemas.UtcDateTime)
    return dt.datetime.fromisoformat(s)


def pct(xs: list[float], q: float) -> float | None:  # nearest rank
    return sorted(xs)[round(q * (len(xs) - 1))] if xs else None


def med(xs: list[float | None]) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def write_pair(fed: LocalFederation, folder: str, rows: int, rng: random.Random) -> list[str]:
    """Fresh random keys: alice `rows`, bob `rows` of which rows // 2 are alice's."""
    pool = [f"k{n}" for n in rng.sample(range(10**9), 2 * rows - rows // 2)]
    alice, bob = pool[:rows], pool[: rows // 2] + pool[rows:]
    rng.shuffle(bob)
    write_csv(fed.nodes["alice"].data_root / folder / "alice.csv", "uid", alice)
    write_csv(fed.nodes["bob"].data_root / folder / "bob.csv", "id", bob)
    return sorted(set(alice) & set(bob))


def body(f: str) -> dict:
    io = lambda k, csv: {"keys": [k], "input": f"{f}/{csv}", "output": f"{f}/o.csv"}  # noqa: E731
    parties = {"alice": io("uid", "alice.csv"), "bob": io("id", "bob.csv")}
    return {"parties": parties, "receiver": "alice", "protocol": "RR22"}


def run_job(http, folder: str, args) -> dict:
    """Submit one job and poll it to its end; the API's last view of it."""
    r = http.post("/api/v1/jobs/psi", json=body(folder))
    if r.status_code != 201:
        return {"status": "REFUSED", "error": r.text[:500]}
    job_id, end = r.json()["id"], time.monotonic() + args.timeout
    while True:
        d = http.get(f"/api/v1/jobs/{job_id}").json()
        if d["status"] in TERMINAL:
            return d
        if time.monotonic() > end:
            http.post(f"/api/v1/jobs/{job_id}/cancel")
            return {**d, "error": f"benchmark gave up after {args.timeout:.0f} s (cancelled)"}
        time.sleep(args.poll)


def measure(d: dict) -> dict:
    """Milestones (s after submit), per-party offsets and node timings of one finished job."""
    row: dict = {k: d.get(k) for k in ("id", "status", "error", "attempt", "session_id")}
    if "created_at" not in d:
        return row
    created = _t(d["created_at"])

    def off(ts: str | None) -> float | None:
        return round((_t(ts) - created).total_seconds(), 4) if ts else None

    ev = [e for e in d.get("timeline", []) if e["execution_id"] == d.get("execution_id")]
    results = ((d.get("result") or {}).get("parties")) or {}
    parties = {}
    for p in d["parties"]:
        mine = [e for e in ev if e["party"] == p]
        pr = {
            k: min((off(e["timestamp"]) for e in mine if e[field] == val), default=None)
            for k, (field, val) in EVENTS.items()
        }
        succ = [e["data"] for e in mine if e["status"] == "SUCCESS"] + [{}]  # its event's copy
        pm = (results.get(p) or {}).get("performance_metrics") or succ[0].get("performance_metrics")
        pm = pm or {}
        pr.update({k: pm.get(k) for k in [*METRICS, "session_id", "session_job"]})
        if None not in (pr["cluster"], pr["running"], pr["cluster_init_s"]):
            pr["handoff_s"] = round(pr["cluster"] - pr["running"] - pr["cluster_init_s"], 4)
        if None not in (pr["success"], pr["received"], pr["total_s"]):
            pr["node_overhead_s"] = round(pr["success"] - pr["received"] - pr["total_s"], 4)
        parties[p] = pr
    row["parties"] = parties
    row.update(sent=off(d.get("dispatched_at")), done=off(d.get("finished_at")))
    for k in EVENTS:
        vals = [pr[k] for pr in parties.values()]
        row[k] = None if None in vals else max(vals)
    row["session_job"] = max((pr.get("session_job") or 0 for pr in parties.values()), default=0)
    return row


def check(fed: LocalFederation, folder: str, truth: list[str], row: dict) -> str | None:
    """Why the job's answer is wrong (None: right)."""
    if row["status"] != "SUCCEEDED":
        return f"status {row['status']}: {row.get('error')}"
    try:
        got = sorted(read_keys(fed.nodes["alice"].data_root / folder / "o.csv", "uid"))
    except OSError as exc:
        return f"no output: {exc}"
    return None if got == truth else f"{len(got)} keys, expected {len(truth)} (or other keys)"


def close_all(fed: LocalFederation) -> list[str]:
    ended: list[str] = []
    for node in fed.nodes.values():
        with contextlib.suppress(HostUnavailable, OSError):  # no host: no sessions
            ended += close_sessions(node.settings())
    return ended


def job_line(mode: str, label: str, row: dict, bad: str | None) -> str:
    f = lambda k: "  —  " if row.get(k) is None else f"{row[k]:.3f}"  # noqa: E731
    color = "green" if row["status"] == "SUCCEEDED" else "red"
    ses = f"session job #{row['session_job']}" if row.get("session_job") else "cold job"
    verdict = f"[bold red]CHECK FAILED[/]: {bad}" if bad else "[green]ok[/]"
    return (
        f"{mode:<4} {label:>7}  [{color}]{row['status']}[/]  sent {f('sent')}  "
        f"RECEIVED {f('received')}  RUNNING {f('running')}  PSI done {f('psi')}  "
        f"SUCCEEDED {f('done')} s  {ses}  {verdict}"
    )


def run_mode(fed: LocalFederation, topo: Path, base: Path, mode: str, args, out: dict) -> None:
    """Run the mode's warm-up and measured jobs; everything goes into `out` as it comes."""
    console.print(f"[dim]{mode}: closed {len(close_all(fed))} warm session(s) on the nodes[/]")
    rng = random.Random(f"{args.seed}/{mode}")
    labels = ["warm-up", *[f"{i + 1}/{args.jobs}" for i in range(args.jobs)]]
    folders = {lb: f"fanout/{mode}/{lb.replace('/', '-')}" for lb in labels}
    truths = {lb: write_pair(fed, folders[lb], args.rows, rng) for lb in labels}
    out["loadavg_start"] = [round(x, 2) for x in os.getloadavg()]
    coord = CoordinatorProcess(
        base / f"coordinator-{mode}",
        topology_file=topo,
        certs_dir=fed.certs_dir,
        port=fed.alloc.one(),
        env={
            **coordinator_passwords(fed),
            "COORD_WARM_SESSIONS": str(mode in ("warm", "hostile")).lower(),
        },
    )
    rss: list[float] = []

    def one(http, lb: str) -> dict:
        row = {**measure(run_job(http, folders[lb], args)), "label": lb}
        row["check"] = check(fed, folders[lb], truths[lb], row)
        console.print(job_line(mode, lb, row, row["check"]))
        rss.append(_rss_mb(coord))
        return row

    stop = threading.Event()
    flood = _misbehave(fed, stop, out) if mode == "hostile" else None
    try:
        coord.start()
        coord.wait_ready()
        with coord.client() as http:
            out["warmup"] = one(http, labels[0])
            t0 = time.monotonic()
            for lb in labels[1:]:
                out["rows"].append(one(http, lb))
            out["wall_s"] = round(time.monotonic() - t0, 3)
            out["refused"] = http.get("/healthz").json().get("refused", {})
    finally:
        stop.set()
        if flood is not None:
            flood.join(10)
        out["coord_rss_mb_max"] = max(rss) if rss else None
        coord.stop()
        close_all(fed)
        out["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]


def _rss_mb(coord: CoordinatorProcess) -> float:
    """The coordinator process's resident memory now, MB."""
    import psutil

    assert coord.proc is not None
    return round(psutil.Process(coord.proc.pid).memory_info().rss / 2**20, 1)


HOSTILE_ENTRIES = [
    {"event": b"{not json"},
    {"event": b"\xff\xfe not UTF-8"},
    {"event": b"x" * 300_000},  # over the entry bound
    {"event": json.dumps({"seq": 2**63, "party": "carol"}).encode()},  # out of range
    {
        "event": json.dumps(
            {
                "event_id": "f",
                "seq": 5,
                "task_request_id": "exe-1.alice",
                "task_id": "job-1",
                "subtask_id": "psi",
                "execution_id": "exe-1",
                "party": "alice",
                "status": "FAILURE",
            }
        ).encode()
    },  # forged
]


def _misbehave(fed: LocalFederation, stop: threading.Event, out: dict) -> threading.Thread:
    """carol, while the jobs run: hostile entries into its stream (about 500 a second, a 2 MB
    one every 50) and 1 MB values under result keys."""
    carol = fed.nodes["carol"].redis()

    def run() -> None:
        i = 0
        while not stop.is_set():
            carol.xadd("task_status_stream", HOSTILE_ENTRIES[i % len(HOSTILE_ENTRIES)],
                       maxlen=5000, approximate=True)  # fmt: skip
            if i % 50 == 0:
                carol.set(f"celery-task-meta-flood-{i % 500}", b"r" * 1_000_000, ex=120)
                carol.xadd("task_status_stream", {"event": b"z" * 2_000_000})
            i += 1
            out["hostile_entries"] = i
            time.sleep(0.002)

    t = threading.Thread(target=run, name="misbehaving-carol", daemon=True)
    t.start()
    return t


def summarize(mode: str, m: dict) -> dict:
    rows, ok = m["rows"], [r for r in m["rows"] if r["check"] is None]
    done = [r["done"] for r in ok]
    k = min(5, len(rows) // 2)

    def p50_of(part: list[dict]) -> float | None:
        return med([r["done"] for r in part if r["check"] is None])

    first, last = p50_of(rows[:k]), p50_of(rows[-k:]) if k else None
    stages, prev = {}, None
    for key, *_ in MILESTONES:  # each milestone minus the one before it
        steps = [r[key] - r.get(prev, 0.0) for r in ok if None not in (r[key], r.get(prev, 0))]
        stages[key], prev = med(steps), key
    for key in NODE_ROWS:
        vals = [[p[key] for p in r["parties"].values() if p.get(key) is not None] for r in ok]
        stages[key] = med([max(v) for v in vals if v])
    return {
        "jobs": len(rows),
        "correct": len(ok),
        "p50": med(done),
        "p90": pct(done, 0.9),
        "jobs_per_min": len(ok) / m["wall_s"] * 60 if m.get("wall_s") else None,
        "degradation": last / first if first and last else None,
        "degradation_k": k,
        "session_start": (m.get("warmup") or {}).get("done") if mode != "cold" else None,
        "coord_rss_mb_max": m.get("coord_rss_mb_max"),
        "hostile_entries": m.get("hostile_entries"),
        "refused": m.get("refused", {}),
        "in_session": sum(1 for r in rows if r.get("session_id")),
        "stages": stages,
    }


def fmt(x: float | None, digits: int = 3) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def ratio(a: float | None, b: float | None) -> str:
    r = a / b if a is not None and b else None
    return "—" if r is None else f"{r:.3g}×" if r < 100 else f"{r:,.0f}×"


def print_tables(summ: dict[str, dict], args) -> None:
    modes = list(summ)
    both = len(modes) == 2
    # the ratio column: cold/warm, or hostile/warm (the misbehaving-party benchmark)
    num_m, den_m = (
        (("cold", "warm") if "cold" in modes else (modes[-1], modes[0])) if both else ("", "")
    )

    def table(title: str, first: str, goal: bool) -> Table:
        t = Table(title=title)
        rcol = [f"{num_m}/{den_m}"] if both else []
        for c in (first, *modes, *rcol, *(["goal"] if goal else [])):
            t.add_column(c, justify="left" if c == first else "right")
        return t

    def add(t: Table, label: str, vals: dict, digits: int = 3, goal: str | None = None) -> None:
        cells = [v if isinstance(v, str) else fmt(v, digits) for v in vals.values()]
        num = not any(isinstance(v, str) for v in vals.values())
        r = [ratio(vals[num_m], vals[den_m]) if num else ""] if both else []
        t.add_row(label, *cells, *r, *([goal] if goal is not None else []))

    t = table(f"{args.jobs} back-to-back RR22 PSI jobs, {args.rows:,} rows per party", "", True)
    k = next(iter(summ.values()))["degradation_k"]
    for key, label, digits in (
        ("p50", "p50 submit→SUCCEEDED, s", 3),
        ("p90", "p90 submit→SUCCEEDED, s", 3),
        ("jobs_per_min", "jobs per minute", 1),
        ("degradation", f"degradation: p50 last {k} ÷ p50 first {k}", 2),
        ("session_start", "session start (warm-up job), s", 3),
        ("coord_rss_mb_max", "coordinator RSS, max over the jobs, MB", 1),
    ):
        add(t, label, {m: summ[m][key] for m in modes}, digits, GOALS.get(key, ""))
    for key, label, goal in (
        ("correct", "correct answers", "all"),
        ("in_session", "jobs in a warm session", "warm: all"),
    ):
        add(t, label, {m: f"{summ[m][key]}/{summ[m]['jobs']}" for m in modes}, goal=goal)
    console.print(t)
    for m in modes:
        if summ[m].get("hostile_entries"):
            console.print(
                f"{m}: carol wrote {summ[m]['hostile_entries']:,} hostile entries; the "
                f"coordinator refused {summ[m]['refused'].get('carol', {})} (goal: hostile/warm "
                "p50 ≤ 1.2, every job right, coordinator RSS bounded)"
            )
    s = table("where the time goes: median per stage, s (see --help for each row)", "stage", False)
    for key, label, _field, _value in MILESTONES:
        add(s, label, {m: summ[m]["stages"][key] for m in modes})
    s.add_section()
    for key in NODE_ROWS:
        add(s, f"node: {key}", {m: summ[m]["stages"][key] for m in modes})
    console.print(s)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="bench/fanout.py",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--jobs", type=int, default=20, help="measured jobs per mode (default: 20)")
    ap.add_argument("--rows", type=int, default=1000, help="keys per party (default: 1000)")
    ap.add_argument(
        "--modes",
        default="warm,cold",
        help="warm, cold or both, in this order; hostile: warm while carol (--carol) writes "
        "hostile entries into its stream and floods its result keys (`--modes warm,hostile "
        "--carol`: the misbehaving-party benchmark, its p50 against the quiet warm run)",
    )
    ap.add_argument("--seed", type=int, default=1, help="input data seed (default: 1)")
    ap.add_argument("--poll", type=float, default=0.1, help="API poll interval, s (default: 0.1)")
    ap.add_argument("--timeout", type=float, default=600, help="give up on a job after s (600)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch dir (job logs)")
    ap.add_argument("--carol", action="store_true", help="a third party up and registered (idle)")
    args = ap.parse_args(argv)
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if len(args.modes) not in (1, 2) or not set(args.modes) <= {"warm", "cold", "hostile"}:
        ap.error("--modes: one or two of warm, cold, hostile (e.g. warm,cold or warm,hostile)")
    if "hostile" in args.modes and not args.carol:
        ap.error("--modes hostile needs --carol (the party that misbehaves)")
    if args.jobs < 1 or args.rows < 2:
        ap.error("--jobs ≥ 1 and --rows ≥ 2")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = ROOT / "var" / "bench" / f"fanout-{stamp}"
    report: dict = {
        "started_at": dt.datetime.now(dt.UTC).isoformat(),
        "args": vars(args),
        "machine": {
            "cpu_count": os.cpu_count(),
            "nproc": len(os.sched_getaffinity(0)),
            "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        },
        "modes": {},
    }
    names = ["alice", "bob", "carol"] if args.carol else ["alice", "bob"]
    fed = LocalFederation(base / "parties", names, log=lambda m: console.print(f"[dim]{m}[/]"))
    failed, t_fed = 0, time.monotonic()
    try:
        fed.start()
        console.print(f"[dim]federation up in {time.monotonic() - t_fed:.0f} s[/]")
        topo = write_topology(fed, base / "topology.yaml", federation="bench")
        for mode in args.modes:
            run_mode(fed, topo, base, mode, args, report["modes"].setdefault(mode, {"rows": []}))
    except Exception as exc:  # what ran so far is still reported
        console.print_exception()
        report["aborted"] = f"{type(exc).__name__}: {exc}"
    finally:
        fed.stop()
        ray_dirs = [n.env()["NODE_RAY_TEMP_DIR"] for n in fed.nodes.values()]
        report["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
        for m in report["modes"].values():
            failed += sum(1 for r in [m.get("warmup") or {}, *m["rows"]] if r.get("check"))
        if args.keep or failed or "aborted" in report:
            console.print(f"kept: {base}  (Ray temp dirs: {', '.join(ray_dirs)})")
        else:
            for d in (base, *ray_dirs):
                shutil.rmtree(d, ignore_errors=True)
    summ = {mode: summarize(mode, m) for mode, m in report["modes"].items()}
    report["summary"] = summ
    if summ:
        print_tables(summ, args)
    out = ROOT / "bench" / "results" / f"fanout-{stamp}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    console.print(f"written {out}")
    if failed:
        console.print(f"[bold red]CHECK FAILED[/] for {failed} job(s)")
        return 1
    return 2 if "aborted" in report else 0


if __name__ == "__main__":
    sys.exit(main())
