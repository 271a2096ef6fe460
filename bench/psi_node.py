"""PSI benchmark: the bare PSI library (the floor) vs. the same job through the node stack.

For every (rows, protocol) it measures, in one run on this machine:

  (a) floor — two OS processes (`python -m bench.floor_psi`, rank 0 = alice, rank 1 = bob) that
      each build a brpc link with mTLS exactly as SecretFlow's SPURuntime does and call
      `spu.psi.psi(config, link)` with the PsiConfig SPURuntime.psi builds. No Celery, no Ray,
      no SecretFlow device layer.
  (b) stack — a local two-party federation (per party: redis-server, Ray head, Celery worker
      with its pre-started job process and its session host) receives the same job through
      each party's queue and runs it in SecretFlow Ray production mode with mTLS on both link
      types: cold (a job process of its own) and/or warm (the second job of a warm session).

and prints a table per (rows, protocol) plus a summary, and writes everything as JSON to
bench/results/psi_node-<timestamp>.json.

Run `python bench/psi_node.py --help` for what each number means. The pieces: psi_cli (options),
psi_common (data, checks), psi_floor_pair (a), psi_stack and psi_memory (b), psi_report (tables).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import shlex
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: `python bench/psi_node.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.psi_cli import parse_args
from bench.psi_common import (
    PARTIES,
    RECEIVER,
    Dataset,
    console,
    dataset,
    kill_proc,
    loadavg,
    machine_info,
    short,
)
from bench.psi_cpu import cpu_line, floor_cpu_line
from bench.psi_floor_pair import FloorError, run_floor
from bench.psi_memory import ProcessView, wait_settled
from bench.psi_report import MODE_KEY, RATIO_KEY, config_table, memory_lines, summary_table
from bench.psi_stack import StackError, party_roots, run_stack, run_warm


def floor_phase(args, configs, runs, data, rundir: Path, live: list[subprocess.Popen]) -> None:
    from certs.authority import init_federation
    from deploy.local.ports import PortAllocator

    certs = rundir / "floor-certs"
    init_federation(certs, PARTIES)
    alloc = PortAllocator()
    for rows, proto in configs:
        run = runs[(rows, proto)]
        label = f"floor {proto} {rows:,} rows"
        run["floor_failed_attempts"] = []
        for attempt in range(1, args.retries + 2):
            what = f"{label}{f' (attempt {attempt})' if attempt > 1 else ''}"
            with console.status(f"{what}: two processes, brpc link with mTLS + spu.psi.psi"):
                run["loadavg_before_floor"] = loadavg()
                try:
                    run["floor"] = run_floor(
                        data[rows],
                        proto,
                        rundir / "floor" / f"{proto}-{rows}-{attempt}",
                        certs,
                        alloc,
                        args.timeout,
                        live,
                    )
                    break
                except FloorError as exc:
                    msg = short(exc, 600)
                    run["floor_failed_attempts"].append(msg)
                    retry = "; retrying" if attempt <= args.retries else ""
                    console.log(f"[yellow]{what} failed: {msg}{retry}")
        if "floor" not in run:
            run["failures"].append(f"floor: {run['floor_failed_attempts'][-1]}")
            continue
        run["errors"] += run["floor"]["errors"]
        fp = run["floor"]["parties"]
        console.log(
            f"{label}: wall {run['floor']['wall_s']:.2f}s (link "
            f"{fp[RECEIVER]['link_s']:.2f}s, psi {fp[RECEIVER]['psi_s']:.2f}s), "
            f"intersection {fp[RECEIVER]['intersection_count']:,}"
        )
        for e in run["floor"]["errors"]:
            console.log(f"[red bold]CHECK FAILED: {e}")


def stack_phase(mode: str, args, fed, view, configs, runs, data, warm_ds: Dataset) -> None:
    """Every (rows, protocol) through the stack in `mode` ("cold" | "warm"), with retries."""
    key = MODE_KEY[mode]  # "stack" (cold, as before warm mode existed) | "warm"
    for rows, proto in configs:
        run = runs[(rows, proto)]
        label = f"{mode} stack {proto} {rows:,} rows"
        run[f"{key}_failed_attempts"] = []
        for attempt in range(1, args.retries + 2):
            what = f"{label}{f' (attempt {attempt})' if attempt > 1 else ''}"
            if mode == "cold":
                with console.status(f"{what}: waiting for the spare job processes / quiet"):
                    run["settle_s"] = round(wait_settled(view, args.settle_timeout), 1)
                with console.status(f"{what}: job through both queues (Ray production mode, mTLS)"):
                    run["loadavg_before_stack"] = loadavg()
                    st = run_stack(
                        fed,
                        data[rows],
                        proto,
                        f"{proto}-{rows}-{attempt}",
                        view,
                        timeout=args.timeout,
                        teardown_wait=args.teardown_wait,
                        interval=args.sample_interval,
                    )
            else:
                st = run_warm(
                    fed,
                    data[rows],
                    warm_ds,
                    proto,
                    f"warm-{proto}-{rows}-{attempt}",
                    view,
                    timeout=args.timeout,
                    settle_timeout=args.settle_timeout,
                    interval=args.sample_interval,
                    idle_timeout=args.session_idle_timeout,
                )
                run["warm_settle_s"] = st["session"].get("settle_s")
                run["loadavg_before_warm"] = st["session"].get("loadavg_before")
            if not st["failed"] or st.get("check_failed"):
                break
            run[f"{key}_failed_attempts"].append(st)
            retry = "; retrying" if attempt <= args.retries else ""
            where = " (in the warm-up job)" if st.get("failed_in") else ""
            console.log(
                f"[yellow]{what} failed{where} after {st['wall_s']:.0f}s: "
                f"{'; '.join(st['errors'])}{retry}"
            )
        run[key] = st
        for w_ in st["warnings"]:
            console.log(f"[yellow]{label}: {w_}")
        if st.get("check_failed"):
            run["errors"] += st["errors"]
            for e in st["errors"]:
                console.log(f"[red bold]CHECK FAILED: {e}")
        elif st["failed"]:
            run["failures"].append(f"{mode} stack: {'; '.join(st['errors'])}")
        else:
            run["errors"] += st["errors"]
            if run.get("floor"):
                run[RATIO_KEY[mode]] = round(st["wall_s"] / run["floor"]["wall_s"], 2)
            m = st["parties"][RECEIVER]["performance_metrics"]
            got = (st["parties"][RECEIVER].get("result") or {}).get("intersection_count")
            console.log(
                f"{label}: wall {st['wall_s']:.2f}s (cluster {m.get('cluster_init_s')}s, "
                f"devices {m.get('device_init_s')}s, algorithm {m.get('algorithm_s')}s"
                + (f", session job #{m.get('session_job')}" if mode == "warm" else "")
                + f"), intersection {got:,}"
                if isinstance(got, int)
                else f"{label}: wall {st['wall_s']:.2f}s, intersection {got}"
            )
            for e in st["errors"]:
                console.log(f"[red bold]CHECK FAILED: {e}")
        if mode == args.stack_modes[-1]:  # this configuration is complete
            console.print(config_table(run, args.stack_modes))
            console.print("[dim]processes ≥ 20 MB at each party's peak, MB:[/]")
            for line in memory_lines(run, args.stack_modes):
                console.print(line, soft_wrap=True, markup=False)
            console.print("[dim]CPU while the job ran (core-seconds; all cores of the machine):[/]")
            lines = [floor_cpu_line(run.get("floor"))]
            lines += [
                cpu_line(m, (run.get(MODE_KEY[m]) or {}).get("cpu")) for m in args.stack_modes
            ]
            for line in filter(None, lines):
                console.print(line, soft_wrap=True, markup=False)


def main(argv: list[str] | None = None) -> int:
    args: argparse.Namespace = parse_args(argv)
    t_begin = time.perf_counter()
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    command = shlex.join([sys.executable, *sys.argv])
    machine = machine_info()
    console.rule("PSI: bare library (floor) vs. node stack")
    console.print(f"command  {command}")
    console.print(
        f"machine  {machine['nproc']} CPUs ({machine['cpu_model']}), {machine['memory_gb']} GB,"
        f" Python {machine['python']}, load {machine['loadavg_at_start']}"
    )
    console.print("versions " + ", ".join(f"{k} {v}" for k, v in machine["versions"].items() if v))
    if machine["nproc"] <= 2:
        console.print(
            "[yellow]note: both parties share this machine's "
            f"{machine['nproc']} CPUs; other load on it shows in every number"
        )

    workdir = args.workdir.resolve()
    rundir = workdir / f"run-{stamp}"
    rundir.mkdir(parents=True, exist_ok=True)
    configs = [(rows, proto) for rows in args.rows for proto in args.protocols]
    report: dict[str, Any] = {
        "command": command,
        "started_at": dt.datetime.now(dt.UTC).isoformat(),
        "machine": machine,
        "config": {
            "rows": args.rows,
            "protocols": args.protocols,
            "stack_modes": args.stack_modes,
            "overlap": args.overlap,
            "seed": args.seed,
            "receiver": RECEIVER,
            "parties": PARTIES,
            "sample_interval_s": args.sample_interval,
            "warmup_rows": args.warmup_rows,
            "session_idle_timeout_s": args.session_idle_timeout,
            "rundir": str(rundir),
        },
        "runs": [],
        "complete": False,
    }
    runs: dict[tuple[int, str], dict[str, Any]] = {}
    data: dict[int, Dataset] = {}
    live: list[subprocess.Popen] = []
    fed = None
    ray_temp_dirs: list[Path] = []
    exit_code = 0
    try:
        for rows in args.rows:
            with console.status(f"data: {rows:,} rows per party"):
                t = time.perf_counter()
                data[rows] = dataset(workdir, rows, args.overlap, args.seed)
            console.log(
                f"data {rows:,} rows per party, {data[rows].overlap:,} in common "
                f"({time.perf_counter() - t:.1f}s) {data[rows].files['alice'].parent}"
            )
        for rows, proto in configs:
            runs[(rows, proto)] = {
                "rows": rows,
                "protocol": proto,
                "overlap": data[rows].overlap,
                "errors": [],  # wrong results
                "failures": [],  # runs that did not finish
            }

        # ---- (a) floor ------------------------------------------------------------------
        if not args.skip_floor:
            floor_phase(args, configs, runs, data, rundir, live)

        # ---- (b) stack ------------------------------------------------------------------
        if args.stack_modes:
            from deploy.local.federation import LocalFederation

            fed = LocalFederation(
                rundir / "fed", PARTIES, log=lambda m: console.log(f"  federation: {m}")
            )
            ray_temp_dirs = [Path(n.env()["NODE_RAY_TEMP_DIR"]) for n in fed.nodes.values()]
            with console.status("starting the federation (Redis, Ray heads, Celery workers)"):
                t = time.perf_counter()
                fed.start()
            report["federation_start_s"] = round(time.perf_counter() - t, 1)
            console.log(f"federation up in {report['federation_start_s']:.1f}s at {fed.base}")
            view = ProcessView(party_roots(fed))
            warm_ds = dataset(workdir, args.warmup_rows, args.overlap, args.seed)

            if "cold" in args.stack_modes:
                with console.status("warm-up: waiting for the spare job processes"):
                    wait_settled(view, args.settle_timeout)
                with console.status(
                    f"warm-up job ({args.warmup_rows:,} rows, RR22, cold, not measured)"
                ):
                    w = run_stack(
                        fed,
                        warm_ds,
                        "RR22",
                        "warmup",
                        view,
                        timeout=args.timeout,
                        teardown_wait=args.teardown_wait,
                        interval=args.sample_interval,
                    )
                report["warmup"] = w
                if w["errors"]:
                    raise StackError("warm-up job failed: " + "; ".join(w["errors"]))
                console.log(f"warm-up job done: wall {w['wall_s']:.2f}s")
            for mode in args.stack_modes:
                stack_phase(mode, args, fed, view, configs, runs, data, warm_ds)
        report["complete"] = True
    except KeyboardInterrupt:
        console.log("[red]interrupted: cleaning up")
        exit_code = 130
    except Exception as exc:
        console.log(f"[red bold]benchmark aborted: {type(exc).__name__}: {exc}")
        report["aborted"] = f"{type(exc).__name__}: {exc}"
        report["traceback"] = traceback.format_exc()
        console.log(short(report["traceback"], 600), markup=False)
        exit_code = 2
    finally:
        for proc in list(live):
            kill_proc(proc)
        if fed is not None:
            # Celery's results unsubscribe from their party's Redis when collected: collect them
            # while it still runs (later, at exit, each prints "Retry limit exceeded")
            gc.collect()
            with console.status("stopping the federation"):
                t = time.perf_counter()
                try:
                    fed.stop()
                except Exception as exc:
                    console.log(f"[red]federation stop failed: {exc}")
            console.log(f"federation stopped ({time.perf_counter() - t:.1f}s)")
        if args.keep:
            console.log(f"kept: {rundir}  (Ray temp dirs: {', '.join(map(str, ray_temp_dirs))})")
        else:
            shutil.rmtree(rundir, ignore_errors=True)
            for d in ray_temp_dirs:
                shutil.rmtree(d, ignore_errors=True)

    report["runs"] = list(runs.values())
    report["elapsed_s"] = round(time.perf_counter() - t_begin, 1)
    if not args.stack_modes:  # the stack phases print per-config tables as they go
        for run in report["runs"]:
            console.print(config_table(run, args.stack_modes))
    if report["runs"]:
        console.print(summary_table(report["runs"], args.stack_modes))
    wrong = [(r["rows"], r["protocol"], e) for r in report["runs"] for e in r["errors"]]
    broken = [(r["rows"], r["protocol"], e) for r in report["runs"] for e in r["failures"]]
    for rows, proto, e in broken:
        console.print(f"[yellow bold]RUN FAILED[/] {proto} {rows:,}: {short(e, 600)}")
    for rows, proto, e in wrong:
        console.print(f"[red bold]CHECK FAILED[/] {proto} {rows:,}: {e}")
    if wrong and exit_code == 0:
        exit_code = 1
    elif broken and exit_code == 0:
        exit_code = 3
    args.results_dir.mkdir(parents=True, exist_ok=True)
    out = args.results_dir / f"psi_node-{stamp}.json"
    out.write_text(json.dumps(report, indent=2, default=str))
    console.print(f"results  {out}")
    console.print(f"elapsed  {report['elapsed_s']:.0f}s")
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
