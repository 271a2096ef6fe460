"""Which processes belong to each party, their memory while a job runs, and waiting until they
are quiet (bench/psi_node.py).

A party's processes are its Ray head session (every process whose session id is the head's
pid: GCS, raylet, Ray workers with RayFed's proxies and the SPU runtime actors) ∪ the tree of
its `python -m node worker` process, walked by parent → child links (not by process group or
session: the job processes, the session host and its drivers each call setsid). In that tree:

  executor        `python -m node.sfjob.executor`: a cold job process (the job's, or the spare)
  session host    `python -m node.sessions.host`, a child of the SecretFlow worker
  session driver  `python -m node.sessions.driver`, a child of the session host (a warm
                  session's driver, or the host's pre-started one while no session is up)
"""

from __future__ import annotations

import contextlib
import os
import platform
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from bench.psi_common import MB, console

ROLES = {
    "node.sfjob.executor": "executor",
    "node.sessions.host": "host",
    "node.sessions.driver": "session_driver",
}
PARTS = ("ray", "celery", "driver", "spare", "session")


def _role(proc: psutil.Process) -> str | None:
    try:
        cmd = proc.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None
    return next((role for mod, role in ROLES.items() if mod in cmd), None)


Procs = dict[int, psutil.Process]


class ProcessView:
    """Which processes belong to each party: its Ray head session ∪ its worker's tree."""

    def __init__(self, roots: dict[str, tuple[int, int]]) -> None:
        self.roots = roots  # party → (ray head pid = session id, worker pid)
        self._roles: dict[tuple[int, float], str | None] = {}

    def snapshot(self) -> dict[str, dict[str, Procs]]:
        """party → {"ray", "tree", "executors", "session", "session_drivers": {pid: proc}};
        "session" is the session host with everything under it."""
        by_pid: Procs = {}
        children: dict[int, list[int]] = {}
        sids: dict[int, int] = {}
        for proc in psutil.process_iter(["ppid"]):
            try:
                sids[proc.pid] = os.getsid(proc.pid)
            except OSError:
                continue
            by_pid[proc.pid] = proc
            children.setdefault(proc.info["ppid"] or 0, []).append(proc.pid)

        def subtree(roots: list[int]) -> Procs:
            out: Procs = {}
            stack = [pid for pid in roots if pid in by_pid]
            while stack:
                pid = stack.pop()
                if pid in out:
                    continue
                out[pid] = by_pid[pid]
                stack.extend(c for c in children.get(pid, []) if c in by_pid)
            return out

        out = {}
        for party, (head_sid, worker_pid) in self.roots.items():
            ray = {pid: by_pid[pid] for pid, sid in sids.items() if sid == head_sid}
            tree = subtree([worker_pid])
            roles: dict[str, Procs] = {r: {} for r in ROLES.values()}
            for pid, proc in tree.items():
                try:
                    key = (pid, proc.create_time())
                except psutil.Error:
                    continue
                role = self._roles[key] if key in self._roles else _role(proc)
                # a child just forked still shows its parent's command line (a session driver
                # would pass for a second session host): a role is kept only once it is settled
                if key not in self._roles and time.time() - key[1] > 2.0:
                    self._roles[key] = role
                if role:
                    roles[role][pid] = proc
            session = subtree(list(roles["host"]))
            out[party] = {
                "ray": ray,
                "tree": tree,
                "executors": roles["executor"],
                "session": session,
                "session_drivers": {p: pr for p, pr in roles["session_driver"].items()},
            }
        return out

    @staticmethod
    def cpu_seconds(procs: Procs) -> float:
        total = 0.0
        for proc in procs.values():
            with contextlib.suppress(psutil.Error):
                t = proc.cpu_times()
                total += t.user + t.system
        return total


def process_label(proc: psutil.Process) -> str:
    """A short name: the Ray worker's title (ray::SPURuntime), `-m` module, script or binary."""
    try:
        cmd = proc.cmdline()
    except psutil.Error:
        return "?"
    if not cmd:
        return "?"
    if cmd[0].startswith("ray::"):
        return cmd[0].split()[0]
    if "-m" in cmd[:-1]:
        i = cmd.index("-m")
        roles = [a.removeprefix("--") for a in cmd[i + 2 :] if a.startswith("--role")]
        return " ".join([cmd[i + 1], *roles])
    if not Path(cmd[0]).name.startswith("python"):  # raylet, gcs_server (their flags name scripts)
        return Path(cmd[0]).name
    script = next((a for a in cmd[1:] if a.endswith(".py")), None)
    return "/".join(Path(script).parts[-2:]) if script else Path(cmd[0]).name


TOP_MIN_RSS = 20 * MB  # processes shown in a peak's "top" list
SNAPSHOT_EVERY_S = 1.0  # how often the sampler finds each party's processes again


def _rss(proc: psutil.Process) -> int:
    try:
        return proc.memory_info().rss
    except psutil.Error:
        return 0


def _pss(proc: psutil.Process) -> int:
    """Proportional set size: a page shared by n processes counts 1/n in each (libspu, Ray's
    object store), so PSS adds up to what the party really takes; RSS counts it n times."""
    try:
        return proc.memory_full_info().pss
    except psutil.Error:
        return 0


class MemorySampler(threading.Thread):
    """RSS per party every `interval` s, split into disjoint parts (PARTS): "driver" = the
    job's driver (cold: the job's executor; warm: the session's driver, given), "spare" =
    other executors, "session" = the session host and everything under it but the driver,
    "ray" = the Ray head session, "celery" = the rest of the worker's tree."""

    def __init__(
        self, view: ProcessView, interval: float, drivers: dict[str, int] | None = None
    ) -> None:
        super().__init__(name="memory-sampler", daemon=True)
        self.view = view
        self.interval = interval
        self.samples: list[tuple[float, str, dict[str, Any]]] = []
        self.fixed = drivers is not None
        self.driver_pid: dict[str, int | None] = {p: (drivers or {}).get(p) for p in view.roots}
        self._halt = threading.Event()
        self.cpu_s = 0.0
        # the largest RSS total so far per party: PSS (costly to read) is taken at each new one,
        # so the peak of any window that starts with the sampler has its PSS
        self._max_rss: dict[str, int] = {}
        self._snap: dict[str, dict[str, Procs]] | None = None
        self._snap_at = 0.0

    def run(self) -> None:
        while not self._halt.is_set():
            t = time.perf_counter()
            with contextlib.suppress(Exception):
                self._sample(t)
            self._halt.wait(max(0.0, self.interval - (time.perf_counter() - t)))
        self.cpu_s = time.thread_time()

    def _sets(self, t: float) -> dict[str, dict[str, Procs]]:
        """Which processes are each party's, found again every SNAPSHOT_EVERY_S (walking every
        process of the machine is most of the sampler's cost; a process born meanwhile is
        picked up within that time, one that ended reads 0)."""
        if self._snap is None or t - self._snap_at >= SNAPSHOT_EVERY_S:
            self._snap, self._snap_at = self.view.snapshot(), t
        return self._snap

    def _sample(self, t: float) -> None:
        for party, sets in self._sets(t).items():
            execs = sets["executors"]
            if not self.fixed and self.driver_pid[party] is None and execs:
                # the job process is the oldest one: a new spare is started only after it
                self.driver_pid[party] = min(execs, key=lambda pid: execs[pid].create_time())
            driver = self.driver_pid[party]
            union = {**sets["ray"], **sets["tree"]}
            rss = {pid: _rss(proc) for pid, proc in union.items()}
            session = set(sets["session"]) - {driver}
            spare = set(execs) - {driver}
            celery = set(sets["tree"]) - set(execs) - session - {driver}
            total = sum(rss.values())
            pss = None
            if total > self._max_rss.get(party, 0):
                self._max_rss[party] = total
                pss = sum(_pss(proc) for proc in union.values())
            self.samples.append(
                (
                    t,
                    party,
                    {
                        "total": total,
                        "pss": pss,
                        "driver": rss.get(driver, 0) if driver else 0,
                        "ray": sum(rss[pid] for pid in sets["ray"]),
                        "celery": sum(rss[pid] for pid in celery),
                        "spare": sum(rss[pid] for pid in spare),
                        "session": sum(rss[pid] for pid in session),
                        "processes": len(union),
                        "top": [  # (a Ray worker's title changes: named when seen)
                            (pid, rss[pid], process_label(union[pid]))
                            for pid in sorted(rss, key=rss.__getitem__, reverse=True)[:14]
                            if rss[pid] >= TOP_MIN_RSS
                        ],
                    },
                )
            )

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)

    def peaks(self, party: str, start: float, end: float) -> dict[str, Any]:
        """Each part's own peak (`<part>_mb`; peaks of parts need not add up to the total's),
        and the parts at the moment of the total's peak (`at_peak`)."""
        rows = [s for t, p, s in self.samples if p == party and start <= t <= end]
        if not rows:
            return {}
        out: dict[str, Any] = {
            f"{k}_mb": round(max(r[k] for r in rows) / MB, 1)
            for k in rows[0]
            if k not in ("processes", "top", "pss")
        }
        out["processes"] = max(r["processes"] for r in rows)
        out["samples"] = len(rows)
        top = max(rows, key=lambda r: r["total"])
        out["at_peak"] = {f"{k}_mb": round(top[k] / MB, 1) for k in ("total", *PARTS)}
        out["at_peak"]["pss_mb"] = round(top["pss"] / MB, 1) if top.get("pss") else None
        out["at_peak"]["top"] = [
            {"pid": pid, "name": name, "mb": round(rss / MB, 1)} for pid, rss, name in top["top"]
        ]
        return out


# --------------------------------------------------------------------------------------------
# waiting until a job can be measured
# --------------------------------------------------------------------------------------------
def spare_waiting(pid: int) -> bool | None:
    """True if the process's main thread is blocked in read(0, …): a job process or session
    driver that has imported secretflow and waits for its (next) job on stdin. None if the
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


def _not_idle(proc: psutil.Process, what: str, min_age: float) -> str | None:
    """Why `proc` (a job process or session driver) is not yet idle on stdin, or None."""
    try:
        age = time.time() - proc.create_time()
    except psutil.Error:
        return f"{what} vanished"
    if age < min_age:
        return f"{what} just started"
    if spare_waiting(proc.pid) is False:
        return f"{what} busy (importing secretflow or running)"
    return None


def _reasons(
    snap: dict[str, dict[str, Procs]], mode: str, drivers: dict[str, int] | None, min_age: float
) -> list[str]:
    reasons = []
    for party, sets in snap.items():
        execs, sdrivers = sets["executors"], sets["session_drivers"]
        if mode == "cold":  # exactly one spare job process, idle
            if len(execs) != 1:
                reasons.append(f"{party}: {len(execs)} job processes")
                continue
            why = _not_idle(next(iter(execs.values())), "spare", min_age)
            if why:
                reasons.append(f"{party}: {why}")
            continue
        # warm: any cold job process left must be idle; the session drivers as below
        for proc in execs.values():
            why = _not_idle(proc, "job process", min_age)
            if why:
                reasons.append(f"{party}: {why}")
        if mode == "warm-new":  # no session: the host's one pre-started driver, idle
            if len(sdrivers) != 1:
                reasons.append(f"{party}: {len(sdrivers)} session drivers (want the host's spare)")
                continue
            why = _not_idle(next(iter(sdrivers.values())), "host's spare driver", min_age)
        else:  # "warm": the session's driver only, idle between its jobs
            want = (drivers or {}).get(party)
            if set(sdrivers) != {want}:
                reasons.append(f"{party}: session drivers {sorted(sdrivers)}, want only {want}")
                continue
            why = _not_idle(sdrivers[want], "session driver", 0.0)
        if why:
            reasons.append(f"{party}: {why}")
    return reasons


def wait_settled(
    view: ProcessView,
    timeout: float,
    mode: str = "cold",
    drivers: dict[str, int] | None = None,
    min_spare_age: float = 5.0,
) -> float:
    """Wait until the parties' job processes are in place and our processes are quiet
    (< 0.25 CPU-s per s, both parties together). Returns the seconds waited.

    mode "cold": every party has exactly one spare job process, idle on stdin.
    mode "warm-new": before a session's first job: the session host's pre-started driver.
    mode "warm": before a later job of a session: only the session's driver (`drivers`)."""
    t0 = time.perf_counter()
    last = ""
    while True:
        snap = view.snapshot()
        reasons = _reasons(snap, mode, drivers, min_spare_age)
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
