"""The process that stands for this party's Ray head: `python -m node.rayhead.supervisor RAY
START COMMAND…` (node/rayhead/head.py builds the command; the standard library only, ≈10 MB).

`ray start --head --block` would stay in memory (≈190 MB: all of Ray imported) only to notice
that one of its processes died. This supervisor becomes the child subreaper of its tree, runs
`ray start --head` without `--block` and waits for it: Ray's own processes (GCS, raylet, log
monitor) outlive it and are handed to the supervisor as their parent. From then on it

  - exits 1 as soon as one of them exits (after stopping the others): the head is broken, and
    whoever started the head (systemd, `node ray-head start`'s caller) sees it gone, as with
    `ray start --block`;
  - on SIGTERM or SIGINT stops all of its processes (SIGTERM, SIGKILL after `STOP_GRACE_S`) and
    exits 0;
  - reaps whatever else is handed to it (Ray workers whose raylet is gone).

Its exit code is `ray start`'s when that fails.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time

PR_SET_CHILD_SUBREAPER = 36
STOP_GRACE_S = 2.0  # Ray itself gives its processes 1 s before SIGKILL
READY = "watching"  # the line that says the head is up (node/rayhead/head.py waits for it)


def say(message: str) -> None:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    print(f"{stamp} partyline ray-head supervisor: {message}", flush=True)


def proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state, ppid, pgrp, session, …);
    None when the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return None
    return stat[stat.rindex(")") + 2 :].split()


def _parents() -> dict[int, int]:
    """pid → parent pid of every process."""
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := proc_stat(int(entry))):
            out[int(entry)] = int(fields[1])
    return out


def _command(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return "?"
    args = [a.decode(errors="replace") for a in argv if a]
    # a Python process by its script (log_monitor.py), anything else by its program (raylet,
    # whose flags name the agents' scripts)
    program = args[0].rsplit("/", 1)[-1] if args else "?"
    if not program.startswith("python"):
        return program
    return next((a for a in args[1:] if a.endswith(".py")), program).rsplit("/", 1)[-1]


def _children() -> dict[int, str]:
    """pid → name of this process's children."""
    me = os.getpid()
    return {pid: _command(pid) for pid, ppid in _parents().items() if ppid == me}


def _descendants() -> list[int]:
    """Every process under this one (by parent links: as the subreaper, all of Ray's)."""
    parents = _parents()
    below, frontier = [], [os.getpid()]
    while frontier:
        level = [pid for pid, ppid in parents.items() if ppid in frontier]
        below.extend(level)
        frontier = level
    return below


class Supervisor:
    def __init__(self, command: list[str]) -> None:
        self.command = command
        self.core: dict[int, str] = {}
        self.stopping = False
        self.code = 0

    def _kill_all(self, sig: int) -> None:
        for pid in _descendants():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def stop(self, why: str, code: int) -> None:
        if self.stopping:
            return
        self.stopping, self.code = True, code
        say(f"{why}; stopping the head's processes")
        self._kill_all(signal.SIGTERM)
        signal.signal(signal.SIGALRM, lambda *_: self._kill_all(signal.SIGKILL))
        signal.setitimer(signal.ITIMER_REAL, STOP_GRACE_S)

    def run(self) -> int:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            say(f"cannot become a child subreaper (errno {ctypes.get_errno()})")
            return 1
        signal.signal(signal.SIGTERM, lambda *_: self.stop("SIGTERM received", 0))
        signal.signal(signal.SIGINT, lambda *_: self.stop("SIGINT received", 0))
        starter = subprocess.Popen(self.command, stdin=subprocess.DEVNULL)
        code = starter.wait()
        if code != 0 and not self.stopping:
            self.stop(f"`ray start` exited with code {code}", code)
        self.core = _children()
        if not self.stopping:
            if not self.core:
                say("`ray start` left no process behind")
                return 1
            say(f"{READY} " + ", ".join(f"{name} ({pid})" for pid, name in self.core.items()))
        while True:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                say(f"the head's processes have ended; exit code {self.code}")
                return self.code
            if pid in self.core and not self.stopping:
                self.stop(f"{self.core[pid]} (pid {pid}) exited: {_describe(status)}", 1)


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"


def main() -> None:
    if len(sys.argv) < 2:
        print("usage: python -m node.rayhead.supervisor RAY START COMMAND…", file=sys.stderr)
        raise SystemExit(2)
    raise SystemExit(Supervisor(sys.argv[1:]).run())


if __name__ == "__main__":
    main()
