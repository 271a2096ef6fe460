"""The output of the processes the local federation starts (`make demo`, the e2e tests, the
benchmarks), kept in size-capped log files.

A process writes to a pipe; a thread of the launcher appends what it reads to the log file and,
once the file is over `node.logfiles.LOG_MAX_BYTES` (10 MB, where the node's own logs
rotate), moves it to `<name>.1` (replacing the previous one) through `logfiles.open_log`.
So at most about twice that stays on disk per process however long the demo runs. (A file the
process held open itself could not be rotated under it.) The launcher stops every process it
started before it exits; a process that outlives a killed launcher loses its output.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

from node import logfiles

CHUNK = 64 * 1024  # one read of the pipe: a file passes the cap by at most this much


class CappedLog:
    """Appends everything read from a pipe to `path`, rotated by size (module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._thread: threading.Thread | None = None

    def follow(self, pipe: IO[bytes]) -> CappedLog:
        self._thread = threading.Thread(
            target=self._copy, args=(pipe,), name=f"log {self.path}", daemon=True
        )
        self._thread.start()
        return self

    def _copy(self, pipe: IO[bytes]) -> None:
        out = logfiles.open_log(self.path)
        try:
            while chunk := _read(pipe):
                if out.tell() > logfiles.LOG_MAX_BYTES:  # before: the newest lines stay
                    out.close()
                    out = logfiles.open_log(self.path)  # moves the full file to .1
                out.write(chunk)
                out.flush()  # readable at once, as when the process wrote the file itself
        finally:
            out.close()
            pipe.close()

    def wait(self, timeout: float = 5.0) -> None:
        """Until the process's last output is in the file (its pipe closed)."""
        if self._thread is not None:
            self._thread.join(timeout)


def _read(pipe: IO[bytes]) -> bytes:
    with contextlib.suppress(OSError, ValueError):  # closed under us: the end
        return os.read(pipe.fileno(), CHUNK)
    return b""


def spawn(
    cmd: Sequence[str],
    log_path: Path,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> tuple[subprocess.Popen[bytes], CappedLog]:
    """`cmd` in a session of its own, its stdout and stderr in `log_path` (capped)."""
    proc = subprocess.Popen(
        list(cmd),
        env=None if env is None else dict(env),
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    assert proc.stdout is not None
    return proc, CappedLog(log_path).follow(proc.stdout)
