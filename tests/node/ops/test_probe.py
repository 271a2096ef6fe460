"""The standing mTLS probe (node/ops/probe.py), its settings, its health checks and the commands that
run it (`python -m node probe`, `python -m node up`): real sockets, real certificates."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import ValidationError

from certs.authority import Authority, init_federation
from node.ops.health import run_checks
from node.ops.probe import LinkOutcome, check_peer, serve
from node.ops.supervise import supervise
from node.settings import NodeSettings, split_host_port

REPO_ROOT = Path(__file__).resolve().parents[3]
PARTIES = ["alice", "bob", "carol", "coordinator"]


@pytest.fixture()
def certs(tmp_path) -> Path:
    d = tmp_path / "certs"
    init_federation(d, PARTIES)
    return d


@pytest.fixture()
def other_ca(tmp_path) -> Path:
    """Another federation (its own CA) with certificates for the same party names."""
    d = tmp_path / "other"
    init_federation(d, ["alice", "bob"])
    return d


def env_for(party: str, certs: Path, tmp: Path, ca_dir: Path | None = None, **kw) -> dict:
    env = {
        "party": party,
        "broker_url": "redis://node:s3cret-Zq81@127.0.0.1:1/0",
        "data_root": str(tmp),
        "cert_file": str(certs / f"{party}.crt"),
        "key_file": str(certs / f"{party}.key"),
        "ca_file": str((ca_dir or certs) / "ca.crt"),
        "trusted_signers": str((ca_dir or certs) / "coordinator.crt"),
        "allowed_peers": "alice,bob,carol",
        "probe_listen_host": "127.0.0.1",
    }
    return {**env, **{k: str(v) for k, v in kw.items()}}


def node_settings(party: str, certs: Path, tmp: Path, **kw) -> NodeSettings:
    return NodeSettings(**env_for(party, certs, tmp, **kw))


@contextlib.contextmanager
def probing(settings: NodeSettings) -> Iterator[str]:
    """This party's probe served in a thread; yields its HOST:PORT."""
    stop, ready = threading.Event(), threading.Event()
    where: list[tuple[str, int]] = []

    def on_ready(address: tuple[str, int]) -> None:
        where.append(address)
        ready.set()

    thread = threading.Thread(target=serve, args=(settings, stop), kwargs={"on_ready": on_ready})
    thread.start()
    try:
        assert ready.wait(10), "the probe did not start"
        yield f"{where[0][0]}:{where[0][1]}"
    finally:
        stop.set()
        thread.join(10)
        assert not thread.is_alive()


def test_link_ok_both_ways(certs, tmp_path, ports):
    alice = node_settings("alice", certs, tmp_path, probe_port=ports.one())
    bob = node_settings("bob", certs, tmp_path, probe_port=ports.one())
    with probing(alice) as at_alice, probing(bob) as at_bob:
        link = check_peer(alice, "bob", at_bob)
        back = check_peer(bob, "alice", at_alice)
    assert link.outcome is LinkOutcome.OK and link.ok and not link.warn, link.message
    assert (link.party, link.peer, link.peer_cn, link.address) == ("alice", "bob", "bob", at_bob)
    assert 360 <= link.days_left <= 365
    assert link.message.startswith(f"bob at {at_bob}: mTLS ok")
    assert "bob's certificate expires in" in link.message
    assert back.ok and back.peer_cn == "alice"
    assert link.as_dict()["outcome"] == "ok" and link.as_dict()["ok"] is True


def test_an_address_that_reaches_another_party_is_wrong_party_naming_both(certs, tmp_path, ports):
    alice = node_settings("alice", certs, tmp_path)
    carol = node_settings("carol", certs, tmp_path, probe_port=ports.one())
    with probing(carol) as at_carol:
        link = check_peer(alice, "bob", at_carol)
    assert link.outcome is LinkOutcome.WRONG_PARTY and not link.ok
    assert link.peer_cn == "carol" and link.days_left is not None
    assert link.message == (
        f"bob at {at_carol} presented carol's certificate: the address of bob in "
        "NODE_PEER_PROBES points at another party's node"
    )


def _wait_for_log(caplog, needle: str, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while needle not in caplog.text:
        assert time.monotonic() < end, f"no log line with {needle!r}:\n{caplog.text}"
        time.sleep(0.05)


def test_a_client_without_a_certificate_is_refused_and_the_probe_keeps_serving(
    certs, tmp_path, ports, caplog
):
    alice = node_settings("alice", certs, tmp_path)
    bob = node_settings("bob", certs, tmp_path, probe_port=ports.one())
    bare = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # trusts the CA, presents nothing
    bare.check_hostname = False
    bare.load_verify_locations(certs / "ca.crt")
    with caplog.at_level(logging.INFO, logger="partyline.probe"), probing(bob) as at_bob:
        host, port = split_host_port(at_bob)
        with socket.create_connection((host, port), timeout=5) as raw:
            greeting = b""
            with contextlib.suppress(ssl.SSLError, ConnectionError), bare.wrap_socket(raw) as tls:
                greeting = tls.recv(100)
        assert b"partyline-probe" not in greeting
        _wait_for_log(caplog, "probe refused a client at 127.0.0.1:")
        assert "it presented no certificate" in caplog.text
        # garbage: plain text, a connection closed at once, a client that never speaks
        with socket.create_connection((host, port), timeout=5) as raw:
            raw.sendall(b"GET / HTTP/1.0\r\n\r\n")
            with contextlib.suppress(OSError):
                raw.recv(100)
        socket.create_connection((host, port), timeout=5).close()
        silent = socket.create_connection((host, port), timeout=5)
        try:
            link = check_peer(alice, "bob", at_bob)
        finally:
            silent.close()
    assert link.ok, link.message


def test_a_closed_port_is_unreachable_with_the_advice(certs, tmp_path, ports):
    alice = node_settings("alice", certs, tmp_path)
    address = f"127.0.0.1:{ports.one()}"
    link = check_peer(alice, "bob", address)
    assert link.outcome is LinkOutcome.UNREACHABLE and link.days_left is None
    assert link.message == (
        f"bob at {address} refused the connection: is bob's probe (python -m node probe / "
        "NODE_PROBE_PORT) running and its port open to alice?"
    )


def test_a_listener_that_never_speaks_tls_is_a_timeout(certs, tmp_path):
    alice = node_settings("alice", certs, tmp_path)
    with socket.create_server(("127.0.0.1", 0)) as mute:
        address = f"127.0.0.1:{mute.getsockname()[1]}"
        link = check_peer(alice, "bob", address, timeout=1.0)
    assert link.outcome is LinkOutcome.TIMEOUT
    assert "no TLS handshake" in link.message and "bob's probe port" in link.message


def test_a_peer_certificate_of_another_ca_is_untrusted(certs, other_ca, tmp_path, ports):
    alice = node_settings("alice", certs, tmp_path)
    stranger = node_settings("bob", other_ca, tmp_path, probe_port=ports.one())
    with probing(stranger) as at:
        link = check_peer(alice, "bob", at)
    assert link.outcome is LinkOutcome.UNTRUSTED and link.peer_cn is None
    assert link.message.startswith(
        f"bob at {at} presented a certificate that does not chain to alice's federation CA"
    )
    assert "NODE_CA_FILE" in link.message


def test_our_certificate_of_another_ca_is_refused_by_the_peer(certs, other_ca, tmp_path, ports):
    bob = node_settings("bob", certs, tmp_path, probe_port=ports.one())
    # alice trusts the federation CA but holds a certificate of another CA
    alice = node_settings("alice", other_ca, tmp_path, ca_dir=certs)
    with probing(bob) as at:
        link = check_peer(alice, "bob", at)
    assert link.outcome is LinkOutcome.TLS_REFUSED, link.message
    assert link.message.startswith(f"bob at {at} refused alice's certificate")
    assert "bob must trust the same federation CA" in link.message


# --- settings ---------------------------------------------------------------------------------
def test_peer_probes_parse_from_the_environment(certs, tmp_path, monkeypatch):
    env = env_for("alice", certs, tmp_path, allowed_peers="bob,carol,dave")
    env["peer_probes"] = "bob=bob.example:7401, carol=10.0.0.3:7402,dave=[2001:db8::4]:7401,"
    env["probe_port"] = "7401"
    for k, v in env.items():
        monkeypatch.setenv(f"NODE_{k.upper()}", v)
    s = NodeSettings()
    assert s.peer_probes == {
        "bob": "bob.example:7401",
        "carol": "10.0.0.3:7402",
        "dave": "[2001:db8::4]:7401",
    }
    assert s.probe_port == 7401 and s.probe_listen_host == "127.0.0.1"
    assert split_host_port(s.peer_probes["dave"]) == ("2001:db8::4", 7401)
    monkeypatch.delenv("NODE_PEER_PROBES")
    monkeypatch.delenv("NODE_PROBE_PORT")
    assert NodeSettings().peer_probes == {} and NodeSettings().probe_port is None


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("dave=dave.example:7401", "names dave, not in NODE_ALLOWED_PEERS (bob, carol)"),
        ("alice=127.0.0.1:7401", "names 'alice', this party itself"),
        ("bob=bob.example", "bob: address must be HOST:PORT"),
        ("bob=bob.example:70000", "the port must be a number from 1 to 65535"),
        ("bob=2001:db8::4:7401", "write an IPv6 address in brackets"),
        ("bob=[bob.example]:7401", "is not an IPv6 address"),
        ("bob=bob example:7401", "is not a host name or IPv4 address"),
        ("bob", "expected PARTY=HOST:PORT, got 'bob'"),
        ("bob=a:1,bob=b:2", "party 'bob' is given twice"),
        ("Bob=a:1", "invalid party name 'Bob'"),
    ],
)
def test_bad_peer_probes_are_refused_naming_the_problem(
    certs, tmp_path, monkeypatch, value, needle
):
    env = env_for("alice", certs, tmp_path, allowed_peers="bob,carol", peer_probes=value)
    for k, v in env.items():
        monkeypatch.setenv(f"NODE_{k.upper()}", v)
    with pytest.raises(ValidationError) as err:
        NodeSettings()
    assert needle in str(err.value)


# --- health -----------------------------------------------------------------------------------
def _cert_with_dates(certs: Path, party: str, start: dt.datetime, end: dt.datetime) -> None:
    ca = Authority.load(certs)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, party)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(party)]), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    (certs / f"{party}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    (certs / f"{party}.key").write_bytes(pem)
    os.chmod(certs / f"{party}.key", 0o600)


def test_health_checks_every_peer_link_and_reports_them(certs, tmp_path, ports):
    bob = node_settings("bob", certs, tmp_path, probe_port=ports.one())
    with probing(bob) as at_bob:
        alice = node_settings(
            "alice",
            certs,
            tmp_path,
            ray_address=f"127.0.0.1:{ports.one()}",
            peer_probes=f"bob={at_bob},carol={at_bob}",  # carol's address is bob's node
        )
        report = run_checks(alice, check_worker=False)
    checks = {c.name: c for c in report.checks}
    assert checks["link bob"].ok and "mTLS ok" in checks["link bob"].detail
    assert not checks["link carol"].ok
    assert "presented bob's certificate" in checks["link carol"].detail
    assert checks["certificate expiry"].ok and not checks["certificate expiry"].warn
    assert not report.ok  # a failed link fails the report
    data = report.as_dict()
    assert [(x["peer"], x["outcome"], x["ok"]) for x in data["links"]] == [
        ("bob", "ok", True),
        ("carol", "wrong_party", False),
    ]
    assert 360 <= data["cert_days_left"] <= 365


@pytest.mark.parametrize(
    ("start_days", "end_days", "ok", "warn", "needle"),
    [
        (-1, 10, True, True, "in 9 days: issue alice a new certificate"),
        (-30, -2, False, False, "expired on"),
        (2, 300, False, False, "not valid before"),
    ],
    ids=["expires-soon", "expired", "not-yet-valid"],
)
def test_own_certificate_expiry(certs, tmp_path, ports, start_days, end_days, ok, warn, needle):
    now = dt.datetime.now(dt.UTC)
    _cert_with_dates(
        certs, "alice", now + dt.timedelta(days=start_days), now + dt.timedelta(days=end_days)
    )
    alice = node_settings("alice", certs, tmp_path, ray_address=f"127.0.0.1:{ports.one()}")
    report = run_checks(alice, check_worker=False)
    expiry = next(c for c in report.checks if c.name == "certificate expiry")
    assert (expiry.ok, expiry.warn) == (ok, warn), expiry.detail
    assert needle in expiry.detail
    assert report.cert_days_left == report.as_dict()["cert_days_left"]
    assert report.as_dict()["links"] == []


# --- commands ---------------------------------------------------------------------------------
def _node_env(settings_env: dict) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NODE_")}
    env.update({f"NODE_{k.upper()}": v for k, v in settings_env.items()})
    env["COLUMNS"] = "200"  # rich wraps at 80 columns when stderr is not a terminal
    return env


def _wait_link(settings: NodeSettings, party: str, address: str, proc, timeout: float = 60):
    end = time.monotonic() + timeout
    while True:
        link = check_peer(settings, party, address, timeout=2.0)
        if link.ok or proc.poll() is not None or time.monotonic() > end:
            return link
        time.sleep(0.3)


def test_help_explains_up_and_probe():
    def helptext(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "node", *args, "--help"],
            cwd=REPO_ROOT,
            env=_node_env({}),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return " ".join(done.stdout.split())

    up = helptext("up")
    assert "starts this party's Ray head" in up and "NODE_PROBE_PORT" in up
    assert "exits 1" in up and "SIGTERM" in up
    assert "NODE_PEER_PROBES" in helptext("probe") and "NODE_PEER_PROBES" in helptext("health")
    top = helptext()
    assert "run the whole node" in top and "standing mTLS probe" in top


def test_probe_command_answers_and_stops_on_sigterm(certs, tmp_path, ports):
    port = ports.one()
    bob_env = env_for("bob", certs, tmp_path, probe_port=port)
    proc = subprocess.Popen(
        [sys.executable, "-m", "node", "probe"],
        cwd=REPO_ROOT,
        env=_node_env(bob_env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        alice = node_settings("alice", certs, tmp_path)
        link = _wait_link(alice, "bob", f"127.0.0.1:{port}", proc)
        assert link.ok, link.message
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert f"probe of bob listening on 127.0.0.1:{port} (mTLS)" in err
    assert "probe of bob stopped" in err


def test_supervise_stops_the_others_when_one_child_exits():
    sleeper = [sys.executable, "-c", "import time; time.sleep(120)"]
    quitter = [sys.executable, "-c", "import sys, time; time.sleep(0.5); sys.exit(3)"]
    said: list[str] = []
    before = signal.getsignal(signal.SIGTERM)
    t = time.monotonic()
    rc = supervise({"sleeper": sleeper, "quitter": quitter}, say=said.append, grace_s=10)
    assert rc == 1 and time.monotonic() - t < 15
    assert said == ["quitter exited with code 3; stopping the others"]
    assert signal.getsignal(signal.SIGTERM) is before  # handlers restored


def test_up_runs_workers_and_probe_and_sigterm_stops_them_all(certs, tmp_path, ports):
    psutil = pytest.importorskip("psutil")
    from deploy.local.servers import RedisServer
    from node.contract import HEARTBEAT_KEY

    redis = RedisServer(tmp_path / "redis", ports.one())
    head = socket.create_server(("127.0.0.1", 0))  # stands in for a Ray head: `up` keeps it
    probe_port = ports.one()
    env = env_for(
        "bob",
        certs,
        tmp_path / "data",
        broker_url=redis.url,
        state_dir=tmp_path / "state",
        ray_address=f"127.0.0.1:{head.getsockname()[1]}",
        spare_runner="false",
        probe_port=probe_port,
    )
    (tmp_path / "data").mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "node", "up"],
        cwd=REPO_ROOT,
        env=_node_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        alice = node_settings("alice", certs, tmp_path)
        link = _wait_link(alice, "bob", f"127.0.0.1:{probe_port}", proc)
        assert link.ok, link.message
        client, end = redis.client(), time.monotonic() + 90
        while not all(client.get(HEARTBEAT_KEY.format(role=r)) for r in ("sf", "web")):
            assert proc.poll() is None and time.monotonic() < end, "no worker heartbeats"
            time.sleep(0.5)
        children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) >= 3  # two workers (and their pools), the probe
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert "a Ray head already answers" in err and "bob up" in err
        _, alive = psutil.wait_procs(children, timeout=10)
        assert not alive, alive
        socket.create_connection(head.getsockname(), timeout=2).close()  # `up` left it alone
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        head.close()
        redis.stop()


def test_slow_handshakes_cannot_hold_the_probe(certs, tmp_path, ports, monkeypatch):
    """40 clients that send a byte every second never finish a handshake: each is cut after
    the handshake time in all (not per read), one address holds at most MAX_PER_SOURCE slots
    (before: all 32, and every peer was turned away), and a peer from another address is
    answered meanwhile."""
    from node.ops import probe

    monkeypatch.setattr(probe, "HANDSHAKE_TIMEOUT_S", 2.0)
    alice = node_settings("alice", certs, tmp_path, probe_port=ports.one())
    bob = node_settings("bob", certs, tmp_path)
    with probing(alice) as at_alice:
        host, port = split_host_port(at_alice)
        slow = [socket.create_connection((host, port), timeout=10) for _ in range(40)]
        for s in slow:  # a TLS record of 512 bytes is announced …
            with contextlib.suppress(OSError):
                s.send(b"\x16\x03\x01\x02\x00\x01")
        stop = threading.Event()

        def trickle() -> None:  # … and its bytes come one a second
            while not stop.wait(1.0):
                for s in slow:
                    with contextlib.suppress(OSError):
                        s.send(b"\x16")

        t = threading.Thread(target=trickle, daemon=True)
        t.start()
        try:
            time.sleep(0.5)
            # another address (127.0.0.2 is this machine too): answered while the slow ones wait
            ctx = probe.client_context(bob)
            raw = socket.create_connection((host, port), timeout=5, source_address=("127.0.0.2", 0))
            with ctx.wrap_socket(raw) as tls:
                assert tls.recv(100).startswith(b"partyline-probe alice")
            ends = []
            for s in slow:
                s.settimeout(10)
                t0 = time.monotonic()
                try:
                    while s.recv(100):
                        pass
                except OSError:
                    pass
                ends.append(time.monotonic() - t0)
            # those beyond the cap are closed at once; the 4 admitted within ≈ 2 s in all,
            # though a byte arrives every second (a timeout per read would never fire)
            assert max(ends) < 6, ends
        finally:
            stop.set()
            for s in slow:
                s.close()


# --- revocation (issue 22, point 5) -------------------------------------------------------------
def _rotate_bob(certs: Path) -> tuple[Path, Path]:
    """bob's certificate rotated out (its key stolen, say): (old cert, old key)."""
    from certs.rotate import rotate

    res = rotate(certs, "bob")
    old_crt = next(p for p in res.backups if ".crt." in p.name)
    old_key = next(p for p in res.backups if ".key." in p.name)
    return old_crt, old_key


def test_a_rotated_out_certificate_is_refused_by_the_probe_both_ways(certs, tmp_path, ports):
    old_crt, old_key = _rotate_bob(certs)
    crl = certs / "crl.pem"
    alice = node_settings("alice", certs, tmp_path, probe_port=ports.one(), crl_file=crl)
    bob_old = node_settings(
        "bob", certs, tmp_path, probe_port=ports.one(), cert_file=old_crt, key_file=old_key
    )
    bob_new = node_settings("bob", certs, tmp_path, probe_port=ports.one())
    with probing(alice) as at_alice, probing(bob_old) as at_old, probing(bob_new) as at_new:
        refused = check_peer(bob_old, "alice", at_alice)  # the old key knocks at alice
        assert refused.outcome is LinkOutcome.TLS_REFUSED, refused.message
        assert "revoked" in refused.message
        seen = check_peer(alice, "bob", at_old)  # alice meets the old certificate
        assert seen.outcome is LinkOutcome.UNTRUSTED and "revoked" in seen.message
        assert check_peer(bob_new, "alice", at_alice).ok
        assert check_peer(alice, "bob", at_new).ok


def test_a_revocation_list_not_of_this_ca_or_out_of_date_is_refused(certs, other_ca, tmp_path):
    import datetime as dt

    from certs.common import CertsError
    from certs.revocation import revoked_serials, write_crl
    from certs.signing import load_authority

    _rotate_bob(certs)
    assert len(revoked_serials(certs / "crl.pem", certs / "ca.crt")) == 1
    write_crl(other_ca, load_authority(other_ca))  # another federation's list
    with pytest.raises(CertsError, match="not signed by the federation CA"):
        revoked_serials(other_ca / "crl.pem", certs / "ca.crt")
    stale = tmp_path / "stale"
    stale.mkdir()
    for name in ("ca.crt", "ca.key"):
        (stale / name).write_bytes((certs / name).read_bytes())
    authority = load_authority(stale)
    write_crl(stale, authority, days=1)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=2)
    import certs.revocation as revocation

    real_now = revocation._now
    revocation._now = lambda: later  # type: ignore[assignment]
    try:
        with pytest.raises(CertsError, match="out of date"):
            revoked_serials(stale / "crl.pem", stale / "ca.crt")
    finally:
        revocation._now = real_now  # type: ignore[assignment]


def test_a_new_revocation_list_takes_effect_without_restarting_the_probe(certs, tmp_path, ports):
    from certs.revocation import write_crl
    from certs.signing import load_authority

    write_crl(certs, load_authority(certs))  # nothing revoked yet
    alice = node_settings(
        "alice", certs, tmp_path, probe_port=ports.one(), crl_file=certs / "crl.pem"
    )
    bob = node_settings("bob", certs, tmp_path)
    old = tmp_path / "bob-old"
    old.mkdir()
    for name in ("bob.crt", "bob.key"):
        (old / name).write_bytes((certs / name).read_bytes())
    bob_old = node_settings(
        "bob", certs, tmp_path, cert_file=old / "bob.crt", key_file=old / "bob.key"
    )
    with probing(alice) as at_alice:
        assert check_peer(bob_old, "alice", at_alice).ok
        _rotate_bob(certs)  # writes the new list where alice reads it
        assert check_peer(bob_old, "alice", at_alice).outcome is LinkOutcome.TLS_REFUSED
        assert check_peer(bob, "alice", at_alice).ok  # bob's new certificate


def test_health_reports_the_revocation_list_and_refuses_a_foreign_one(certs, other_ca, tmp_path):
    from certs.revocation import write_crl
    from certs.signing import load_authority

    _rotate_bob(certs)
    good = node_settings("alice", certs, tmp_path, crl_file=certs / "crl.pem")
    [check] = [
        c for c in run_checks(good, check_worker=False).checks if c.name == "revocation list"
    ]
    assert check.ok and not check.warn and check.detail.startswith("1 revoked; valid 8")
    write_crl(other_ca, load_authority(other_ca))
    bad = node_settings("alice", certs, tmp_path, crl_file=other_ca / "crl.pem")
    [check] = [c for c in run_checks(bad, check_worker=False).checks if c.name == "revocation list"]
    assert not check.ok and "not signed by the federation CA" in check.detail
