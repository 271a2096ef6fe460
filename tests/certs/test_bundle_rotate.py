"""certs.bundle (never a key in the tarball) and certs.rotate (one party, nobody else's files)."""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
import os
import stat
import tarfile
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from certs.authority import Authority, init_federation, key_matches_cert, verify_chain
from certs.bundle import PrivateKeyInBundle, check_member, write_bundle
from certs.common import CertsError, Outcome
from certs.requests import ensure_key_and_csr
from certs.revocation import CRL_RENEW_DAYS, revoked_serials, write_crl
from certs.rotate import rotate
from certs.signing import ensure_signed

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def ca_dir(tmp_path) -> Path:
    out = tmp_path / "ca"
    init_federation(
        out, ["alice", "bob", "coordinator"], hosts={"bob": ["bob.example", "10.9.8.7"]}
    )
    return out


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path, "r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def snapshot(directory: Path, prefix: str) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in directory.iterdir() if p.name.startswith(prefix)}


def sans(cert: x509.Certificate) -> set[str]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(v.value) for v in san}


# --- bundle ------------------------------------------------------------------------------------
def test_bundle_members_and_manifest(ca_dir, tmp_path):
    out = tmp_path / "alice.tar.gz"
    res = write_bundle(ca_dir, "alice", out)
    assert res.outcome is Outcome.CREATED
    files = members(out)
    assert set(files) == {
        "ca.crt", "alice.crt", "coordinator.crt", "crl.pem", "manifest.json", "README.txt"
    }  # fmt: skip
    for name in ("ca.crt", "alice.crt", "coordinator.crt"):
        assert x509.load_pem_x509_certificate(files[name]) == load(ca_dir / name)
    manifest = json.loads(files["manifest.json"])
    alice = load(ca_dir / "alice.crt")
    entry = manifest["certificates"]["alice.crt"]
    assert manifest["party"] == "alice"
    assert entry["serial"] == format(alice.serial_number, "x") == res.serial
    assert entry["subject_cn"] == "alice"
    assert entry["not_after"].startswith(f"{alice.not_valid_after_utc:%Y-%m-%d}")
    der = x509.load_pem_x509_certificate(files["alice.crt"]).public_bytes(
        serialization.Encoding.DER
    )
    assert entry["sha256"] == hashlib.sha256(der).hexdigest()
    assert entry["sha256"] in files["README.txt"].decode()
    assert set(manifest["certificates"]) == {"ca.crt", "alice.crt", "coordinator.crt"}


def test_bundle_holds_no_private_key_material(ca_dir, tmp_path):
    # a certificate file with its key pasted after it: only the certificate goes in
    mixed = tmp_path / "alice-with-key.crt"
    mixed.write_bytes((ca_dir / "alice.crt").read_bytes() + (ca_dir / "alice.key").read_bytes())
    out = tmp_path / "alice.tar.gz"
    write_bundle(ca_dir, "alice", out, cert=mixed)
    for name, data in members(out).items():
        assert b"PRIVATE KEY" not in data, name
        assert not name.endswith(".key")
    assert b"PRIVATE KEY" not in gzip.decompress(out.read_bytes())


@pytest.mark.parametrize(
    ("name", "data"),
    [("alice.key", b"x"), ("alice.key.old", b"x"), ("notes.txt", b"-----BEGIN PRIVATE KEY-----")],
)
def test_check_member_refuses_keys(name, data):
    with pytest.raises(PrivateKeyInBundle):
        check_member(name, data)


def test_bundle_is_reproducible(ca_dir, tmp_path):
    out = tmp_path / "alice.tar.gz"
    write_bundle(ca_dir, "alice", out)
    before = (out.read_bytes(), out.stat().st_mtime_ns)
    res = write_bundle(ca_dir, "alice", out)
    assert (res.outcome, res.changed) == (Outcome.UNCHANGED, False)
    assert (out.read_bytes(), out.stat().st_mtime_ns) == before


def test_coordinator_bundle_has_no_second_coordinator_cert(ca_dir, tmp_path):
    res = write_bundle(ca_dir, "coordinator", tmp_path / "c.tar.gz")
    assert set(members(res.path)) == {"ca.crt", "coordinator.crt", "manifest.json", "README.txt"}
    assert res.crl is None  # the coordinator checks no revocation list


def test_bundle_refusals(ca_dir, tmp_path):
    other = tmp_path / "other"
    init_federation(other, ["alice"])
    out = tmp_path / "b.tar.gz"
    with pytest.raises(CertsError, match="not signed by the CA"):
        write_bundle(ca_dir, "alice", out, cert=other / "alice.crt")
    with pytest.raises(CertsError, match="is for 'alice', not 'bob'"):
        write_bundle(ca_dir, "bob", out, cert=ca_dir / "alice.crt")
    with pytest.raises(CertsError, match=r"coordinator.crt: no such file"):
        write_bundle(other, "alice", out)
    with pytest.raises(CertsError, match="a CA certificate"):
        write_bundle(ca_dir, "alice", out, coordinator_cert=ca_dir / "ca.crt")
    assert not out.exists()


def unpack(bundle: Path, into: Path) -> Path:
    into.mkdir()
    for name, data in members(bundle).items():
        (into / name).write_bytes(data)
    return into


def test_a_party_installed_from_its_bundle_refuses_a_rotated_out_certificate(ca_dir, tmp_path):
    old_bob = load(ca_dir / "bob.crt")
    rotate(ca_dir, "bob")  # revokes bob's old certificate
    res = write_bundle(ca_dir, "alice", tmp_path / "alice.tar.gz")
    old = format(old_bob.serial_number, "x")
    assert res.crl is not None and res.crl.serials == (old,)
    manifest = json.loads(members(res.path)["manifest.json"])
    assert manifest["revocation_list"]["revoked_serials"] == [old]
    assert old in members(res.path)["README.txt"].decode()
    # alice's host, installed from the bundle alone: her node's settings read the list
    host = unpack(res.path, tmp_path / "alice-host")
    assert old_bob.serial_number in revoked_serials(host / "crl.pem", host / "ca.crt")
    from node.ops.health import run_checks
    from node.settings import NodeSettings

    settings = NodeSettings(
        party="alice", broker_url="redis://node:x@127.0.0.1:1/0", data_root=str(tmp_path),
        cert_file=str(host / "alice.crt"), key_file=str(ca_dir / "alice.key"),
        ca_file=str(host / "ca.crt"), crl_file=str(host / "crl.pem"),
        trusted_signers=str(host / "coordinator.crt"), allowed_peers="bob",
    )  # fmt: skip
    assert settings.revoked_serials() == {old_bob.serial_number}
    checks = run_checks(settings, check_worker=False, check_links=False).checks
    [check] = [c for c in checks if c.name == "revocation list"]
    assert check.ok and not check.warn and check.detail.startswith("1 revoked")


def test_a_bundle_writes_the_list_only_when_it_must(ca_dir, tmp_path):
    out = tmp_path / "alice.tar.gz"
    assert not (ca_dir / "crl.pem").exists()
    first = write_bundle(ca_dir, "alice", out)
    assert first.crl is not None and first.crl.written and first.crl.serials == ()
    crl_bytes = (ca_dir / "crl.pem").read_bytes()
    again = write_bundle(ca_dir, "alice", out)  # the list is current: kept, bundle unchanged
    assert again.crl is not None and not again.crl.written and not again.changed
    assert (ca_dir / "crl.pem").read_bytes() == crl_bytes
    write_crl(ca_dir, Authority.load(ca_dir), days=CRL_RENEW_DAYS - 1)  # due for renewal
    renewed = write_bundle(ca_dir, "alice", out)
    assert renewed.crl is not None and renewed.crl.written and renewed.changed
    due = x509.load_pem_x509_crl(members(out)["crl.pem"]).next_update_utc
    assert due is not None and (due - dt.datetime.now(dt.UTC)).days > CRL_RENEW_DAYS


def test_a_current_list_is_bundled_without_the_ca_key(ca_dir, tmp_path):
    write_bundle(ca_dir, "alice", tmp_path / "first.tar.gz")  # writes crl.pem
    (ca_dir / "ca.key").rename(tmp_path / "ca.key.offline")
    res = write_bundle(ca_dir, "bob", tmp_path / "bob.tar.gz")
    assert res.crl is not None and not res.crl.written
    (ca_dir / "crl.pem").unlink()
    with pytest.raises(CertsError, match=r"crl.pem is missing.*needs the CA's key.*ca.key"):
        write_bundle(ca_dir, "bob", tmp_path / "bob.tar.gz")


def test_a_list_of_another_ca_is_never_bundled(ca_dir, tmp_path):
    other = tmp_path / "other"
    init_federation(other, ["alice"])
    write_crl(other, Authority.load(other))
    (ca_dir / "crl.pem").write_bytes((other / "crl.pem").read_bytes())
    res = write_bundle(ca_dir, "alice", tmp_path / "alice.tar.gz")
    assert res.crl is not None and res.crl.written  # replaced by this CA's
    host = unpack(res.path, tmp_path / "host")
    assert revoked_serials(host / "crl.pem", host / "ca.crt") == frozenset()


# --- rotate ------------------------------------------------------------------------------------
def test_rotate_dev_layout_touches_only_that_party(ca_dir):
    others = {**snapshot(ca_dir, "alice"), **snapshot(ca_dir, "ca"), **snapshot(ca_dir, "coord")}
    old = load(ca_dir / "bob.crt")
    old_key = (ca_dir / "bob.key").read_bytes()
    res = rotate(ca_dir, "bob")
    new = load(ca_dir / "bob.crt")
    assert new.serial_number != old.serial_number
    assert res.old_cert == old and res.cert == new
    tag = format(old.serial_number, "x")
    assert load(ca_dir / f"bob.crt.{tag}.old") == old
    assert (ca_dir / f"bob.key.{tag}.old").read_bytes() == old_key
    assert stat.S_IMODE(os.stat(ca_dir / f"bob.key.{tag}.old").st_mode) == 0o600
    assert (ca_dir / "bob.key").read_bytes() != old_key
    assert key_matches_cert(ca_dir / "bob.key", ca_dir / "bob.crt")
    verify_chain(ca_dir / "bob.crt", ca_dir / "ca.crt")
    assert sans(new) == sans(old)  # bob.example and 10.9.8.7 kept
    assert {**snapshot(ca_dir, "alice"), **snapshot(ca_dir, "ca"), **snapshot(ca_dir, "coord")} == (
        others
    )


def test_rotate_always_reissues(ca_dir):
    first = rotate(ca_dir, "bob").cert
    second = rotate(ca_dir, "bob").cert
    assert first.serial_number != second.serial_number
    assert len(list(ca_dir.glob("bob.crt.*.old"))) == 2


def test_rotate_with_a_request_writes_no_key(ca_dir, tmp_path):
    host = tmp_path / "host"
    ensure_key_and_csr(host, "dave", ["dave.example"])
    authority = Authority.load(ca_dir)
    ensure_signed(authority, host / "dave.csr", ca_dir / "dave.crt")
    old = load(ca_dir / "dave.crt")
    others = {p.name: p.read_bytes() for p in ca_dir.iterdir() if not p.name.startswith("dave")}

    staged = ensure_key_and_csr(host, "dave", ["dave.example"], new_key=True)
    res = rotate(ca_dir, "dave", csr_path=staged.csr)
    assert res.key_path is None
    assert not (ca_dir / "dave.key").exists()
    assert key_matches_cert(host / "dave.key.next", ca_dir / "dave.crt")
    assert load(ca_dir / f"dave.crt.{format(old.serial_number, 'x')}.old") == old
    assert "dave.example" in sans(res.cert)
    after = {p.name: p.read_bytes() for p in ca_dir.iterdir() if not p.name.startswith("dave")}
    # no other party's file changed; the CA's revocation list now names dave's old certificate
    assert {k: v for k, v in after.items() if k not in ("crl.pem", "revoked.json")} == others
    assert old.serial_number in revoked_serials(ca_dir / "crl.pem", ca_dir / "ca.crt")


def test_rotate_with_a_request_moves_a_stale_ca_side_key_aside(ca_dir, tmp_path):
    staged = ensure_key_and_csr(tmp_path / "host", "bob", [])
    old = load(ca_dir / "bob.crt")
    rotate(ca_dir, "bob", csr_path=staged.csr)
    assert not (ca_dir / "bob.key").exists()
    assert (ca_dir / f"bob.key.{format(old.serial_number, 'x')}.old").exists()
    assert key_matches_cert(staged.key, ca_dir / "bob.crt")


def test_rotate_a_new_party_from_its_request(ca_dir, tmp_path):
    staged = ensure_key_and_csr(tmp_path / "host", "erin", [])
    res = rotate(ca_dir, "erin", csr_path=staged.csr)
    assert res.old_cert is None and res.backups == ()
    verify_chain(ca_dir / "erin.crt", ca_dir / "ca.crt")


def test_rotate_refusals(ca_dir, tmp_path):
    before = {p.name: p.read_bytes() for p in ca_dir.iterdir()}
    with pytest.raises(CertsError, match="federation CA itself"):
        rotate(ca_dir, "ca")
    with pytest.raises(CertsError, match="'carol' is not a party of this CA"):
        rotate(ca_dir, "carol")
    alice_csr = ensure_key_and_csr(tmp_path / "host", "alice", []).csr
    with pytest.raises(CertsError, match="the request is for 'alice', not 'bob'"):
        rotate(ca_dir, "bob", csr_path=alice_csr)
    with pytest.raises(CertsError, match="--key-type applies without --csr only"):
        rotate(ca_dir, "alice", csr_path=alice_csr, key_type="ec")
    (ca_dir / "bob.key").unlink()
    with pytest.raises(CertsError, match="bob's key lives on its own host"):
        rotate(ca_dir, "bob")
    before.pop("bob.key")
    assert {p.name: p.read_bytes() for p in ca_dir.iterdir()} == before


def test_rotate_keeps_the_key_type(tmp_path):
    init_federation(tmp_path, ["alice"], key_type="ec")
    rotate(tmp_path, "alice")
    key = serialization.load_pem_private_key((tmp_path / "alice.key").read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key_matches_cert(tmp_path / "alice.key", tmp_path / "alice.crt")
