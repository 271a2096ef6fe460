"""A Celery task's handle on its job in a warm session: the runner supervises it like a job
process of its own (a `node.launch.child_spec.JobChild`: the same messages, the same `kill`),
through the session host's socket."""

from __future__ import annotations

import contextlib
import errno
import json
import socket
import time
from pathlib import Path
from typing import Any

from node.launch.child_spec import (
    ChildExited,
    ChildMessage,
    JobFailed,
    JobResult,
    JobSpec,
    LineReader,
    SessionStarted,
)
from node.sessions.paths import SocketUnsafe, check_peer, private_folder, socket_path
from node.settings import NodeSettings

CONNECT_TIMEOUT_S = 5.0
FIRST_ANSWER_TIMEOUT_S = 90.0  # a new session may wait for the host to make its driver
# a host that exited is started again by the worker within seconds (node.sessions.service):
# a job that finds nobody listening waits that long before it fails as SessionLost
RESTART_WAIT_S = 15.0
RETRY_PAUSE_S = 0.1


class HostUnavailable(RuntimeError):
    """Nothing answers on the session host's socket."""


def _connect(path: Path, wait_s: float) -> socket.socket:
    """Connect to the host, waiting up to `wait_s` while nobody listens (the socket file is
    missing, or left by a killed host: refused); any other error fails at once."""
    try:
        private_folder(path.parent)
    except SocketUnsafe as exc:
        raise HostUnavailable(str(exc)) from None
    end = time.monotonic() + wait_s
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(CONNECT_TIMEOUT_S)
        try:
            sock.connect(str(path))
        except OSError as exc:
            sock.close()
            restarting = exc.errno in (errno.ECONNREFUSED, errno.ENOENT)
            if not restarting or time.monotonic() >= end:
                raise HostUnavailable(
                    f"its session host does not answer on {path} ({exc.strerror or exc}); "
                    "is the SecretFlow worker running?"
                ) from None
            time.sleep(RETRY_PAUSE_S)
            continue
        try:  # the spec goes only to this node's own host
            check_peer(sock, "process listening on the session socket")
        except (OSError, SocketUnsafe) as exc:
            sock.close()
            raise HostUnavailable(f"refused the session socket {path}: {exc}") from None
        sock.settimeout(None)
        return sock


class SessionJob:
    """One job handed to the session host (a `JobChild`)."""

    ready = True  # the host waits for its driver itself

    def __init__(self, settings: NodeSettings) -> None:
        self.path = socket_path(settings)
        self.sock = _connect(self.path, RESTART_WAIT_S)
        self._lines = LineReader(self.sock, self.sock.recv)
        self._pending: list[ChildMessage] = []
        self.session: SessionStarted | None = None
        self.rc: int | None = None

    @property
    def pid(self) -> int:
        return self.session.pid if self.session is not None else 0

    def alive(self) -> bool:
        return self.sock.fileno() >= 0

    def wait_ready(self, timeout: float) -> bool:
        return True

    def send_job(self, spec: JobSpec) -> None:
        """Send the job; wait for the host's first answer (which session, which driver)."""
        request = {"op": "run", "spec": spec.model_dump(mode="json")}
        self.sock.sendall((json.dumps(request) + "\n").encode())
        for msg in self._read(FIRST_ANSWER_TIMEOUT_S):
            if isinstance(msg, SessionStarted) and self.session is None:
                self.session = msg
            else:
                self._pending.append(msg)

    def read_messages(self, timeout: float) -> list[ChildMessage]:
        if self._pending:
            out, self._pending = self._pending, []
            return out
        return self._read(timeout)

    def _read(self, timeout: float) -> list[ChildMessage]:
        out = self._lines.read(timeout)
        for msg in out:
            if isinstance(msg, ChildExited) and msg.rc is not None:
                self.rc = msg.rc  # the driver's exit code, from the host
        return out

    def exit_code(self, timeout: float) -> int | None:
        return self.rc

    def kill(self) -> None:
        """Stop the job: the host ends the session when the connection closes."""
        self.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def finish(self, job_dir: Path) -> None:
        """After the result: the session stays up for the next job; nothing to reap."""
        self.close()


def release_peers(settings: NodeSettings, spec: JobSpec, timeout: float) -> str | None:
    """This party refused `spec`'s job (`spec.refused`): its session's driver releases the
    peers waiting for it. None once done; else why not (no such session here, it is busy, the
    driver failed, or `timeout` passed — the peers are then left to the coordinator's cancel)."""
    try:
        job = SessionJob(settings)
    except HostUnavailable as exc:
        return str(exc)
    end = time.monotonic() + timeout
    try:
        job.send_job(spec)
        while time.monotonic() < end:
            for msg in job.read_messages(min(1.0, max(0.0, end - time.monotonic()))):
                if isinstance(msg, JobResult):
                    return None
                if isinstance(msg, JobFailed):
                    return f"{msg.error.type}: {msg.error.message}"
                if isinstance(msg, ChildExited):
                    return f"the session's driver exited (code {msg.rc})"
            if not job.alive():
                return "the session host closed the connection"
        return f"the peers were not released within {timeout:.0f} s"
    except (OSError, ValueError) as exc:
        return f"the session host failed: {exc}"
    finally:
        job.close()


def _ask(settings: NodeSettings, request: dict[str, Any], timeout: float) -> dict[str, Any]:
    with _connect(socket_path(settings), 0.0) as sock:
        sock.settimeout(timeout)
        sock.sendall((json.dumps(request) + "\n").encode())
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return dict(json.loads(data)) if data else {}


def list_sessions(settings: NodeSettings, timeout: float = 5.0) -> list[dict[str, Any]]:
    """This party's warm sessions: id, parties, driver pid, busy job, jobs run, idle time."""
    return list(_ask(settings, {"op": "list"}, timeout).get("sessions", []))


def close_sessions(
    settings: NodeSettings, ids: list[str] | None = None, timeout: float = 15.0
) -> list[str]:
    """End some (or, with None, all) of this party's sessions; the ids that were ended."""
    return list(_ask(settings, {"op": "close", "ids": ids}, timeout).get("ids", []))
