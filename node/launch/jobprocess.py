"""A job's child process — `python -m node.sfjob.executor` (or a session driver) — and its message
pipe: spawned in its own process group, killed with its parent (PR_SET_PDEATHSIG), its
teardown reaped in the background after the result (node.launch.runner supervises the job).
One cold job process is kept pre-started (the "spare"): it has already imported secretflow
(~12 s) and waits for its job on stdin."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from node.launch.child_spec import (
    MSG_FD_ENV,
    ChildExited,
    ChildMessage,
    Closed,
    JobSpec,
    LineReader,
    Ready,
    encode,
)
from node.settings import NodeSettings

TEARDOWN_GRACE_S = 90.0  # after the result, how long the child may take to shut down


def die_with_parent() -> None:  # runs in the child between fork and exec
    os.setsid()
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class JobProcess:
    """One child `python -m node.sfjob.executor` and its message pipe (a `child_spec.JobChild`)."""

    def __init__(
        self, settings: NodeSettings, spawn_log: Path, module: str = "node.sfjob.executor"
    ) -> None:
        r, w = os.pipe()
        from node.dataroot.paths import scratch_dir

        env = dict(
            os.environ, **{MSG_FD_ENV: str(w), "TMPDIR": str(scratch_dir(settings.data_root))}
        )
        from node.logfiles import open_log

        self._spawn_log = open_log(spawn_log)  # rotated by size
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module],
            stdin=subprocess.PIPE,
            stdout=self._spawn_log,
            stderr=subprocess.STDOUT,
            pass_fds=(w,),
            env=env,
            preexec_fn=die_with_parent,
            close_fds=True,
        )
        os.close(w)
        self._r = r
        self._lines = LineReader(r, lambda n: os.read(r, n))
        self.ready = False
        self.created = time.monotonic()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def read_messages(self, timeout: float) -> list[ChildMessage]:
        """Messages available within `timeout` s ([] on timeout; [ChildExited()] at EOF)."""
        out = self._lines.read(timeout)
        self.ready = self.ready or any(isinstance(m, Ready) for m in out)
        return out

    def wait_ready(self, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while not self.ready and self.alive() and time.monotonic() < end:
            for msg in self.read_messages(min(0.5, max(0.0, end - time.monotonic()))):
                if isinstance(msg, ChildExited):
                    return False
        return self.ready

    def send_job(self, spec: JobSpec) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(encode(spec))
        self.proc.stdin.flush()

    def exit_code(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def finish(self, job_dir: Path) -> None:
        """After the result: the child tears down off the next job's path."""
        reap_in_background(self, job_dir)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            self.proc.wait(timeout=10)
        self.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._r)
        with contextlib.suppress(Exception):
            self._spawn_log.close()
        if self.proc.stdin:
            with contextlib.suppress(Exception):
                self.proc.stdin.close()


def reap_in_background(proc: JobProcess, job_dir: Path) -> None:
    """Let the child finish sf.shutdown off the critical path; kill it if it overruns."""

    def reap() -> None:
        end = time.monotonic() + TEARDOWN_GRACE_S
        info: Closed | ChildExited | None = None
        while info is None and time.monotonic() < end:
            msgs = proc.read_messages(min(1.0, max(0.0, end - time.monotonic())))
            info = next((m for m in msgs if isinstance(m, Closed | ChildExited)), None)
        if proc.alive():
            with contextlib.suppress(Exception):
                proc.proc.wait(timeout=5)
        record = info.model_dump(exclude_none=True) if info is not None else {}
        if proc.alive():
            record["killed_after_s"] = TEARDOWN_GRACE_S
        proc.kill()
        with contextlib.suppress(OSError):  # whole or not at all: readers poll for it
            tmp = job_dir / "teardown.json.tmp"
            tmp.write_text(json.dumps(record))
            os.replace(tmp, job_dir / "teardown.json")

    threading.Thread(target=reap, name="job-reaper", daemon=True).start()


class Spare:
    """The pre-started cold job process for the next job (one per pool process)."""

    def __init__(self) -> None:
        self._proc: JobProcess | None = None
        self._lock = threading.Lock()

    def keep(self, settings: NodeSettings) -> None:
        """Have one ready (when the node keeps a spare at all)."""
        if not settings.spare_runner:
            return
        with self._lock:
            if self._proc is None or not self._proc.alive():
                self._proc = spawn(settings)

    def discard(self) -> None:
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is not None:
            proc.kill()

    def take(self, settings: NodeSettings) -> JobProcess:
        """The spare if it is alive, else a new job process."""
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is not None and proc.alive():
            return proc
        if proc is not None:
            proc.close()
        return spawn(settings)


def spawn(settings: NodeSettings) -> JobProcess:
    return JobProcess(settings, settings.state_dir / "runner" / "spawn.log")


SPARE = Spare()
