"""The session host as a child of the SecretFlow worker's main process (node.worker.celery_app).

Started when the worker is ready, stopped when it shuts down, restarted by a watcher thread
if it exits; it dies with the worker (PR_SET_PDEATHSIG). A restarted host refuses the sessions
the previous one had started (it reads their ids back from `<state_dir>/run/sessions.seen`).
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import sys
import threading
import time

from node.sessions.paths import answers, socket_path
from node.settings import NodeSettings

log = logging.getLogger(__name__)

RESTART_PAUSE_S = 2.0
STOP_GRACE_S = 10.0
LISTEN_WAIT_S = 60.0  # how long the worker's start waits for the host to listen

_proc: subprocess.Popen[bytes] | None = None
_stop = threading.Event()


def _spawn(settings: NodeSettings) -> subprocess.Popen[bytes]:
    from node.launch.jobprocess import die_with_parent
    from node.logfiles import open_log

    with open_log(settings.state_dir / "runner" / "sessions.log") as out:  # rotated by size
        return subprocess.Popen(
            [sys.executable, "-m", "node.sessions.host"],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
            close_fds=True,
        )


def start(settings: NodeSettings) -> bool:
    """Start the watcher thread, which starts the host and restarts it when it exits (the host
    is the watcher's child: PR_SET_PDEATHSIG follows the thread that made it); return once the
    host listens (True), or when it exited or did not listen within LISTEN_WAIT_S (False).

    The worker announces itself (its heartbeat) only after this: a job the coordinator sends
    to a worker that has just started must not meet the socket file of a killed host with no
    one behind it yet (it would fail as SessionLost and use up an attempt)."""
    started = threading.Event()

    def watch() -> None:
        global _proc
        _proc = _spawn(settings)
        log.info("session host started (pid %s)", _proc.pid)
        started.set()
        while not _stop.wait(RESTART_PAUSE_S):
            if _proc.poll() is not None and not _stop.is_set():
                log.warning("session host exited with code %s; restarting it", _proc.returncode)
                _proc = _spawn(settings)
        # the host dies with this thread (PR_SET_PDEATHSIG): stay until stop() has ended it, or
        # the host would be killed at once instead of closing its sessions and its socket
        with contextlib.suppress(Exception):
            _proc.wait()

    threading.Thread(target=watch, name="session-host", daemon=True).start()
    started.wait(10)
    return wait_listening(settings, LISTEN_WAIT_S)


def wait_listening(settings: NodeSettings, timeout: float) -> bool:
    path = socket_path(settings)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if answers(path):
            return True
        if _proc is not None and _proc.poll() is not None:
            break
        time.sleep(0.05)
    log.warning("the session host does not listen on %s", path)
    return False


def running() -> bool:
    return _proc is not None and _proc.poll() is None


def stop() -> None:
    _stop.set()
    if _proc is None or _proc.poll() is not None:
        return
    _proc.terminate()
    try:
        _proc.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        _proc.kill()
        with contextlib.suppress(Exception):
            _proc.wait(timeout=5)
