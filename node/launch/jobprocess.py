"""A job's child process — `python -m node.sfjob.executor` (or a session driver) — and its message
pipe: spawned in its own process group, killed with its parent (PR_SET_PDEATHSIG), its
teardown reaped in the background after the result (node.launch.runner supervises the job)."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from node.settings import NodeSettings
from node.sfjob.executor import MSG_FD_ENV

TEARDOWN_GRACE_S = 90.0  # after the result, how long the child may take to shut down


def die_with_parent() -> None:  # runs in the child between fork and exec
    os.setsid()
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class JobProcess:
    """One child `python -m node.sfjob.executor` and its message pipe."""

    def __init__(
        self, settings: NodeSettings, spawn_log: Path, module: str = "node.sfjob.executor"
    ) -> None:
        r, w = os.pipe()
        from node.dataroot.paths import scratch_dir

        env = dict(
            os.environ, **{MSG_FD_ENV: str(w), "TMPDIR": str(scratch_dir(settings.data_root))}
        )
        from node.worker.housekeeping import open_log

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
        self._buf = b""
        self.ready = False
        self.created = time.monotonic()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def read_messages(self, timeout: float) -> list[dict[str, Any]]:
        """Messages available within `timeout` s ([] on timeout; [{"type": "eof"}] at EOF)."""
        sel = selectors.DefaultSelector()
        sel.register(self._r, selectors.EVENT_READ)
        try:
            if not sel.select(timeout):
                return []
        finally:
            sel.close()
        chunk = os.read(self._r, 65536)
        if not chunk:
            return [{"type": "eof"}]
        self._buf += chunk
        *lines, self._buf = self._buf.split(b"\n")
        out = []
        for line in lines:
            if line.strip():
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue
                if msg.get("type") == "ready":
                    self.ready = True
                out.append(msg)
        return out

    def wait_ready(self, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while not self.ready and self.alive() and time.monotonic() < end:
            for msg in self.read_messages(min(0.5, max(0.0, end - time.monotonic()))):
                if msg["type"] == "eof":
                    return False
        return self.ready

    def send_job(self, spec: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(spec, default=str) + "\n").encode())
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
        info: dict[str, Any] = {}
        while time.monotonic() < end:
            msgs = proc.read_messages(min(1.0, max(0.0, end - time.monotonic())))
            closed = [m for m in msgs if m["type"] in ("closed", "eof")]
            if closed:
                info = closed[0]
                break
        if proc.alive():
            with contextlib.suppress(Exception):
                proc.proc.wait(timeout=5)
        if proc.alive():
            info["killed_after_s"] = TEARDOWN_GRACE_S
        proc.kill()
        with contextlib.suppress(OSError):  # whole or not at all: readers poll for it
            tmp = job_dir / "teardown.json.tmp"
            tmp.write_text(json.dumps(info))
            os.replace(tmp, job_dir / "teardown.json")

    threading.Thread(target=reap, name="job-reaper", daemon=True).start()
