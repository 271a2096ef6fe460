"""PSI benchmark: the bare PSI library (the floor) vs. the same job through the node stack.

For every (rows, protocol) it measures, in one run on this machine:

  (a) floor — two OS processes (`python -m bench.floor_psi`, rank 0 = alice, rank 1 = bob) that
      each build a brpc link with mTLS exactly as SecretFlow's SPURuntime does and call
      `spu.psi.psi(config, link)` with the PsiConfig SPURuntime.psi builds. No Celery, no Ray,
      no SecretFlow device layer.
  (b) stack — a local two-party federation (per party: redis-server, Ray head, Celery worker
      with its pre-started job process) receives the same job through each party's queue and
      runs it in SecretFlow Ray production mode with mTLS on both link types.

and prints a table per (rows, protocol) plus a summary, and writes everything as JSON to
bench/results/psi_node-<timestamp>.json.

Run `python bench/psi_node.py --help` for what each number means.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as dt
import json
import os
import platform
import random
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script: `python bench/psi_node.py`
    sys.path.insert(0, str(REPO_ROOT))

import psutil  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from certs.authority import init_federation  # noqa: E402
from deploy.local.ports import PortAllocator  # noqa: E402

PARTIES = ["alice", "bob"]
RECEIVER = "alice"
KEY = "uid"
RESULTS_DIR = REPO_ROOT / "bench" / "results"
DEFAULT_WORKDIR = REPO_ROOT / "var" / "bench"
MB = 1024 * 1024

# wide enough for the tables when the output goes to a file or pipe
console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)

EPILOG = """\
what is measured
  floor (a)  Two processes `python -m bench.floor_psi --rank 0|1` started together, each with
             fresh ports. Per process: wall = spawn → exit as seen by this script; inside it:
             import (spu), link (spu.libspu.link.create_brpc with mTLS, includes waiting for
             the peer: connect_retry_interval_ms = 1000 as the node uses), psi (spu.psi.psi),
             peak RSS (getrusage ru_maxrss of that process). Floor wall of a configuration is
             the later of the two processes' exits.
  stack (b)  `deploy.local.federation.LocalFederation` for alice and bob; params from
             `deploy.local.driver.psi_params`, sent with `deploy.local.driver.send`.
             wall       send → that party's Celery result is ready (the configuration's stack
                        wall is the later of the two). Teardown (sf.shutdown) runs after the
                        result is returned, so it is shown apart and is not in the wall.
             queue+handoff  wall − performance_metrics.total_s: Celery delivery, preflight,
                        handing the job to the pre-started job process, returning the result.
             cluster / device / algorithm: the result's performance_metrics. sf.SPU only
                        creates its actors asynchronously, so the SPU actors' start-up (a Ray
                        worker importing secretflow) and their brpc link connect are counted
                        in "algorithm", not in "device init".
             teardown   teardown_s from <state_dir>/jobs/<execution_id>.<party>/teardown.json;
                        if the job process reported a teardown error instead, the time from
                        the result to teardown.json is shown, marked *.
             memory     sampled every --sample-interval s from send until both teardowns are
                        written: the party's Ray head session (every process whose session id
                        is the head's pid) ∪ the Celery worker's process tree (incl. the job
                        process, which calls setsid). "driver" = the job process
                        (`python -m node.executor`); "party" = the whole sum. Peaks are over
                        send → result; RSS sums count shared pages (Ray's object store) once
                        per process that maps them.
  ratio      stack wall / floor wall.
  check      the receiver's intersection_count and its output file must hold exactly the
             overlapping keys (both (a) and (b)); a mismatch is printed in red (CHECK FAILED,
             summary "MISMATCH").
exit status  0 all ok · 1 a wrong intersection · 2 aborted (e.g. the federation did not
             start) · 3 some run failed on every attempt · 130 interrupted.

order        All floor runs first (nothing else of ours running), then the federation is
             started, one small warm-up job runs (so each party's spare job process is in
             place), and the measured jobs follow; before each one the script waits until
             each party has exactly one spare job process that is waiting for its job (its
             main thread blocked in read(0) per /proc/<pid>/syscall) and our processes are
             quiet (< 0.25 CPU-s/s). A failed run is retried (--retries).
data         Per size: alice holds keys 0..rows-1, bob rows-overlap..2·rows-overlap-1, as
             12-digit strings, shuffled; cached in <workdir>/data. Each run reads a fresh copy
             (the PSI library writes a <input>.meta cache next to its input).
"""


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------
@dataclass
class Dataset:
    rows: int
    overlap: int
    files: dict[str, Path]

    @property
    def common(self) -> range:
        return range(self.rows - self.overlap, self.rows)


def dataset(workdir: Path, rows: int, overlap_frac: float, seed: int) -> Dataset:
    overlap = round(rows * overlap_frac)
    d = workdir / "data" / f"rows{rows}-overlap{overlap}-seed{seed}"
    files = {p: d / f"{p}.csv" for p in PARTIES}
    marker = d / "dataset.json"
    ds = Dataset(rows, overlap, files)
    if marker.exists() and all(f.exists() for f in files.values()):
        return ds
    d.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    ranges = {"alice": range(0, rows), "bob": range(rows - overlap, 2 * rows - overlap)}
    for p, r in ranges.items():
        keys = list(r)
        rng.shuffle(keys)
        tmp = files[p].with_suffix(".tmp")
        with open(tmp, "w") as fh:
            fh.write(f"{KEY}\n")
            fh.write("\n".join(f"{k:012d}" for k in keys))
            fh.write("\n")
        tmp.replace(files[p])
    marker.write_text(json.dumps({"rows": rows, "overlap": overlap, "seed": seed, "key": KEY}))
    return ds


def check_output(path: Path, ds: Dataset) -> str | None:
    """None if `path` holds exactly the common keys, else what is wrong."""
    if not path.exists():
        return f"receiver output {path} does not exist"
    with open(path, newline="") as fh:
        reader = csv.reader(fh)  # the PSI library quotes the header
        header = next(reader, [])
        if KEY not in header:
            return f"receiver output has no {KEY!r} column (header: {header})"
        col = header.index(KEY)
        got = [row[col].strip() for row in reader if row]
    if len(got) != ds.overlap:
        return f"receiver output has {len(got):,} rows, expected {ds.overlap:,}"
    lo, hi = ds.common.start, ds.common.stop
    bad = [k for k in got if not (k.isdigit() and len(k) == 12 and lo <= int(k) < hi)]
    if bad:
        return f"receiver output holds {len(bad):,} keys outside the overlap, e.g. {bad[:3]}"
    if len(set(got)) != len(got):
        return "receiver output holds duplicate keys"
    return None


def check_count(count: Any, ds: Dataset, who: str) -> str | None:
    if count != ds.overlap:
        return f"{who}: intersection_count = {count}, expected {ds.overlap:,}"
    return None


# --------------------------------------------------------------------------------------------
# (a) floor
# --------------------------------------------------------------------------------------------
class FloorError(RuntimeError):
    pass


_ERROR_LINE = re.compile(r"\[error\]|Error|Exception|timeout", re.IGNORECASE)


def _log_error(path: Path) -> str:
    """The last error lines of a floor process's log (its tail if none)."""
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines()]
    except OSError:
        return ""
    hits = [ln for ln in lines if _ERROR_LINE.search(ln) and "Traceback" not in ln]
    if not hits:
        return " | ".join(lines[-3:])
    first = next((ln for ln in hits if "[error]" in ln), None)  # the library's own report
    picked = [first] if first else []
    picked += [ln for ln in hits[-2:] if ln not in picked]
    return " | ".join(picked)


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    with contextlib.suppress(Exception):
        proc.wait(timeout=10)


def _remove_psi_traces(log: Path) -> None:
    """The PSI library writes /tmp/psi_<id>.trace per run; remove the ones our floor wrote."""
    marker = "Trace has been written to "
    with contextlib.suppress(OSError):
        for line in log.read_text(errors="replace").splitlines():
            if marker in line:
                trace = Path(line.split(marker, 1)[1].strip().rstrip("."))
                if trace.name.startswith("psi_") and trace.suffix == ".trace":
                    trace.unlink(missing_ok=True)


def run_floor(
    ds: Dataset,
    protocol: str,
    rundir: Path,
    certs: Path,
    alloc: PortAllocator,
    timeout: float,
    live: list[subprocess.Popen],
) -> dict[str, Any]:
    rundir.mkdir(parents=True, exist_ok=True)
    ports = [alloc.one() for _ in PARTIES]
    addresses = ",".join(f"127.0.0.1:{p}" for p in ports)
    inputs = {}
    for p in PARTIES:  # a fresh copy: no <input>.meta left by an earlier run
        inputs[p] = rundir / f"{p}.csv"
        shutil.copyfile(ds.files[p], inputs[p])
    procs: dict[str, subprocess.Popen] = {}
    starts: dict[str, float] = {}
    ends: dict[str, float] = {}
    logs = {p: rundir / f"{p}.log" for p in PARTIES}
    reports = {p: rundir / f"{p}.report.json" for p in PARTIES}
    try:
        for rank, p in enumerate(PARTIES):
            cmd = [
                sys.executable,
                "-m",
                "bench.floor_psi",
                f"--rank={rank}",
                f"--parties={','.join(PARTIES)}",
                f"--addresses={addresses}",
                f"--certs={certs}",
                f"--input={inputs[p]}",
                f"--output={rundir / f'{p}.out.csv'}",
                f"--key={KEY}",
                f"--protocol={protocol}",
                f"--receiver={RECEIVER}",
                f"--report={reports[p]}",
            ]
            with open(logs[p], "wb") as logf:
                starts[p] = time.perf_counter()
                procs[p] = subprocess.Popen(
                    cmd, cwd=REPO_ROOT, stdout=logf, stderr=subprocess.STDOUT
                )
            live.append(procs[p])
        while len(ends) < len(procs):
            now = time.perf_counter()
            for p, proc in procs.items():
                if p not in ends and proc.poll() is not None:
                    ends[p] = now
            if now - min(starts.values()) > timeout:
                raise FloorError(f"floor run did not finish within {timeout:.0f}s")
            if any(proc.returncode not in (None, 0) for proc in procs.values()):
                break  # one side failed: do not wait for the other to time out its link
            time.sleep(0.01)
        failed = [p for p, proc in procs.items() if proc.returncode not in (None, 0)]
        failed += [p for p in procs if p not in failed and not reports[p].exists()]
        if failed:
            p = failed[0]
            rc = procs[p].returncode
            how = f"exited with code {rc}" if rc is not None else "was stopped (peer failed)"
            raise FloorError(f"floor process {p} {how}: {_log_error(logs[p])}")
    finally:
        for proc in procs.values():
            _kill(proc)
            with contextlib.suppress(ValueError):
                live.remove(proc)
        for log in logs.values():
            _remove_psi_traces(log)
    out: dict[str, Any] = {"ports": ports, "parties": {}}
    for p in PARTIES:
        rep = json.loads(reports[p].read_text())
        rep["wall_s"] = round(ends[p] - starts[p], 3)
        rep["pre_main_s"] = round(rep["wall_s"] - rep["main_s"], 3)  # interpreter start-up
        out["parties"][p] = rep
    out["wall_s"] = round(max(ends.values()) - min(starts.values()), 3)
    errors = [
        check_count(out["parties"][RECEIVER]["intersection_count"], ds, "floor"),
        check_output(rundir / f"{RECEIVER}.out.csv", ds),
    ]
    out["errors"] = [e for e in errors if e]
    return out


# --------------------------------------------------------------------------------------------
# (b) memory sampling of the parties' processes
# --------------------------------------------------------------------------------------------
def _is_executor(proc: psutil.Process) -> bool:
    try:
        cmd = proc.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False
    return "node.executor" in cmd


class ProcessView:
    """Which processes belong to each party: its Ray head session ∪ its worker's tree."""

    def __init__(self, roots: dict[str, tuple[int, int]]) -> None:
        self.roots = roots  # party → (ray head pid = session id, celery worker pid)
        self._executor: dict[tuple[int, float], bool] = {}

    def snapshot(self) -> dict[str, dict[str, dict[int, psutil.Process]]]:
        """party → {"ray": {pid: proc}, "tree": {pid: proc}, "executors": {pid: proc}}."""
        by_pid: dict[int, psutil.Process] = {}
        children: dict[int, list[int]] = {}
        sids: dict[int, int] = {}
        for proc in psutil.process_iter(["ppid"]):
            try:
                sids[proc.pid] = os.getsid(proc.pid)
            except OSError:
                continue
            by_pid[proc.pid] = proc
            children.setdefault(proc.info["ppid"] or 0, []).append(proc.pid)
        out = {}
        for party, (head_sid, worker_pid) in self.roots.items():
            ray = {pid: by_pid[pid] for pid, sid in sids.items() if sid == head_sid}
            tree: dict[int, psutil.Process] = {}
            stack = [worker_pid] if worker_pid in by_pid else []
            while stack:
                pid = stack.pop()
                if pid in tree:
                    continue
                tree[pid] = by_pid[pid]
                stack.extend(c for c in children.get(pid, []) if c in by_pid)
            executors = {}
            for pid, proc in tree.items():
                try:
                    key = (pid, proc.create_time())
                except psutil.Error:
                    continue
                if key not in self._executor:
                    self._executor[key] = _is_executor(proc)
                if self._executor[key]:
                    executors[pid] = proc
            out[party] = {"ray": ray, "tree": tree, "executors": executors}
        return out

    @staticmethod
    def cpu_seconds(procs: dict[int, psutil.Process]) -> float:
        total = 0.0
        for proc in procs.values():
            with contextlib.suppress(psutil.Error):
                t = proc.cpu_times()
                total += t.user + t.system
        return total


def _rss(proc: psutil.Process) -> int:
    try:
        return proc.memory_info().rss
    except psutil.Error:
        return 0


class MemorySampler(threading.Thread):
    def __init__(self, view: ProcessView, interval: float) -> None:
        super().__init__(name="memory-sampler", daemon=True)
        self.view = view
        self.interval = interval
        self.samples: list[tuple[float, str, dict[str, int]]] = []
        self.driver_pid: dict[str, int | None] = dict.fromkeys(view.roots)
        self._halt = threading.Event()
        self.cpu_s = 0.0

    def run(self) -> None:
        while not self._halt.is_set():
            t = time.perf_counter()
            with contextlib.suppress(Exception):
                self._sample(t)
            self._halt.wait(max(0.0, self.interval - (time.perf_counter() - t)))
        self.cpu_s = time.thread_time()

    def _sample(self, t: float) -> None:
        for party, sets in self.view.snapshot().items():
            execs = sets["executors"]
            if self.driver_pid[party] is None and execs:
                # the job process is the oldest one: a new spare is started only after it
                self.driver_pid[party] = min(execs, key=lambda pid: execs[pid].create_time())
            driver = self.driver_pid[party]
            union = {**sets["ray"], **sets["tree"]}
            rss = {pid: _rss(proc) for pid, proc in union.items()}
            self.samples.append(
                (
                    t,
                    party,
                    {
                        "total": sum(rss.values()),
                        "driver": rss.get(driver, 0) if driver else 0,
                        "ray": sum(rss[pid] for pid in sets["ray"]),
                        "celery": sum(rss[pid] for pid in sets["tree"] if pid not in execs),
                        "spare": sum(rss[pid] for pid in execs if pid != driver),
                        "processes": len(union),
                    },
                )
            )

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)

    def peaks(self, party: str, start: float, end: float) -> dict[str, float]:
        rows = [s for t, p, s in self.samples if p == party and start <= t <= end]
        if not rows:
            return {}
        out = {f"{k}_mb": round(max(r[k] for r in rows) / MB, 1) for k in rows[0]}
        out["processes"] = max(r["processes"] for r in rows)
        out.pop("processes_mb", None)
        out["samples"] = len(rows)
        return out


# --------------------------------------------------------------------------------------------
# (b) the stack
# --------------------------------------------------------------------------------------------
class StackError(RuntimeError):
    pass


def party_roots(fed) -> dict[str, tuple[int, int]]:
    roots = {}
    for p, node in fed.nodes.items():
        head = int((node.state_dir / "ray-head.pid").read_text().strip())
        roots[p] = (head, node.procs["worker"].pid)
    return roots


def spare_waiting(pid: int) -> bool | None:
    """True if the job process's main thread is blocked in read(0, …): it has imported
    secretflow, said "ready" and waits for its job on stdin (node/executor.py). None if the
    kernel does not tell us (/proc/<pid>/syscall unreadable)."""
    try:
        fields = Path(f"/proc/{pid}/syscall").read_text().split()
    except OSError:
        return None
    if not fields or fields[0] == "running":
        return False
    if platform.machine() not in ("x86_64", "AMD64"):
        return None  # syscall numbers differ; rely on age + quiet CPU
    return fields[0] == "0" and len(fields) > 1 and int(fields[1], 16) == 0


def wait_settled(view: ProcessView, timeout: float, min_spare_age: float = 5.0) -> float:
    """Wait until every party has exactly one idle spare job process and our processes are quiet
    (< 0.25 CPU-s per s, both parties together). Returns the seconds waited."""
    t0 = time.perf_counter()
    last = ""
    while True:
        snap = view.snapshot()
        reasons = []
        for party, sets in snap.items():
            execs = sets["executors"]
            if len(execs) != 1:
                reasons.append(f"{party}: {len(execs)} job processes")
                continue
            (proc,) = execs.values()
            try:
                age = time.time() - proc.create_time()
            except psutil.Error:
                reasons.append(f"{party}: spare vanished")
                continue
            if age < min_spare_age:
                reasons.append(f"{party}: spare just started")
            elif spare_waiting(proc.pid) is False:
                reasons.append(f"{party}: spare still importing secretflow")
        if not reasons:
            procs = {
                pid: pr
                for sets in snap.values()
                for k in ("ray", "tree")
                for pid, pr in sets[k].items()
            }
            c0 = ProcessView.cpu_seconds(procs)
            time.sleep(1.0)
            busy = ProcessView.cpu_seconds(procs) - c0
            if busy < 0.25:
                return time.perf_counter() - t0
            reasons.append(f"our processes busy ({busy:.2f} CPU-s/s)")
        if time.perf_counter() - t0 > timeout:
            console.log(
                f"[yellow]not settled after {timeout:.0f}s ({'; '.join(reasons)}); going on"
            )
            return time.perf_counter() - t0
        msg = "; ".join(reasons)
        if msg != last:
            console.log(f"  waiting: {msg}")
            last = msg
        time.sleep(0.5)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def short(message: Any, limit: int = 400) -> str:
    """One readable line of an error message: ANSI codes gone, the last lines kept."""
    text = _ANSI.sub("", str(message or ""))
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and set(ln.strip()) != {"^"}]
    text = " | ".join(lines[-3:]) if len(lines) > 3 else " | ".join(lines)
    return text if len(text) <= limit else "…" + text[-limit:]


def _events(fed, party: str, trid: str) -> list:
    from node.status import read_events

    with contextlib.suppress(Exception):
        return read_events(fed.nodes[party].redis(), trid)
    return []


def run_stack(
    fed,
    ds: Dataset,
    protocol: str,
    tag: str,
    view: ProcessView,
    *,
    timeout: float,
    teardown_wait: float,
    interval: float,
) -> dict[str, Any]:
    from deploy.local.driver import psi_params, send

    in_name, out_name = f"in/{tag}.csv", f"out/{tag}.csv"
    for p in PARTIES:  # a fresh copy per job (see the floor)
        dst = fed.nodes[p].data_root / in_name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ds.files[p], dst)
    per_party = psi_params(
        fed,
        PARTIES,
        keys={p: [KEY] for p in PARTIES},
        inputs=dict.fromkeys(PARTIES, in_name),
        outputs=dict.fromkeys(PARTIES, out_name),
        receiver=RECEIVER,
        protocol=protocol,
    )
    exe = per_party[RECEIVER]["execution_id"]
    sampler = MemorySampler(view, interval)
    sampler.start()
    try:
        t_wall = time.time()
        t0 = time.perf_counter()
        results = send(fed, per_party)
        ready_at: dict[str, float] = {}
        while len(ready_at) < len(results):
            for p, res in results.items():
                if p not in ready_at and res.ready():
                    ready_at[p] = time.perf_counter()
            if time.perf_counter() - t0 > timeout:
                for res in results.values():
                    with contextlib.suppress(Exception):
                        res.revoke(terminate=True)
                raise StackError(f"stack job {exe} not done within {timeout:.0f}s")
            time.sleep(0.05)
        outcomes: dict[str, dict] = {}
        for p, res in results.items():
            try:
                outcomes[p] = res.get(timeout=30)
            except Exception as exc:
                got = getattr(exc, "result", None)
                outcomes[p] = (
                    got
                    if isinstance(got, dict) and got
                    else {
                        "status": "error",
                        "error": {"type": type(exc).__name__, "message": str(exc)},
                    }
                )
        # teardown.json is written after a successful job only (node/runner.py)
        succeeded = [p for p in PARTIES if outcomes[p].get("status") == "success"]
        teardown: dict[str, dict] = {}
        teardown_at: dict[str, float] = {}
        end = time.perf_counter() + teardown_wait
        while len(teardown) < len(succeeded) and time.perf_counter() < end:
            for p in succeeded:
                f = fed.nodes[p].state_dir / "jobs" / f"{exe}.{p}" / "teardown.json"
                if p not in teardown and f.exists():
                    with contextlib.suppress(ValueError, OSError):
                        teardown[p] = json.loads(f.read_text())
                        teardown_at[p] = time.perf_counter()
            time.sleep(0.1)
    finally:
        sampler.stop()

    t_results = max(ready_at.values())
    out: dict[str, Any] = {
        "execution_id": exe,
        "wall_s": round(t_results - t0, 3),
        "sampler_cpu_s": round(sampler.cpu_s, 3),
        "failed": len(succeeded) < len(PARTIES),
        "parties": {},
        "warnings": [],
    }
    errors = []
    for p in PARTIES:
        res = outcomes[p]
        metrics = res.get("performance_metrics") or {}
        wall = round(ready_at[p] - t0, 3)
        events = _events(fed, p, f"{exe}.{p}")
        stages = {}
        for ev in events:
            name = ev.data.stage or ev.status.value.lower()
            stages.setdefault(str(name), round(ev.timestamp.timestamp() - t_wall, 3))
        td = teardown.get(p)
        entry = {
            "status": res.get("status"),
            "error": res.get("error"),
            "result": res.get("result"),
            "wall_s": wall,
            "performance_metrics": metrics,
            "queue_handoff_s": round(wall - metrics["total_s"], 3)
            if "total_s" in metrics
            else None,
            "stage_offsets_s": stages,
            "teardown": td,
            "teardown_s": (td or {}).get("teardown_s"),
            "teardown_error": (td or {}).get("error"),
            "teardown_written_after_result_s": (
                round(teardown_at[p] - ready_at[p], 3) if p in teardown_at else None
            ),
            "memory_job": sampler.peaks(p, t0, ready_at[p]),
            "memory_with_teardown": sampler.peaks(p, t0, teardown_at.get(p, float("inf"))),
            "driver_pid": sampler.driver_pid[p],
        }
        out["parties"][p] = entry
        if res.get("status") != "success":
            err = res.get("error") or {}
            errors.append(f"stack {p}: {err.get('type')}: {short(err.get('message'))}")
        elif td is None:
            out["warnings"].append(f"{p}: no teardown.json within {teardown_wait:.0f}s")
        elif "teardown_s" not in td:
            out["warnings"].append(f"{p}: teardown reported no teardown_s: {td}")
    rec = outcomes[RECEIVER]
    if rec.get("status") == "success":
        errors.append(check_count((rec.get("result") or {}).get("intersection_count"), ds, "stack"))
        errors.append(check_output(fed.nodes[RECEIVER].data_root / out_name, ds))
    out["errors"] = [e for e in errors if e]
    # free the data roots (1M rows: ~13 MB per copy)
    for p in PARTIES:
        with contextlib.suppress(OSError):
            (fed.nodes[p].data_root / in_name).unlink()
    return out


# --------------------------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------------------------
def _f(v: Any, unit: str = "", digits: int = 2) -> str:
    if v is None:
        return "—"
    if isinstance(v, float | int):
        return f"{v:,.{digits}f}{unit}"
    return str(v)


def _mb(v: Any) -> str:
    return "—" if v is None else f"{v:,.0f} MB"


def teardown_text(entry: dict[str, Any] | None) -> str:
    """teardown_s from teardown.json; if the teardown failed, result → teardown.json marked *."""
    if not entry:
        return "—"
    if entry.get("teardown_s") is not None:
        return _f(entry["teardown_s"], " s")
    after = entry.get("teardown_written_after_result_s")
    return f"[yellow]{_f(after, ' s')} *[/]" if after is not None else "—"


def config_table(run: dict[str, Any]) -> Table:
    rows, proto, overlap = run["rows"], run["protocol"], run["overlap"]
    floor = run.get("floor") or {}
    stack = run.get("stack") or {}
    fp = floor.get("parties", {})
    stack_failed = bool(stack.get("failed"))
    sp = {} if stack_failed else stack.get("parties", {})
    ratio = run.get("ratio")
    td_errors = {e["teardown_error"] for e in sp.values() if e.get("teardown_error")}
    title = f"{proto} · {rows:,} rows per party · {overlap:,} in common"
    stack_wall = "[red]failed[/]" if stack_failed else _f(stack.get("wall_s"), " s")
    floor_wall = "[red]failed[/]" if run.get("floor_failed_attempts") and not floor else None
    caption = (
        f"floor wall {floor_wall or _f(floor.get('wall_s'), ' s')} · stack wall {stack_wall}"
        f" · ratio stack/floor [bold]{_f(ratio, '×', 1)}[/]"
    )
    for side in ("floor", "stack"):
        failed = run.get(f"{side}_failed_attempts") or []
        if failed:
            caption += f"\n[yellow]{side}: {len(failed)} failed attempt(s) before this one[/]"
            if not run.get(side) or (run.get(side) or {}).get("failed"):
                caption = caption.replace("before this one", "(no successful run)")
    for err in sorted(td_errors):
        caption += f"\n[yellow]* teardown failed ({err}); shown: result → teardown.json[/]"
    for e in run.get("errors") or []:
        caption += f"\n[red]CHECK FAILED: {short(e, 300)}[/]"
    for e in run.get("failures") or []:
        caption += f"\n[yellow]run failed: {short(e, 300)}[/]"
    t = Table(title=title, caption=caption, title_justify="left", caption_justify="left")
    t.add_column("")
    for p in PARTIES:
        t.add_column(f"floor {p}", justify="right")
    for p in PARTIES:
        t.add_column(f"stack {p}", justify="right")

    def fl(p: str, k: str) -> Any:
        return fp.get(p, {}).get(k)

    def st(p: str, *path: str) -> Any:
        v: Any = sp.get(p, {})
        for k in path:
            v = (v or {}).get(k)
        return v

    def row(label: str, floor_vals: list[str], stack_vals: list[str]) -> None:
        t.add_row(label, *floor_vals, *stack_vals)

    row(
        "wall: start → result",
        [_f(fl(p, "wall_s"), " s") for p in PARTIES],
        [_f(st(p, "wall_s"), " s") for p in PARTIES],
    )
    row(
        "  ratio stack/floor (per party)",
        ["", ""],
        [
            _f(st(p, "wall_s") / fl(p, "wall_s"), "×", 1)
            if st(p, "wall_s") and fl(p, "wall_s")
            else "—"
            for p in PARTIES
        ],
    )
    row(
        "  start-up+import │ queue+handoff",
        [
            _f((fl(p, "pre_main_s") or 0) + (fl(p, "import_s") or 0), " s")
            if fl(p, "wall_s")
            else "—"
            for p in PARTIES
        ],
        [_f(st(p, "queue_handoff_s"), " s") for p in PARTIES],
    )
    row(
        "  link connect │ cluster init",
        [_f(fl(p, "link_s"), " s") for p in PARTIES],
        [_f(st(p, "performance_metrics", "cluster_init_s"), " s") for p in PARTIES],
    )
    row(
        "  — │ device init (SPU)",
        ["—", "—"],
        [_f(st(p, "performance_metrics", "device_init_s"), " s") for p in PARTIES],
    )
    row(
        "  psi │ algorithm",
        [_f(fl(p, "psi_s"), " s") for p in PARTIES],
        [_f(st(p, "performance_metrics", "algorithm_s"), " s") for p in PARTIES],
    )
    row(
        "teardown (after the result)",
        [_f(fl(p, "stop_link_s"), " s") for p in PARTIES],
        [teardown_text(sp.get(p)) for p in PARTIES],
    )
    row(
        "peak RSS: process │ driver",
        [_mb(fl(p, "maxrss_mb")) for p in PARTIES],
        [_mb(st(p, "memory_job", "driver_mb")) for p in PARTIES],
    )
    row(
        "peak RSS: whole party",
        [_mb(fl(p, "maxrss_mb")) for p in PARTIES],
        [_mb(st(p, "memory_job", "total_mb")) for p in PARTIES],
    )
    row(
        "  of which Ray session │ Celery",
        ["", ""],
        [
            f"{_mb(st(p, 'memory_job', 'ray_mb'))} │ {_mb(st(p, 'memory_job', 'celery_mb'))}"
            if st(p, "memory_job")
            else "—"
            for p in PARTIES
        ],
    )

    def count(v: Any) -> str:
        if v is None or v == -1:
            return "—"
        mark = "[green]✓[/]" if v == overlap else "[red]✗[/]"
        return f"{v:,} {mark}"

    row(
        "intersection (receiver)",
        [count(fl(p, "intersection_count")) for p in PARTIES],
        [count((st(p, "result") or {}).get("intersection_count")) for p in PARTIES],
    )
    return t


def summary_table(runs: list[dict[str, Any]]) -> Table:
    t = Table(
        title=(
            "summary: floor = bare PSI library, stack = node stack; cluster/devices/algorithm/"
            "teardown = slower party; MB = peak RSS alice/bob"
        ),
        caption=(
            "* teardown failed: time from the result to teardown.json"
            if any(
                e.get("teardown_error")
                for r in runs
                for e in ((r.get("stack") or {}).get("parties") or {}).values()
            )
            else None
        ),
        title_justify="left",
        caption_justify="left",
    )
    for name in (
        "rows",
        "protocol",
        "floor wall",
        "stack wall",
        "ratio",
        "cluster",
        "devices",
        "algorithm",
        "teardown",
        "driver MB a/b",
        "party MB a/b",
        "floor MB a/b",
        "check",
    ):
        t.add_column(name, justify="right", no_wrap=True)
    for run in runs:
        floor = run.get("floor") or {}
        stack = run.get("stack") or {}
        sp = {} if stack.get("failed") else stack.get("parties", {})

        def mx(key: str, sp=sp) -> Any:
            vals = [(sp[p].get("performance_metrics") or {}).get(key) for p in sp]
            vals = [v for v in vals if v is not None]
            return max(vals) if vals else None

        tds = [sp[p].get("teardown_s") or sp[p].get("teardown_written_after_result_s") for p in sp]
        tds = [v for v in tds if v is not None]
        td_err = any(sp[p].get("teardown_error") for p in sp)
        mem = {
            k: " / ".join(
                _mb((sp.get(p, {}).get("memory_job") or {}).get(k)).removesuffix(" MB")
                for p in PARTIES
            )
            for k in ("driver_mb", "total_mb")
        }
        frss = " / ".join(
            _mb(floor.get("parties", {}).get(p, {}).get("maxrss_mb")).removesuffix(" MB")
            for p in PARTIES
        )
        ok = (
            "[red]MISMATCH[/]"
            if run.get("errors")
            else "[yellow]run failed[/]"
            if run.get("failures")
            else "[green]ok[/]"
        )
        t.add_row(
            f"{run['rows']:,}",
            run["protocol"],
            "[red]failed[/]"
            if run.get("floor_failed_attempts") and not floor
            else _f(floor.get("wall_s"), " s"),
            "[red]failed[/]" if stack.get("failed") else _f(stack.get("wall_s"), " s"),
            _f(run.get("ratio"), "×", 1),
            _f(mx("cluster_init_s"), " s"),
            _f(mx("device_init_s"), " s"),
            _f(mx("algorithm_s"), " s"),
            _f(max(tds) if tds else None, " s") + (" *" if td_err else ""),
            mem["driver_mb"],
            mem["total_mb"],
            frss,
            ok,
        )
    return t


def machine_info() -> dict[str, Any]:
    def ver(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    vm = psutil.virtual_memory()
    return {
        "hostname": platform.node(),
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gb": round(vm.total / 1024**3, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "versions": {n: ver(n) for n in ("secretflow", "spu", "ray", "celery", "redis")},
    }


def _cpu_model() -> str | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return None


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="bench/psi_node.py",
        description=(
            "Two-party PSI: the bare PSI library between two processes (the floor) vs. the same "
            "job through each party's queue and SecretFlow Ray production mode (the stack), "
            "side by side in one run. Prints a table per (rows, protocol) and a summary, and "
            "writes the numbers to bench/results/psi_node-<timestamp>.json."
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
        help="how long to wait for each party's teardown.json after a job (default: %(default)s)",
    )
    ap.add_argument(
        "--settle-timeout",
        type=float,
        default=180,
        help="max wait before a job for the spare job processes to be ready (default: %(default)s)",
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
        help="rows per party of the unmeasured warm-up job (default: %(default)s)",
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
    if not 0 < args.overlap <= 1:
        ap.error("--overlap must be in (0, 1]")
    if args.skip_floor and args.skip_stack:
        ap.error("--skip-floor and --skip-stack leave nothing to measure")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
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
            "overlap": args.overlap,
            "seed": args.seed,
            "receiver": RECEIVER,
            "parties": PARTIES,
            "sample_interval_s": args.sample_interval,
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
            certs = rundir / "floor-certs"
            init_federation(certs, PARTIES)
            alloc = PortAllocator()
            for rows, proto in configs:
                run = runs[(rows, proto)]
                label = f"floor {proto} {rows:,} rows"
                run["floor_failed_attempts"] = []
                for attempt in range(1, args.retries + 2):
                    what = f"{label}{f' (attempt {attempt})' if attempt > 1 else ''}"
                    with console.status(
                        f"{what}: two processes, brpc link with mTLS + spu.psi.psi"
                    ):
                        run["loadavg_before_floor"] = [round(x, 2) for x in os.getloadavg()]
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

        # ---- (b) stack ------------------------------------------------------------------
        if not args.skip_stack:
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

            warm = dataset(workdir, args.warmup_rows, args.overlap, args.seed)
            with console.status("warm-up: waiting for the spare job processes"):
                wait_settled(view, args.settle_timeout)
            with console.status(f"warm-up job ({args.warmup_rows:,} rows, RR22, not measured)"):
                w = run_stack(
                    fed,
                    warm,
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

            for rows, proto in configs:
                run = runs[(rows, proto)]
                label = f"stack {proto} {rows:,} rows"
                run["stack_failed_attempts"] = []
                for attempt in range(1, args.retries + 2):
                    what = f"{label}{f' (attempt {attempt})' if attempt > 1 else ''}"
                    with console.status(f"{what}: waiting for the spare job processes / quiet"):
                        run["settle_s"] = round(wait_settled(view, args.settle_timeout), 1)
                    with console.status(
                        f"{what}: job through both queues (Ray production mode, mTLS)"
                    ):
                        run["loadavg_before_stack"] = [round(x, 2) for x in os.getloadavg()]
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
                    if not st["failed"]:
                        break
                    run["stack_failed_attempts"].append(st)
                    retry = "; retrying" if attempt <= args.retries else ""
                    console.log(
                        f"[yellow]{what} failed after {st['wall_s']:.0f}s: "
                        f"{'; '.join(st['errors'])}{retry}"
                    )
                run["stack"] = st
                for w_ in st["warnings"]:
                    console.log(f"[yellow]{label}: {w_}")
                if st["failed"]:
                    run["failures"].append(f"stack: {'; '.join(st['errors'])}")
                    console.print(config_table(run))
                    continue
                run["errors"] += st["errors"]
                if run.get("floor"):
                    run["ratio"] = round(st["wall_s"] / run["floor"]["wall_s"], 2)
                m = st["parties"][RECEIVER]["performance_metrics"]
                got = (st["parties"][RECEIVER].get("result") or {}).get("intersection_count")
                console.log(
                    f"{label}: wall {st['wall_s']:.2f}s (cluster {m.get('cluster_init_s')}s, "
                    f"devices {m.get('device_init_s')}s, algorithm {m.get('algorithm_s')}s), "
                    f"intersection {got:,}"
                    if isinstance(got, int)
                    else f"{label}: wall {st['wall_s']:.2f}s, intersection {got}"
                )
                for e in st["errors"]:
                    console.log(f"[red bold]CHECK FAILED: {e}")
                console.print(config_table(run))
        report["complete"] = True
    except KeyboardInterrupt:
        console.log("[red]interrupted: cleaning up")
        exit_code = 130
    except Exception as exc:
        console.log(f"[red bold]benchmark aborted: {type(exc).__name__}: {exc}")
        report["aborted"] = f"{type(exc).__name__}: {exc}"
        exit_code = 2
    finally:
        for proc in list(live):
            _kill(proc)
        if fed is not None:
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
    if args.skip_stack:  # the stack loop prints per-config tables as it goes
        for run in report["runs"]:
            console.print(config_table(run))
    if report["runs"]:
        console.print(summary_table(report["runs"]))
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
