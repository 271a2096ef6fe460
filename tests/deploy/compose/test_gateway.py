"""The compose gateway relays exactly its routes, byte for byte, and nothing else (real sockets)."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deploy.compose.gateway import load_routes

GATEWAY = Path(__file__).resolve().parents[3] / "deploy" / "compose" / "gateway.py"


def _echo_server() -> tuple[socket.socket, int]:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    return srv, srv.getsockname()[1]


def _serve_once(srv: socket.socket, prefix: bytes) -> None:
    conn, _ = srv.accept()
    with conn:
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
        conn.sendall(prefix + data)


def _talk(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


@pytest.fixture()
def gateway(tmp_path, ports):
    procs = []

    def start(routes: list[dict], **limits) -> Path:
        ready = tmp_path / f"ready-{len(procs)}"
        cfg = tmp_path / f"gw-{len(procs)}.json"
        cfg.write_text(
            json.dumps({"party": "alice", "ready_file": str(ready), "routes": routes, **limits})
        )
        p = subprocess.Popen([sys.executable, str(GATEWAY), str(cfg)], start_new_session=True)
        procs.append(p)
        end = time.monotonic() + 20
        while not ready.exists():
            assert p.poll() is None, "the gateway exited"
            assert time.monotonic() < end, "the gateway did not get ready"
            time.sleep(0.05)
        return cfg

    yield start
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(timeout=10)


def test_a_mapped_port_relays_both_ways_byte_for_byte(gateway, ports):
    import threading

    srv, target = _echo_server()
    listen = ports.one()
    gateway([{"name": "redis", "ports": [listen, listen], "to": "127.0.0.1", "to_port": target}])
    payload = os.urandom(300_000)  # more than one read: the relay streams
    t = threading.Thread(target=_serve_once, args=(srv, b"echo:"))
    t.start()
    assert _talk(listen, payload) == b"echo:" + payload
    t.join(5)
    srv.close()


def test_a_port_outside_every_route_does_not_answer(gateway, ports):
    routed, other = ports.one(), ports.one()
    srv, target = _echo_server()
    gateway([{"name": "probe", "ports": [routed, routed], "to": "127.0.0.1", "to_port": target}])
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", other), timeout=3)
    srv.close()


def _closed_without_answer(port: int) -> bool:
    """The gateway accepted, relayed nothing and closed: by FIN (b"") or — when the client's
    bytes were already in its socket, unread — by RST, which the client sees as a reset at
    shutdown, send or recv. A refusal (the gateway gone) or a hang (timeout) is not this."""
    try:
        return _talk(port, b"hello") == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except OSError as exc:
        if exc.errno == errno.ENOTCONN:  # the reset came before the client's shutdown
            return True
        raise


def test_an_unreachable_target_closes_the_client_and_the_gateway_keeps_serving(gateway, ports):
    dead, listen = ports.one(), ports.one()
    gateway([{"name": "fed", "ports": [listen, listen], "to": "127.0.0.1", "to_port": dead}])
    for _ in range(3):
        assert _closed_without_answer(listen)  # accepted, then closed: nothing behind it


def test_overlapping_routes_are_refused_naming_both(tmp_path):
    cfg = tmp_path / "gw.json"
    cfg.write_text(
        json.dumps(
            {
                "party": "alice",
                "routes": [
                    {"name": "alice fed", "ports": [21000, 21010], "to": "alice-node"},
                    {"name": "bob fed", "ports": [21010, 21020], "to": "bob-gw"},
                ],
            }
        )
    )
    with pytest.raises(ValueError, match="21010 is in both alice fed and bob fed"):
        load_routes(cfg)
    done = subprocess.run([sys.executable, str(GATEWAY), str(cfg)], capture_output=True, text=True)
    assert done.returncode == 2 and "21010 is in both" in done.stderr


# --- bounds (issue 22, point 7) ---------------------------------------------------------------
def test_an_outbound_route_listens_only_on_the_partys_own_address(gateway, ports):
    """Outbound routes bind the gateway's address in the party's network (here 127.0.0.2):
    from any other address of the host — `wan`, in compose — nothing answers."""
    srv, target = _echo_server()
    port = ports.one()
    gateway(
        [{"name": "bob fed (to bob)", "ports": [port, port], "to": "127.0.0.1",
          "to_port": target, "listen": "127.0.0.2"}]
    )  # fmt: skip
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=3)
    socket.create_connection(("127.0.0.2", port), timeout=3).close()
    srv.close()


def test_connections_past_the_caps_are_turned_away_and_the_rest_served(gateway, ports):
    srv, target = _echo_server()
    listen = ports.one()
    gateway(
        [{"name": "fed", "ports": [listen, listen], "to": "127.0.0.1", "to_port": target}],
        max_connections=10,
        max_per_source=3,
    )
    held = [socket.create_connection(("127.0.0.1", listen), timeout=3) for _ in range(3)]
    time.sleep(0.3)  # the gateway has taken them (and connected each to the target)
    assert _closed_without_answer(listen)  # a 4th from the same address: turned away
    other = socket.create_connection(
        ("127.0.0.1", listen), timeout=3, source_address=("127.0.0.2", 0)
    )
    other.settimeout(1.0)
    with pytest.raises(TimeoutError):  # admitted: open, waiting for the target to answer
        other.recv(1)
    for s in [*held, other]:
        s.close()
    srv.close()


def test_a_connection_idle_past_the_timeout_is_closed(gateway, ports):
    srv, target = _echo_server()
    listen = ports.one()
    gateway(
        [{"name": "fed", "ports": [listen, listen], "to": "127.0.0.1", "to_port": target}],
        idle_timeout_s=1.0,
    )
    conn = socket.create_connection(("127.0.0.1", listen), timeout=10)
    t0 = time.monotonic()
    assert conn.recv(1) == b""  # closed by the gateway, though nobody sent anything
    assert time.monotonic() - t0 < 8
    conn.close()
    srv.close()
