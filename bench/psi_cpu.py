"""Where the CPU goes while a stack job runs (bench/psi_node.py): every process's user+system
time at the job's start and at its end, by party and by process, and the machine's busy time
over the same window (/proc/stat). On a 2-core machine a CPU-bound PSI (ECDH) shares the cores
with everything else the parties run: this is what "everything else" costs, measured.

The floor's processes report their own CPU (`cpu_s`, getrusage) in bench/floor_psi.py.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import psutil

from bench.psi_memory import ProcessView, process_label

TOP = 10  # processes listed per job


def _busy_s() -> float | None:
    """The machine's non-idle CPU time so far (all cores), from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    steal = fields[7] if len(fields) > 7 else 0
    return (sum(fields[:8]) - idle - steal) / os.sysconf("SC_CLK_TCK")


class CpuWindow:
    """`start()` before the job is sent, `stop()` once every party has its result."""

    def __init__(self, view: ProcessView) -> None:
        self.view = view
        self._t0: dict[tuple[int, float], float] = {}
        self._busy0: float | None = None

    @staticmethod
    def _times() -> dict[tuple[int, float], tuple[psutil.Process, float]]:
        out = {}
        for proc in psutil.process_iter():
            with contextlib.suppress(psutil.Error):
                t = proc.cpu_times()
                out[(proc.pid, proc.create_time())] = (proc, t.user + t.system)
        return out

    def start(self) -> None:
        self._busy0 = _busy_s()
        self._t0 = {key: cpu for key, (_, cpu) in self._times().items()}

    def stop(self, wall_s: float) -> dict[str, Any]:
        """Per party and per process (core-seconds) over the window; a process started during
        it counts from zero, one that ended during it is missed (the job's are still up)."""
        busy1 = _busy_s()
        now = self._times()
        party_of = {
            pid: party
            for party, sets in self.view.snapshot().items()
            for k in ("ray", "tree")
            for pid in sets[k]
        }
        me = os.getpid()
        rows = []
        for (pid, created), (proc, cpu) in now.items():
            used = cpu - self._t0.get((pid, created), 0.0)
            if used < 0.005:
                continue
            owner = party_of.get(pid) or ("bench" if pid == me else "other")
            rows.append(
                {"pid": pid, "party": owner, "name": process_label(proc), "cpu_s": round(used, 2)}
            )
        rows.sort(key=lambda r: r["cpu_s"], reverse=True)
        by_party: dict[str, float] = {}
        for r in rows:
            by_party[r["party"]] = round(by_party.get(r["party"], 0.0) + r["cpu_s"], 2)
        busy = (
            round(busy1 - self._busy0, 2) if busy1 is not None and self._busy0 is not None else None
        )
        return {
            "window_s": round(wall_s, 3),
            "machine_busy_s": busy,
            "cores": os.cpu_count(),
            "by_party": by_party,
            "top": rows[:TOP],
        }


def cpu_line(mode: str, cpu: dict[str, Any] | None) -> str | None:
    """One line: the window, the machine's busy core-seconds, per party, the top processes."""
    if not cpu:
        return None
    parties = " · ".join(f"{p} {s:.1f}" for p, s in cpu["by_party"].items())
    top = " · ".join(f"{r['party']} {r['name']} {r['cpu_s']:.1f}" for r in cpu["top"])
    busy = cpu.get("machine_busy_s")
    return (
        f"  {mode} job window {cpu['window_s']:.1f} s × {cpu['cores']} cores, machine busy "
        f"{'—' if busy is None else f'{busy:.1f}'} core-s; by party: {parties}; top: {top}"
    )


def floor_cpu_line(floor: dict[str, Any] | None) -> str | None:
    if not floor or not floor.get("parties"):
        return None
    per = " · ".join(
        f"{p} {v['cpu_s']:.1f}" for p, v in floor["parties"].items() if v.get("cpu_s") is not None
    )
    return (
        f"  floor wall {floor.get('wall_s', 0):.1f} s, CPU core-s per process: {per}"
        if per
        else None
    )
