"""Shared pieces of bench/psi_node.py: constants, the console, the data sets and their checks."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import platform
import random
import re
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script: `python bench/psi_node.py`
    sys.path.insert(0, str(REPO_ROOT))

import psutil  # noqa: E402
from rich.console import Console  # noqa: E402

PARTIES = ["alice", "bob"]
RECEIVER = "alice"
KEY = "uid"
RESULTS_DIR = REPO_ROOT / "bench" / "results"
DEFAULT_WORKDIR = REPO_ROOT / "var" / "bench"
MB = 1024 * 1024
STACK_MODES = ("cold", "warm")

# wide enough for the tables when the output goes to a file or pipe
console = Console(highlight=False, width=None if sys.stdout.isatty() else 180)


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
# small helpers
# --------------------------------------------------------------------------------------------
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def short(message: Any, limit: int = 400) -> str:
    """One readable line of an error message: ANSI codes gone, the last lines kept."""
    text = _ANSI.sub("", str(message or ""))
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and set(ln.strip()) != {"^"}]
    text = " | ".join(lines[-3:]) if len(lines) > 3 else " | ".join(lines)
    return text if len(text) <= limit else "…" + text[-limit:]


def kill_proc(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    with contextlib.suppress(Exception):
        proc.wait(timeout=10)


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


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
        "loadavg_at_start": loadavg(),
        "versions": {n: ver(n) for n in ("secretflow", "spu", "ray", "celery", "redis")},
    }


def _cpu_model() -> str | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return None
