"""The session host as the worker starts it (node.sessions.service) and as a job reaches it
(node.sessions.client): a real `python -m node.sessions.host` process and real Unix sockets.

The race these guard: a worker killed with -9 leaves its host's socket file behind; the new
worker must not announce itself (heartbeat → the coordinator sends jobs) before its new host
listens, and a job that meets nobody listening waits for the host instead of failing at once.
"""

from __future__ import annotations

import socket
import tempfile
import threading
import time
from pathlib import Path

import pytest

from node.sessions import client, service
from node.sessions.client import HostUnavailable, SessionJob, list_sessions
from node.sessions.paths import answers, socket_path
from tests.node.sessions.test_host import settings


def stale_socket(path: Path) -> None:
    """What a host killed with -9 leaves: a socket file nobody listens on (connect: refused)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.close()


@pytest.fixture
def node_env(tmp_path, monkeypatch):
    s = settings(tmp_path)
    for key, value in {
        "NODE_PARTY": s.party,
        "NODE_BROKER_URL": s.broker_url,
        "NODE_DATA_ROOT": str(s.data_root),
        "NODE_STATE_DIR": str(s.state_dir),
        "NODE_CERT_FILE": str(s.cert_file),
        "NODE_KEY_FILE": str(s.key_file),
        "NODE_CA_FILE": str(s.ca_file),
        "NODE_TRUSTED_SIGNERS": s.trusted_signers,
        "NODE_ALLOWED_PEERS": '["bob", "carol"]',
        "NODE_SPARE_RUNNER": "false",  # no driver (secretflow) is started: the socket is the test
    }.items():
        monkeypatch.setenv(key, value)
    service._stop.clear()
    yield s
    service.stop()
    service._stop.clear()


def test_the_worker_starts_its_host_and_returns_once_it_listens(node_env):
    path = socket_path(node_env)
    stale_socket(path)  # the previous worker's host was killed
    assert not answers(path)
    assert service.start(node_env) is True
    # the heartbeat starts right after: by then a job is answered, not refused
    assert answers(path)
    assert list_sessions(node_env) == []
    service.stop()
    assert not service.running()
    assert service._proc is not None and service._proc.returncode == 0  # not killed
    assert not path.exists()  # a host stopped by the worker removes its socket


def test_a_job_that_meets_a_stale_socket_waits_for_the_host_to_listen(tmp_path):
    s = settings(tmp_path)
    path = socket_path(s)
    stale_socket(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)

    def host_comes_back() -> None:  # as the service's watcher does, ≈ 2 s after a crash
        time.sleep(0.5)
        path.unlink()
        listener.bind(str(path))
        listener.listen(1)

    threading.Thread(target=host_comes_back, daemon=True).start()
    t0 = time.monotonic()
    job = SessionJob(s)
    try:
        assert job.alive()
        assert time.monotonic() - t0 >= 0.4  # it did wait rather than reach something else
        conn, _ = listener.accept()
        conn.close()
    finally:
        job.close()
        listener.close()


def test_a_job_names_the_missing_host_when_it_does_not_come_back(tmp_path, monkeypatch):
    monkeypatch.setattr(client, "RESTART_WAIT_S", 0.3)
    s = settings(tmp_path)
    stale_socket(socket_path(s))
    with pytest.raises(HostUnavailable, match=r"session host does not answer on .*refused"):
        SessionJob(s)


def test_a_host_stopped_by_the_worker_leaves_nothing_in_the_temp_dir(node_env, monkeypatch):
    # a state dir too long for a Unix socket: the host listens in a private folder of the temp dir
    long_state = node_env.state_dir / ("deep-" * 20)
    monkeypatch.setenv("NODE_STATE_DIR", str(long_state))
    s = node_env.model_copy(update={"state_dir": long_state})
    path = socket_path(s)
    assert path.parent.parent == Path(tempfile.gettempdir())
    assert service.start(s) is True
    assert answers(path)
    service.stop()
    assert service._proc is not None and service._proc.returncode == 0
    assert not path.parent.exists()
