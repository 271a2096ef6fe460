"""The command line of bench/psi_node.py: its options and the help text that explains every
number it prints."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.psi_common import DEFAULT_WORKDIR, RESULTS_DIR, STACK_MODES

EPILOG = """\
what is measured
  floor (a)  Two processes `python -m bench.floor_psi --rank 0|1` started together, each with
             fresh ports. Per process: wall = spawn → exit as seen by this script; inside it:
             import (spu), link (spu.libspu.link.create_brpc with mTLS, includes waiting for
             the peer: connect_retry_interval_ms = 1000 as the node uses), psi (spu.psi.psi),
             peak RSS (getrusage ru_maxrss of that process). Floor wall of a configuration is
             the later of the two processes' exits.
  stack (b)  `deploy.local.federation.LocalFederation` for alice and bob; params from
             `deploy.local.standin.psi_params`, sent with `deploy.local.standin.send`, in one
             or both --stack-modes:
             cold       the job runs in a job process of its own (`python -m node.sfjob.executor`,
                        pre-started: secretflow imported), with its own sf.init, SPU runtime
                        and link, torn down after the result.
             warm       a new warm session per (rows, protocol): an unmeasured warm-up job
                        (--warmup-rows, same protocol) starts it (the session host's driver
                        does sf.init and starts the SPU runtime), then the measured job runs
                        in the same session (same session id, same fed and SPU ports): no
                        sf.init, no SPU start. Its performance_metrics must say session_job
                        ≥ 2 for both parties, else CHECK FAILED. The nodes' sessions are
                        closed before and after each run.
             wall       send → that party's Celery result is ready (the configuration's stack
                        wall is the later of the two). Teardown (sf.shutdown) of a cold job
                        runs after the result is returned, so it is shown apart and is not in
                        the wall; a warm job has none (the session stays up).
             queue+handoff  wall − performance_metrics.total_s: Celery delivery, preflight,
                        handing the job to the job process or session driver, returning the
                        result.
             input check / cluster / device / algorithm: the result's performance_metrics
                        (input check: the node's check of the input table before the job).
                        sf.SPU only creates its actors asynchronously, so the SPU actors'
                        start-up (a Ray worker importing secretflow) and their brpc link
                        connect are counted in "algorithm", not in "device init".
             teardown   cold: teardown_s from <state_dir>/jobs/<execution_id>.<party>/
                        teardown.json; if the job process reported a teardown error instead,
                        the time from the result to teardown.json is shown, marked *.
             memory     sampled every --sample-interval s from send until the result (cold:
                        until both teardowns are written, kept apart in the JSON): the
                        party's Ray head session (every process whose session id is the
                        head's pid) ∪ the tree of its worker process, walked parent → child
                        (so the job processes, the session host and its drivers, which call
                        setsid, are in it). "party" = the whole sum; its parts, disjoint:
                        Ray = the Ray head session (incl. the SPU runtime and RayFed actors);
                        driver = the process that runs the job (cold: the job process
                        `node.sfjob.executor`; warm: the session's `node.sessions.driver`);
                        spare = other cold job processes (the pre-started one); session = the
                        session host `node.sessions.host` and everything under it but the
                        driver (in cold mode: its pre-started driver for the next session);
                        Celery = the rest of the worker's tree. The tables show each party's
                        peak and the parts at the moment of that peak. RSS sums count shared
                        pages (Ray's object store) once per process that maps them.
  ratio      stack wall / floor wall, per mode.
  check      the receiver's intersection_count and its output file must hold exactly the
             overlapping keys ((a), (b) cold, (b) warm and its warm-up job); a mismatch is
             printed in red (CHECK FAILED, summary "MISMATCH").
exit status  0 all ok · 1 a wrong intersection (or a warm job not run in its session) ·
             2 aborted (e.g. the federation did not start) · 3 some run failed on every
             attempt · 130 interrupted.

order        All floor runs first (nothing else of ours running), then the federation is
             started; cold: one small warm-up job runs (so each party's spare job process is
             in place), and the measured jobs follow; before each one the script waits until
             each party has exactly one spare job process that is waiting for its job (its
             main thread blocked in read(0) per /proc/<pid>/syscall) and our processes are
             quiet (< 0.25 CPU-s/s). Then warm (after every cold job: a warm job makes the
             node drop its cold spare): per (rows, protocol) close the sessions, wait for the
             session hosts' pre-started drivers and quiet, the warm-up job, wait until the
             session drivers are idle and quiet, the measured job, close the sessions. A
             failed run is retried (--retries; warm: with a new session).
data         Per size: alice holds keys 0..rows-1, bob rows-overlap..2·rows-overlap-1, as
             12-digit strings, shuffled; cached in <workdir>/data. Each run reads a fresh copy
             (the PSI library writes a <input>.meta cache next to its input).
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="bench/psi_node.py",
        description=(
            "Two-party PSI: the bare PSI library between two processes (the floor) vs. the same "
            "job through each party's queue and SecretFlow Ray production mode (the stack: "
            "cold, a job process per job, and warm, in a warm federation session), side by side "
            "in one run. Prints a table per (rows, protocol) and a summary, and writes the "
            "numbers to bench/results/psi_node-<timestamp>.json."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument(
        "--rows",
        default="100000,1000000",
        help="comma-separated rows per party (default: %(default)s)",
    )
    ap.add_argument(
        "--protocols",
        default="RR22,ECDH",
        help="comma-separated PSI protocols: RR22, ECDH, KKRT (default: %(default)s)",
    )
    ap.add_argument(
        "--stack-modes",
        default=",".join(STACK_MODES),
        help=(
            "comma-separated ways to run the stack: cold (a job process per job), warm (the "
            "measured job is the second of a warm session) (default: %(default)s)"
        ),
    )
    ap.add_argument(
        "--overlap",
        type=float,
        default=0.5,
        help="fraction of each party's rows the other party also holds (default: %(default)s)",
    )
    ap.add_argument("--seed", type=int, default=1, help="data shuffle seed (default: %(default)s)")
    ap.add_argument(
        "--workdir",
        type=Path,
        default=DEFAULT_WORKDIR,
        help="cached data and this run's scratch (federation, floor runs) (default: var/bench)",
    )
    ap.add_argument(
        "--keep",
        action="store_true",
        help="keep this run's scratch dir (federation dir with logs, Ray temp dirs, floor runs)",
    )
    ap.add_argument("--skip-floor", action="store_true", help="measure only the stack (b)")
    ap.add_argument("--skip-stack", action="store_true", help="measure only the floor (a)")
    ap.add_argument(
        "--timeout",
        type=float,
        default=1800,
        help="limit for one floor run or one stack job, in s (default: %(default)s)",
    )
    ap.add_argument(
        "--teardown-wait",
        type=float,
        default=60,
        help="how long to wait for each party's teardown.json after a cold job "
        "(default: %(default)s)",
    )
    ap.add_argument(
        "--settle-timeout",
        type=float,
        default=180,
        help="max wait before a job for the spare job processes (cold) or session drivers "
        "(warm) to be ready (default: %(default)s)",
    )
    ap.add_argument(
        "--sample-interval",
        type=float,
        default=0.2,
        help="memory sampling interval in s (default: %(default)s)",
    )
    ap.add_argument(
        "--warmup-rows",
        type=int,
        default=1000,
        help="rows per party of the unmeasured warm-up jobs: the cold one after the federation "
        "starts, and each warm session's first (default: %(default)s)",
    )
    ap.add_argument(
        "--session-idle-timeout",
        type=float,
        default=600,
        help="idle_timeout_s of the warm sessions (default: %(default)s)",
    )
    ap.add_argument(
        "--retries",
        type=int,
        default=2,
        help=(
            "re-run a floor run or stack job that failed (crash, timeout — e.g. the PSI "
            "library's intermittent ECDH hang, which ends after recv_timeout_ms = 120 s) up to "
            "this many times; failed attempts are listed in the JSON. A wrong intersection is "
            "never retried (default: %(default)s)"
        ),
    )
    ap.add_argument(
        "--results-dir",
        type=Path,
        default=RESULTS_DIR,
        help="where the JSON goes (default: bench/results)",
    )
    args = ap.parse_args(argv)
    try:
        args.rows = [int(x.replace("_", "")) for x in args.rows.split(",") if x.strip()]
    except ValueError:
        ap.error(f"--rows: comma-separated integers, got {args.rows!r}")
    if not args.rows or min(args.rows) < 2:
        ap.error("--rows: at least one size ≥ 2")
    from node.contract import normalize_psi_protocol

    try:
        args.protocols = [
            normalize_psi_protocol(x).removeprefix("PROTOCOL_")
            for x in args.protocols.split(",")
            if x.strip()
        ]
    except ValueError as exc:
        ap.error(f"--protocols: {exc}")
    modes = {x.strip().lower() for x in args.stack_modes.split(",") if x.strip()}
    if not modes or modes - set(STACK_MODES):
        ap.error(f"--stack-modes: one or both of {', '.join(STACK_MODES)}")
    args.stack_modes = [m for m in STACK_MODES if m in modes]  # cold always before warm
    if not 0 < args.overlap <= 1:
        ap.error("--overlap must be in (0, 1]")
    if args.skip_floor and args.skip_stack:
        ap.error("--skip-floor and --skip-stack leave nothing to measure")
    if args.skip_stack:
        args.stack_modes = []
    return args
