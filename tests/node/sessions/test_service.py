"""The session host as the worker starts it (node.sessions.service) and as a job reaches it
(node.sessions.client): a real `python -m node.sessions.host` process and real Unix sockets.

The race these guard: a worker killed with -9 leaves its host's socket file behind; the new
worker must not announce itself (heartbeat → the coordinator sends jobs) before its new host
listens, and a job that meets nobody listening waits for the host instead of failing at once.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
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


# --- the socket and its folder belong to the node user only (issue 22, point 6) --------------
NOBODY = 65534


def _long_state(node_env, monkeypatch):
    """A state dir too long for a Unix socket: the socket's folder is in the shared temp dir."""
    long_state = node_env.state_dir / ("deep-" * 20)
    monkeypatch.setenv("NODE_STATE_DIR", str(long_state))
    s = node_env.model_copy(update={"state_dir": long_state})
    assert socket_path(s).parent.parent == Path(tempfile.gettempdir())
    return s


@pytest.fixture
def planted(node_env, monkeypatch):
    """(settings, the socket's folder in /tmp), removed after the test whoever made it."""
    s = _long_state(node_env, monkeypatch)
    folder = socket_path(s).parent
    yield s, folder
    if folder.is_symlink() or folder.is_file():
        folder.unlink()
    elif folder.exists():
        shutil.rmtree(folder)


def test_a_socket_folder_another_user_made_first_is_refused_by_host_and_job(planted):
    """Another local user creates the predictable folder in /tmp before the host (to receive
    the job specs): the host does not start on it, a job does not connect through it."""
    s, folder = planted
    folder.mkdir(mode=0o777)
    os.chown(folder, NOBODY, NOBODY)
    with pytest.raises(HostUnavailable, match="not a folder of this user"):
        SessionJob(s)
    run = subprocess.run(
        [sys.executable, "-m", "node.sessions.host"], capture_output=True, text=True, timeout=60
    )
    assert run.returncode != 0 and "made by uid 65534" in run.stderr
    assert list(folder.iterdir()) == []  # nothing was bound in it


def test_a_link_in_place_of_the_socket_folder_is_refused(planted, tmp_path):
    s, folder = planted
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    folder.symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(HostUnavailable, match="a link"):
        SessionJob(s)


def test_a_listener_of_another_user_never_gets_the_job(node_env):
    """Something listens on the socket path but runs as another user (SO_PEERCRED): the job
    refuses it before sending anything."""
    path = socket_path(node_env)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    listener = subprocess.Popen(  # listen() as nobody: the socket's credentials are nobody's
        [sys.executable, "-c", LISTEN_AS_NOBODY, str(sock.fileno())],
        pass_fds=[sock.fileno()],
        stdout=subprocess.PIPE,
    )
    try:
        assert listener.stdout is not None and listener.stdout.readline() == b"listening\n"
        with pytest.raises(HostUnavailable, match="runs as uid 65534"):
            SessionJob(node_env)
    finally:
        listener.kill()
        listener.wait()
        sock.close()


LISTEN_AS_NOBODY = """
import os, socket, sys, time
s = socket.socket(fileno=int(sys.argv[1]))
os.setgid(65534); os.setuid(65534)
s.listen(1)
print("listening", flush=True)
while True:
    c, _ = s.accept()
    c.recv(1 << 20)
"""


def test_the_host_side_refuses_a_client_of_another_user():
    """check_peer, as the host's accept loop calls it, against a real client of another uid."""
    from node.sessions.paths import SocketUnsafe, check_peer

    folder = Path(tempfile.mkdtemp(prefix="partyline-test-peer-"))  # nobody must reach it
    os.chmod(folder, 0o711)
    path = folder / "s.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    os.chmod(path, 0o777)
    server.listen(1)
    code = (
        f"import os,socket,time;os.setuid({NOBODY});s=socket.socket(socket.AF_UNIX);"
        f"s.connect({str(path)!r});time.sleep(5)"
    )
    child = subprocess.Popen([sys.executable, "-c", code])
    try:
        server.settimeout(10)
        conn, _ = server.accept()
        with pytest.raises(SocketUnsafe, match="runs as uid 65534"):
            check_peer(conn, "process connecting to the session host")
        conn.close()
    finally:
        child.kill()
        child.wait()
        server.close()
        shutil.rmtree(folder)
