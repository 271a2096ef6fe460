"""The floor of bench/psi_node.py: the bare PSI library between two processes
(`python -m bench.floor_psi --rank 0|1`, one per party), started together with fresh ports."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.psi_common import (
    KEY,
    PARTIES,
    RECEIVER,
    REPO_ROOT,
    Dataset,
    check_count,
    check_output,
    kill_proc,
)
from deploy.local.ports import PortAllocator


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
            # SPU's bucket store goes to TMPDIR (a folder per run, like the node's scratch dir
            # in its data root), not /tmp, where nothing would remove it
            tmp = rundir / f"{p}.tmp"
            tmp.mkdir(exist_ok=True)
            with open(logs[p], "wb") as logf:
                starts[p] = time.perf_counter()
                procs[p] = subprocess.Popen(
                    cmd,
                    cwd=REPO_ROOT,
                    stdout=logf,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, "TMPDIR": str(tmp)},
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
            kill_proc(proc)
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
