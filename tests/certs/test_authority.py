"""certs/authority.py and `python -m certs`: the federation CA, party leaves, real mTLS."""

from __future__ import annotations

import ipaddress
import os
import socket
import ssl
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certs.authority import (
    Authority,
    cert_info,
    init_federation,
    key_matches_cert,
    verify_chain,
)

pytestmark = pytest.mark.timeout(60)

REPO_ROOT = Path(__file__).resolve().parents[2]
HOSTS = {"alice": ["10.1.2.3", "alice.example"]}


@pytest.fixture(scope="module")
def fed(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fed")
    init_federation(out, ["alice", "bob"], hosts=HOSTS)
    return out


@pytest.fixture(scope="module")
def other_fed(tmp_path_factory) -> Path:
    """A second, unrelated federation (same CA name, different key)."""
    out = tmp_path_factory.mktemp("other")
    init_federation(out, ["alice", "bob"])
    return out


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def cn(name: x509.Name) -> str:
    return name.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


# --- files ------------------------------------------------------------------------------------
def test_files_written(fed):
    names = {p.name for p in fed.iterdir()}
    assert {"ca.crt", "ca.key", "alice.crt", "alice.key", "bob.crt", "bob.key"} <= names


@pytest.mark.parametrize("name", ["ca.key", "alice.key", "bob.key"])
def test_key_files_are_private(fed, name):
    assert stat.S_IMODE(os.stat(fed / name).st_mode) == 0o600


def test_reissue_tightens_loose_key_mode(tmp_path):
    init_federation(tmp_path, ["alice"])
    os.chmod(tmp_path / "alice.key", 0o644)
    init_federation(tmp_path, ["alice"])
    assert stat.S_IMODE(os.stat(tmp_path / "alice.key").st_mode) == 0o600


# --- leaf contents ----------------------------------------------------------------------------
@pytest.mark.parametrize("party", ["alice", "bob"])
def test_leaf_cn_is_party(fed, party):
    assert cn(load(fed / f"{party}.crt").subject) == party


def test_alice_san(fed):
    san = load(fed / "alice.crt").extensions.get_extension_for_class(x509.SubjectAlternativeName)
    dns = san.value.get_values_for_type(x509.DNSName)
    ips = san.value.get_values_for_type(x509.IPAddress)
    assert {"alice", "alice.example", "localhost"} <= set(dns)
    assert ipaddress.ip_address("10.1.2.3") in ips
    assert ipaddress.ip_address("127.0.0.1") in ips
    # IPs are IP entries, not DNS names
    assert "10.1.2.3" not in dns
    assert "127.0.0.1" not in dns


def test_bob_san_has_defaults_only(fed):
    san = load(fed / "bob.crt").extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert set(san.value.get_values_for_type(x509.DNSName)) == {"bob", "localhost"}
    assert san.value.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]


@pytest.mark.parametrize("party", ["alice", "bob"])
def test_leaf_extensions(fed, party):
    cert = load(fed / f"{party}.crt")
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku
    assert ExtendedKeyUsageOID.CLIENT_AUTH in eku
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.value.ca is False
    assert bc.critical
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature


def test_leaf_issuer_is_ca_subject(fed):
    ca = load(fed / "ca.crt")
    for party in ("alice", "bob"):
        assert load(fed / f"{party}.crt").issuer == ca.subject
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    ca_ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    leaf_aki = (
        load(fed / "alice.crt")
        .extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
        .value.key_identifier
    )
    assert leaf_aki == ca_ski


def test_cert_info(fed):
    info = cert_info(fed / "alice.crt")
    assert info.subject_cn == "alice"
    assert info.issuer_cn == "Partyline federation CA"
    assert {"alice", "alice.example", "localhost", "10.1.2.3", "127.0.0.1"} <= set(info.sans)
    assert info.is_ca is False
    assert 360 <= info.days_left <= 365
    assert cert_info(fed / "ca.crt").is_ca is True


# --- chain and keys ---------------------------------------------------------------------------
@pytest.mark.parametrize("party", ["alice", "bob"])
def test_verify_chain_passes(fed, party):
    verify_chain(fed / f"{party}.crt", fed / "ca.crt")


def test_verify_chain_against_other_ca_same_name(fed, other_fed):
    with pytest.raises(ValueError, match="signature does not verify"):
        verify_chain(fed / "alice.crt", other_fed / "ca.crt")


def test_verify_chain_against_other_ca_other_name(fed, tmp_path):
    init_federation(tmp_path, ["carol"], ca_name="Someone else's CA")
    with pytest.raises(ValueError, match="not issued by"):
        verify_chain(fed / "alice.crt", tmp_path / "ca.crt")


def test_key_matches_cert(fed, other_fed):
    assert key_matches_cert(fed / "alice.key", fed / "alice.crt")
    assert key_matches_cert(fed / "bob.key", fed / "bob.crt")
    assert not key_matches_cert(fed / "alice.key", fed / "bob.crt")
    assert not key_matches_cert(other_fed / "alice.key", fed / "alice.crt")


def test_rsa_is_default(fed):
    assert isinstance(load(fed / "alice.crt").public_key(), rsa.RSAPublicKey)
    assert isinstance(load(fed / "ca.crt").public_key(), rsa.RSAPublicKey)


def test_ec_key_type(tmp_path):
    init_federation(tmp_path, ["alice", "bob"], key_type="ec")
    for name in ("ca", "alice", "bob"):
        assert isinstance(load(tmp_path / f"{name}.crt").public_key(), ec.EllipticCurvePublicKey)
    for party in ("alice", "bob"):
        verify_chain(tmp_path / f"{party}.crt", tmp_path / "ca.crt")
        assert key_matches_cert(tmp_path / f"{party}.key", tmp_path / f"{party}.crt")
    assert stat.S_IMODE(os.stat(tmp_path / "alice.key").st_mode) == 0o600


def test_unknown_key_type(tmp_path):
    with pytest.raises(ValueError, match="unknown key type 'dsa'"):
        init_federation(tmp_path, ["alice"], key_type="dsa")


def test_init_reuses_existing_ca(tmp_path):
    init_federation(tmp_path, ["alice"])
    ca_before = (tmp_path / "ca.crt").read_bytes()
    init_federation(tmp_path, ["carol"])
    assert (tmp_path / "ca.crt").read_bytes() == ca_before
    verify_chain(tmp_path / "alice.crt", tmp_path / "ca.crt")
    verify_chain(tmp_path / "carol.crt", tmp_path / "ca.crt")
    assert Authority.load(tmp_path).cert.subject == load(tmp_path / "ca.crt").subject


# --- real mutual TLS --------------------------------------------------------------------------
def mtls_exchange(server: tuple, client: tuple, hostname: str):
    """One TLS connection over loopback; each side is (cert, key, ca). Returns (server, client)
    outcome dicts holding the peer CN, the echoed bytes and/or the exception raised.
    A client cert of None means the client presents no certificate."""
    s_cert, s_key, s_ca = server
    c_cert, c_key, c_ca = client

    s_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    s_ctx.load_cert_chain(s_cert, s_key)
    s_ctx.load_verify_locations(s_ca)
    s_ctx.verify_mode = ssl.CERT_REQUIRED

    c_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # check_hostname + CERT_REQUIRED
    if c_cert is not None:
        c_ctx.load_cert_chain(c_cert, c_key)
    c_ctx.load_verify_locations(c_ca)

    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)
    port = listener.getsockname()[1]
    server_out: dict = {}

    def serve() -> None:
        try:
            conn, _ = listener.accept()
            conn.settimeout(10)
            with s_ctx.wrap_socket(conn, server_side=True) as tls:
                peer = tls.getpeercert()
                server_out["peer_cn"] = dict(x[0] for x in peer["subject"])["commonName"]
                tls.sendall(tls.recv(64))
        except Exception as exc:
            server_out["error"] = exc

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client_out: dict = {}
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:  # noqa: SIM117
            with c_ctx.wrap_socket(raw, server_hostname=hostname) as tls:
                peer = tls.getpeercert()
                client_out["peer_cn"] = dict(x[0] for x in peer["subject"])["commonName"]
                tls.sendall(b"ping")
                client_out["echo"] = tls.recv(64)
    except Exception as exc:
        client_out["error"] = exc
    finally:
        thread.join(15)
        listener.close()
    assert not thread.is_alive()
    return server_out, client_out


def party(directory: Path, name: str) -> tuple[Path, Path, Path]:
    return directory / f"{name}.crt", directory / f"{name}.key", directory / "ca.crt"


@pytest.mark.parametrize("hostname", ["alice", "127.0.0.1", "localhost", "alice.example"])
def test_mtls_handshake_succeeds(fed, hostname):
    server_out, client_out = mtls_exchange(party(fed, "alice"), party(fed, "bob"), hostname)
    assert "error" not in server_out, server_out
    assert "error" not in client_out, client_out
    assert server_out["peer_cn"] == "bob"
    assert client_out["peer_cn"] == "alice"
    assert client_out["echo"] == b"ping"


def test_mtls_handshake_succeeds_with_ec(tmp_path):
    init_federation(tmp_path, ["alice", "bob"], key_type="ec")
    server_out, client_out = mtls_exchange(
        party(tmp_path, "alice"), party(tmp_path, "bob"), "alice"
    )
    assert server_out.get("peer_cn") == "bob", server_out
    assert client_out.get("echo") == b"ping", client_out


def test_mtls_rejects_client_cert_from_other_ca(fed, other_fed):
    # the client trusts the right CA but presents a certificate another CA issued
    bob_foreign = (other_fed / "bob.crt", other_fed / "bob.key", fed / "ca.crt")
    server_out, client_out = mtls_exchange(party(fed, "alice"), bob_foreign, "alice")
    assert isinstance(server_out.get("error"), ssl.SSLCertVerificationError), server_out
    assert "peer_cn" not in server_out
    assert "echo" not in client_out  # the client never gets an answer
    assert isinstance(client_out.get("error"), (ssl.SSLError, ConnectionError)), client_out


def test_mtls_rejects_server_cert_from_other_ca(fed, other_fed):
    alice_foreign = (other_fed / "alice.crt", other_fed / "alice.key", fed / "ca.crt")
    _server_out, client_out = mtls_exchange(alice_foreign, party(fed, "bob"), "alice")
    assert isinstance(client_out.get("error"), ssl.SSLCertVerificationError), client_out


def test_mtls_requires_a_client_certificate(fed):
    server_out, client_out = mtls_exchange(
        party(fed, "alice"), (None, None, fed / "ca.crt"), "alice"
    )
    assert isinstance(server_out.get("error"), ssl.SSLError), server_out
    assert "peer_cn" not in server_out
    assert "echo" not in client_out


def test_mtls_rejects_wrong_party(fed):
    # bob expects to reach alice; a server presenting bob's own (valid) cert is not alice
    _server_out, client_out = mtls_exchange(party(fed, "bob"), party(fed, "bob"), "alice")
    assert isinstance(client_out.get("error"), ssl.SSLCertVerificationError), client_out
    assert "alice" in str(client_out["error"])


# --- CLI --------------------------------------------------------------------------------------
def run_cli(*args: str) -> subprocess.CompletedProcess:
    venv_python = REPO_ROOT / ".venv" / "bin" / "python"
    python = str(venv_python) if venv_python.exists() else sys.executable
    env = dict(os.environ, COLUMNS="200", NO_COLOR="1", TERM="dumb")
    return subprocess.run(
        [python, "-m", "certs", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_cli_init_and_show(tmp_path):
    out = tmp_path / "certs"
    init = run_cli("init", "--out", str(out), "--parties", "alice,bob", "--host", "alice=10.0.0.5")
    assert init.returncode == 0, init.stderr
    for name in ("ca.crt", "ca.key", "alice.crt", "alice.key", "bob.crt", "bob.key"):
        assert (out / name).is_file()
    verify_chain(out / "alice.crt", out / "ca.crt")
    alice_ips = (
        load(out / "alice.crt")
        .extensions.get_extension_for_class(x509.SubjectAlternativeName)
        .value.get_values_for_type(x509.IPAddress)
    )
    assert ipaddress.ip_address("10.0.0.5") in alice_ips

    show = run_cli("show", str(out))
    assert show.returncode == 0, show.stderr
    for text in ("alice.crt", "bob.crt", "ca.crt (CA)", "10.0.0.5"):
        assert text in show.stdout, show.stdout


def test_cli_host_for_unknown_party(tmp_path):
    out = tmp_path / "certs"
    result = run_cli("init", "--out", str(out), "--parties", "alice,bob", "--host", "carol=x")
    assert result.returncode != 0
    assert "carol" in result.stderr
    assert not out.exists()


def test_cli_show_without_ca(tmp_path):
    result = run_cli("show", str(tmp_path))
    assert result.returncode == 1
    assert "no ca.crt" in result.stdout


def test_init_refuses_to_replace_a_ca_whose_key_is_missing(tmp_path):
    init_federation(tmp_path, ["alice"])
    before = (tmp_path / "ca.crt").read_bytes()
    (tmp_path / "ca.key").unlink()
    with pytest.raises(FileExistsError, match="refusing to replace"):
        init_federation(tmp_path, ["bob"])
    assert (tmp_path / "ca.crt").read_bytes() == before
