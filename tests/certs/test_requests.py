"""certs.requests + certs.signing: a party's key made on its host, a request signed by the CA,
the certificate installed; real keys, real signatures, a real mTLS handshake."""

from __future__ import annotations

import base64
import ipaddress
import os
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from certs.authority import Authority, init_federation, key_matches_cert, verify_chain
from certs.common import CertsError, Outcome, party_names
from certs.requests import ensure_key_and_csr, install_cert, make_csr
from certs.signing import ensure_signed, load_csr, sign_csr
from tests.certs.test_authority import mtls_exchange

pytestmark = pytest.mark.timeout(60)
HOSTS = ["alice.example", "10.1.2.3", "localhost"]


@pytest.fixture(scope="module")
def ca_dir(tmp_path_factory) -> Path:
    """The controller's CA directory, made by `init` for bob and the coordinator."""
    out = tmp_path_factory.mktemp("ca")
    init_federation(out, ["bob", "coordinator"])
    return out


@pytest.fixture(scope="module")
def authority(ca_dir) -> Authority:
    return Authority.load(ca_dir)


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def sans_of(obj: x509.Certificate | x509.CertificateSigningRequest) -> set[str]:
    san = obj.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(v) for v in san.get_values_for_type(x509.DNSName)} | {
        str(v) for v in san.get_values_for_type(x509.IPAddress)
    }


def raw_csr(key, cn: str, sans: list[x509.GeneralName], ca: bool = False):
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=0), True)
    return builder.sign(key, hashes.SHA256())


def tampered(csr_path: Path) -> bytes:
    der = load_csr(csr_path).public_bytes(serialization.Encoding.DER)
    i = der.index(b"alice")  # the subject CN, inside the signed part
    der = der[:i] + b"alicf" + der[i + 5 :]
    body = base64.encodebytes(der)
    return b"-----BEGIN CERTIFICATE REQUEST-----\n" + body + b"-----END CERTIFICATE REQUEST-----\n"


@pytest.fixture
def host(tmp_path) -> Path:
    """alice's host directory holding a key and request made there."""
    ensure_key_and_csr(tmp_path / "host", "alice", HOSTS)
    return tmp_path / "host"


# --- csr ---------------------------------------------------------------------------------------
def test_csr_creates_key_and_request(tmp_path):
    res = ensure_key_and_csr(tmp_path, "alice", HOSTS)
    assert (res.key_outcome, res.csr_outcome, res.changed) == (Outcome.CREATED,) * 2 + (True,)
    assert stat.S_IMODE(os.stat(tmp_path / "alice.key").st_mode) == 0o600
    csr = load_csr(tmp_path / "alice.csr")
    assert csr.is_signature_valid
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "alice"
    assert csr.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == (
        "partyline"
    )
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["alice", "alice.example", "localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("10.1.2.3"),
        ipaddress.ip_address("127.0.0.1"),
    ]
    key = serialization.load_pem_private_key((tmp_path / "alice.key").read_bytes(), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    assert csr.public_key() == key.public_key()


def test_csr_twice_changes_nothing(host):
    key, csr = host / "alice.key", host / "alice.csr"
    before = (key.read_bytes(), csr.read_bytes(), key.stat().st_mtime_ns, csr.stat().st_mtime_ns)
    res = ensure_key_and_csr(host, "alice", list(reversed(HOSTS)))  # same set, other order
    assert (res.key_outcome, res.csr_outcome) == (Outcome.REUSED, Outcome.UNCHANGED)
    assert res.changed is False
    after = (key.read_bytes(), csr.read_bytes(), key.stat().st_mtime_ns, csr.stat().st_mtime_ns)
    assert after == before


def test_csr_rewritten_when_hosts_change_key_kept(host):
    key_before = (host / "alice.key").read_bytes()
    res = ensure_key_and_csr(host, "alice", [*HOSTS, "alice2.example"])
    assert (res.key_outcome, res.csr_outcome) == (Outcome.REUSED, Outcome.UPDATED)
    assert (host / "alice.key").read_bytes() == key_before
    assert "alice2.example" in sans_of(load_csr(host / "alice.csr"))


def test_csr_tightens_a_loose_key_mode(host):
    os.chmod(host / "alice.key", 0o644)
    res = ensure_key_and_csr(host, "alice", HOSTS)
    assert res.mode_fixed and res.changed
    assert stat.S_IMODE(os.stat(host / "alice.key").st_mode) == 0o600


def test_csr_ec_key_and_type_mismatch(tmp_path, host):
    res = ensure_key_and_csr(tmp_path / "ec", "alice", [], key_type="ec")
    assert isinstance(load_csr(res.csr).public_key(), ec.EllipticCurvePublicKey)
    with pytest.raises(CertsError, match=r"alice.key: an existing RSA key, not EC"):
        ensure_key_and_csr(host, "alice", HOSTS, key_type="ec")


@pytest.mark.parametrize(
    ("party", "hosts", "message"),
    [
        ("Alice", [], "not a party name"),
        ("ca", [], "federation CA"),
        ("alice", ["bad host"], "neither an IP address nor a DNS host name"),
        ("alice", ["*.example"], "neither an IP address"),
    ],
)
def test_csr_refuses_bad_names(tmp_path, party, hosts, message):
    with pytest.raises(CertsError, match=message):
        ensure_key_and_csr(tmp_path, party, hosts)
    assert list(tmp_path.iterdir()) == []


def test_new_key_is_staged_next_to_the_live_one(host):
    live = (host / "alice.key").read_bytes()
    res = ensure_key_and_csr(host, "alice", HOSTS, new_key=True)
    assert res.key == host / "alice.key.next"
    assert (res.key_outcome, res.csr_outcome) == (Outcome.CREATED, Outcome.UPDATED)
    assert (host / "alice.key").read_bytes() == live
    assert stat.S_IMODE(os.stat(res.key).st_mode) == 0o600
    nxt = serialization.load_pem_private_key(res.key.read_bytes(), None)
    assert load_csr(res.csr).public_key() == nxt.public_key()
    again = ensure_key_and_csr(host, "alice", HOSTS, new_key=True)
    assert (again.key_outcome, again.csr_outcome, again.changed) == (
        Outcome.REUSED,
        Outcome.UNCHANGED,
        False,
    )
    assert ensure_key_and_csr(host, "alice", HOSTS).pending == host / "alice.key.next"


# --- sign --------------------------------------------------------------------------------------
def test_signed_certificate_verifies_and_fits_the_host_key(ca_dir, authority, host, tmp_path):
    out = tmp_path / "alice.crt"
    res = ensure_signed(authority, host / "alice.csr", out, "alice")
    assert res.outcome is Outcome.ISSUED
    verify_chain(out, ca_dir / "ca.crt")
    assert key_matches_cert(host / "alice.key", out)
    cert = load(out)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "alice"
    assert sans_of(cert) == {"alice", "alice.example", "localhost", "10.1.2.3", "127.0.0.1"}


def test_signed_certificate_has_the_init_profile(ca_dir, authority, host):
    signed = sign_csr(authority, load_csr(host / "alice.csr"))
    made = load(ca_dir / "bob.crt")

    def profile(cert: x509.Certificate):
        exts = {(e.oid, e.critical) for e in cert.extensions}
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        return exts, ku, list(eku), aki, [a.oid for a in cert.subject], cert.issuer

    assert profile(signed) == profile(made)


def test_sign_adds_the_party_name_and_defaults(authority):
    key = ec.generate_private_key(ec.SECP256R1())
    csr = raw_csr(key, "alice", [x509.DNSName("alice.example")])
    assert sans_of(sign_csr(authority, csr)) == {
        "alice",
        "alice.example",
        "localhost",
        "127.0.0.1",
    }


def test_sign_twice_keeps_the_certificate(authority, host, tmp_path):
    out = tmp_path / "alice.crt"
    ensure_signed(authority, host / "alice.csr", out)
    before = (out.read_bytes(), out.stat().st_mtime_ns)
    res = ensure_signed(authority, host / "alice.csr", out)
    assert (res.outcome, res.changed) == (Outcome.UNCHANGED, False)
    assert (out.read_bytes(), out.stat().st_mtime_ns) == before


def test_sign_reissues_near_expiry_new_key_or_foreign_ca(authority, host, tmp_path):
    out = tmp_path / "alice.crt"
    ensure_signed(authority, host / "alice.csr", out, days=20)
    assert ensure_signed(authority, host / "alice.csr", out).outcome is Outcome.ISSUED  # 20 ≤ 30
    assert ensure_signed(authority, host / "alice.csr", out).outcome is Outcome.UNCHANGED
    ensure_key_and_csr(host, "alice", HOSTS, new_key=True)
    assert ensure_signed(authority, host / "alice.csr", out).outcome is Outcome.ISSUED
    other = Authority.create()
    assert ensure_signed(other, host / "alice.csr", out).outcome is Outcome.ISSUED
    assert ensure_signed(authority, host / "alice.csr", out).outcome is Outcome.ISSUED


def test_sign_refuses_another_partys_request(authority, host, tmp_path):
    out = tmp_path / "x.crt"
    with pytest.raises(CertsError) as err:
        ensure_signed(authority, host / "alice.csr", out, party="bob")
    assert (
        str(err.value) == f"{host / 'alice.csr'}: the request is for 'alice', not 'bob' (--party)"
    )
    assert not out.exists()


def test_sign_refuses_a_tampered_request(authority, host, tmp_path):
    bad = tmp_path / "bad.csr"
    bad.write_bytes(tampered(host / "alice.csr"))
    with pytest.raises(CertsError, match=r"bad.csr: the request's signature does not verify"):
        ensure_signed(authority, bad, tmp_path / "x.crt")
    assert not (tmp_path / "x.crt").exists()


def test_sign_refuses_a_ca_request(authority):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    csr = raw_csr(key, "alice", [x509.DNSName("alice")], ca=True)
    with pytest.raises(CertsError, match="asks for a CA certificate"):
        sign_csr(authority, csr, source="evil.csr")


@pytest.mark.parametrize(
    ("cn", "sans", "message"),
    [
        ("alice", [x509.RFC822Name("alice@example.org")], "RFC822Name; only DNS names and IP"),
        ("alice", [x509.UniformResourceIdentifier("https://x")], "UniformResourceIdentifier"),
        ("alice", [x509.DNSName("*.example.org")], "neither an IP address nor a DNS"),
        ("alice", [x509.DNSName("bob")], "'bob' is another party's name"),
        ("Alice", [], "CN 'Alice' is not a party name"),
        ("ca", [], "CN 'ca' is not a party name"),
    ],
)
def test_sign_refuses_bad_requests(authority, ca_dir, cn, sans, message):
    key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(CertsError, match=message):
        sign_csr(authority, raw_csr(key, cn, sans), reserved=party_names(ca_dir))


def test_sign_refuses_a_weak_rsa_key(authority):
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(CertsError, match="RSA key of 1024 bits"):
        sign_csr(authority, raw_csr(key, "alice", []))


def test_a_party_may_name_itself_in_its_san(authority, ca_dir):
    key = ec.generate_private_key(ec.SECP256R1())
    cert = sign_csr(authority, raw_csr(key, "bob", [x509.DNSName("bob")]), reserved={"bob"})
    assert "bob" in sans_of(cert)
    assert party_names(ca_dir) == {"bob", "coordinator"}


# --- install -----------------------------------------------------------------------------------
def test_install_then_rotate_the_host_key(authority, ca_dir, host, tmp_path):
    signed = tmp_path / "alice.crt"
    ensure_signed(authority, host / "alice.csr", signed)
    res = install_cert(host, "alice", signed, ca_dir / "ca.crt")
    assert (res.cert_outcome, res.key_outcome) == (Outcome.CREATED, Outcome.UNCHANGED)
    assert install_cert(host, "alice", signed).changed is False
    old_key, old_crt = (host / "alice.key").read_bytes(), (host / "alice.crt").read_bytes()

    ensure_key_and_csr(host, "alice", HOSTS, new_key=True)
    staged = (host / "alice.key.next").read_bytes()
    ensure_signed(authority, host / "alice.csr", signed)
    res = install_cert(host, "alice", signed, ca_dir / "ca.crt")
    assert (res.cert_outcome, res.key_outcome) == (Outcome.UPDATED, Outcome.PROMOTED)
    assert not (host / "alice.key.next").exists()
    assert (host / "alice.key").read_bytes() == staged
    assert (host / "alice.key.old").read_bytes() == old_key
    assert (host / "alice.crt.old").read_bytes() == old_crt
    assert key_matches_cert(host / "alice.key", host / "alice.crt")
    assert stat.S_IMODE(os.stat(host / "alice.key").st_mode) == 0o600


def test_install_refuses_what_does_not_fit(authority, ca_dir, host, tmp_path):
    with pytest.raises(CertsError, match="is for 'bob', not 'alice'"):
        install_cert(host, "alice", ca_dir / "bob.crt")
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    stray = tmp_path / "stray.crt"
    stray.write_bytes(
        sign_csr(authority, make_csr(other_key, "alice", [])).public_bytes(
            serialization.Encoding.PEM
        )
    )
    with pytest.raises(CertsError, match="matches neither"):
        install_cert(host, "alice", stray)
    foreign = Authority.create()
    signed = tmp_path / "foreign.crt"
    ensure_signed(foreign, host / "alice.csr", signed)
    with pytest.raises(CertsError, match="not signed by the CA"):
        install_cert(host, "alice", signed, ca_dir / "ca.crt")
    assert not (host / "alice.crt").exists()


# --- real mutual TLS: a csr/sign party talks to an init party ----------------------------------
@pytest.mark.parametrize("alice_serves", [True, False])
def test_mtls_between_signed_and_init_parties(authority, ca_dir, host, tmp_path, alice_serves):
    ensure_signed(authority, host / "alice.csr", tmp_path / "alice.crt")
    assert not (ca_dir / "alice.key").exists()  # the CA never saw alice's key
    alice = (tmp_path / "alice.crt", host / "alice.key", ca_dir / "ca.crt")
    bob = (ca_dir / "bob.crt", ca_dir / "bob.key", ca_dir / "ca.crt")
    server, client, name = (alice, bob, "alice.example") if alice_serves else (bob, alice, "bob")
    server_out, client_out = mtls_exchange(server, client, name)
    assert "error" not in server_out, server_out
    assert "error" not in client_out, client_out
    assert server_out["peer_cn"] == ("bob" if alice_serves else "alice")
    assert client_out["echo"] == b"ping"
