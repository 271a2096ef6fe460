"""The session host as a child of the SecretFlow worker's main process (node.celery_app).

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

from node.settings import NodeSettings

log = logging.getLogger(__name__)

RESTART_PAUSE_S = 2.0
STOP_GRACE_S = 10.0

_proc: subprocess.Popen[bytes] | None = None
_stop = threading.Event()


def _spawn(settings: NodeSettings) -> subprocess.Popen[bytes]:
    from node.jobprocess import die_with_parent

    logs = settings.state_dir / "runner"
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / "sessions.log", "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "node.sessions.host"],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
            close_fds=True,
        )


def start(settings: NodeSettings) -> None:
    """Start the watcher thread, which starts the host and restarts it when it exits (the host
    is the watcher's child: PR_SET_PDEATHSIG follows the thread that made it)."""
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

    threading.Thread(target=watch, name="session-host", daemon=True).start()
    started.wait(10)


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
