"""`python -m certs csr | sign | install | bundle | rotate` as the Ansible playbook runs them:
real subprocesses, `changed:` lines and --json, one-line errors with exit code 2."""

from __future__ import annotations

import json
import os
import shutil
import stat
import tarfile
from pathlib import Path

import pytest

from certs.authority import init_federation, key_matches_cert, verify_chain
from tests.certs.test_authority import run_cli
from tests.certs.test_requests import tampered

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def ca_dir(tmp_path) -> Path:
    out = tmp_path / "ca"
    init_federation(out, ["bob", "coordinator"])
    return out


def ok(*args: str) -> str:
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    return result.stdout


def as_json(*args: str) -> dict:
    return json.loads(ok(*args, "--json"))


def refused(*args: str) -> str:
    """Exit code 2 and one short readable line on stderr; returns that line."""
    result = run_cli(*args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert len(lines[0]) < 200
    return lines[0]


def test_distributed_flow(ca_dir, tmp_path):
    host = tmp_path / "host"
    csr_args = ("csr", "--party", "alice", "--dir", str(host), "--host", "10.0.0.5")
    first = ok(*csr_args)
    assert "changed: true" in first.splitlines()
    assert "created" in first
    key_bytes, csr_bytes = (host / "alice.key").read_bytes(), (host / "alice.csr").read_bytes()
    mtime = (host / "alice.csr").stat().st_mtime_ns
    assert "changed: false" in ok(*csr_args).splitlines()
    again = as_json(*csr_args)
    assert again == {
        "changed": False,
        "party": "alice",
        "key": str(host / "alice.key"),
        "csr": str(host / "alice.csr"),
        "key_status": "reused",
        "csr_status": "unchanged",
        "mode_fixed": False,
        "pending_key": None,
    }
    assert (host / "alice.key").read_bytes() == key_bytes
    assert (host / "alice.csr").read_bytes() == csr_bytes
    assert (host / "alice.csr").stat().st_mtime_ns == mtime

    signed = tmp_path / "controller" / "alice.crt"
    signed.parent.mkdir()
    sign_args = ("sign", "--ca-dir", str(ca_dir), "--csr", str(host / "alice.csr"))
    issued = as_json(*sign_args, "--out", str(signed), "--party", "alice")
    assert issued["changed"] is True and issued["status"] == "issued"
    assert sorted(p.name for p in signed.parent.iterdir()) == ["alice.crt"]  # nothing else
    verify_chain(signed, ca_dir / "ca.crt")
    assert key_matches_cert(host / "alice.key", signed)
    assert "changed: false" in ok(*sign_args, "--out", str(signed), "--party", "alice").splitlines()

    installed = as_json(
        "install",
        "--party",
        "alice",
        "--dir",
        str(host),
        "--cert",
        str(signed),
        "--ca",
        str(ca_dir / "ca.crt"),
    )
    assert (installed["changed"], installed["cert_status"]) == (True, "created")
    assert key_matches_cert(host / "alice.key", host / "alice.crt")

    out = tmp_path / "alice.tar.gz"
    bundle_args = ("bundle", "--ca-dir", str(ca_dir), "--party", "alice", "--out", str(out))
    made = as_json(*bundle_args, "--cert", str(signed))
    assert made["members"] == [
        "ca.crt",
        "alice.crt",
        "coordinator.crt",
        "crl.pem",
        "manifest.json",
        "README.txt",
    ]
    assert made["serial"] == issued["serial"]
    assert made["crl"] == {
        "written": True,  # the CA had no list yet
        "revoked_serials": [],
        "next_update": made["crl"]["next_update"],
    }
    with tarfile.open(out, "r:gz") as tar:
        for member in tar.getmembers():
            assert b"PRIVATE KEY" not in tar.extractfile(member).read()
    assert as_json(*bundle_args, "--cert", str(signed))["changed"] is False

    # rotation: a staged key on the host, the controller rotates with its request
    staged = as_json(*csr_args, "--new-key")
    assert staged["key"] == str(host / "alice.key.next")
    shutil.copyfile(signed, ca_dir / "alice.crt")  # the controller keeps what it signed
    rotated = as_json("rotate", "--ca-dir", str(ca_dir), "--party", "alice", "--csr", staged["csr"])
    assert rotated["old"]["serial"] == issued["serial"]
    assert rotated["new"]["serial"] != issued["serial"]
    assert rotated["key"] is None and not (ca_dir / "alice.key").exists()
    promoted = as_json(
        "install", "--party", "alice", "--dir", str(host), "--cert", str(ca_dir / "alice.crt")
    )
    assert promoted["key_status"] == "promoted"
    assert key_matches_cert(host / "alice.key", host / "alice.crt")


def test_rotate_dev_layout_prints_old_and_new(ca_dir):
    before = (ca_dir / "coordinator.crt").read_bytes()
    out = ok("rotate", "--ca-dir", str(ca_dir), "--party", "bob")
    assert out.splitlines()[1].startswith("old  serial ")
    assert out.splitlines()[2].startswith("new  serial ")
    assert "changed: true" in out.splitlines()
    assert (ca_dir / "coordinator.crt").read_bytes() == before
    assert len(list(ca_dir.glob("bob.crt.*.old"))) == 1


def test_sign_for_the_wrong_party_is_one_line(ca_dir, tmp_path):
    ok("csr", "--party", "alice", "--dir", str(tmp_path))
    csr = tmp_path / "alice.csr"
    out = tmp_path / "x.crt"
    line = refused(
        "sign", "--ca-dir", str(ca_dir), "--csr", str(csr), "--out", str(out), "--party", "bob"
    )
    assert str(csr) in line and "'alice'" in line and "'bob'" in line
    assert not out.exists()


def test_tampered_request_is_refused(ca_dir, tmp_path):
    ok("csr", "--party", "alice", "--dir", str(tmp_path))
    bad = tmp_path / "bad.csr"
    bad.write_bytes(tampered(tmp_path / "alice.csr"))
    line = refused(
        "sign", "--ca-dir", str(ca_dir), "--csr", str(bad), "--out", str(tmp_path / "x.crt"),
        "--party", "alice",
    )  # fmt: skip
    assert "signature does not verify" in line and str(bad) in line


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("rotate", "--party", "ca"), "federation CA itself"),
        (("rotate", "--party", "carol"), "carol.crt: no such certificate"),
        (
            ("sign", "--csr", "/nonexistent.csr", "--out", "/tmp/x.crt", "--party", "alice"),
            "/nonexistent.csr: no such",
        ),
        (("bundle", "--party", "Bob", "--out", "/tmp/x.tgz"), "'Bob' is not a party name"),
    ],
)
def test_bad_input_is_one_line(ca_dir, args, needle):
    line = refused(args[0], "--ca-dir", str(ca_dir), *args[1:])
    assert needle in line


def test_csr_bad_host_and_help(tmp_path):
    assert "'a b'" in refused("csr", "--party", "alice", "--dir", str(tmp_path), "--host", "a b")
    assert not (tmp_path / "alice.key").exists()
    text = ok("csr", "--help")
    assert "--new-key" in text and "NAME.key.next" in text


def test_ca_made_once(tmp_path):
    ca_dir = tmp_path / "ca"
    first = as_json("ca", "--dir", str(ca_dir))
    assert (first["changed"], first["status"]) == (True, "created")
    assert stat.S_IMODE(os.stat(ca_dir / "ca.key").st_mode) == 0o600
    before = {p.name: p.read_bytes() for p in ca_dir.iterdir()}
    second = as_json("ca", "--dir", str(ca_dir))
    assert (second["changed"], second["serial"]) == (False, first["serial"])
    assert {p.name: p.read_bytes() for p in ca_dir.iterdir()} == before
    (ca_dir / "ca.key").unlink()
    assert "ca.key: no such file" in refused("ca", "--dir", str(ca_dir))
    assert (ca_dir / "ca.crt").read_bytes() == before["ca.crt"]


# --- a certificate names only its owner (issue 22, point 5) ------------------------------------
def test_sign_needs_the_expected_party(ca_dir, tmp_path):
    ok("csr", "--party", "alice", "--dir", str(tmp_path))
    done = run_cli("sign", "--ca-dir", str(ca_dir), "--csr", str(tmp_path / "alice.csr"),
               "--out", str(tmp_path / "x.crt"))  # fmt: skip
    assert done.returncode == 2 and "--party" in done.stderr
    assert not (tmp_path / "x.crt").exists()


@pytest.mark.parametrize(
    ("host", "owner", "how"),
    [
        ("alice-redis.example", "alice", "alice's certificate holds it"),
        ("192.0.2.11", "alice", "alice's certificate holds it"),
        ("192.0.2.10", "coordinator", "--host-of"),
        ("coord.example", "coordinator", "--host-of"),
    ],
)
def test_a_request_naming_another_partys_or_the_coordinators_host_is_refused(
    ca_dir, tmp_path, host, owner, how
):
    """carol asks for a certificate that also names alice's Redis host (or address) or the
    coordinator's: with it, and a network position, carol could pose as alice's Redis and
    receive the coordinator's ACL password and signed tasks. Refused, naming the owner."""
    alice = tmp_path / "alice"
    ok("csr", "--party", "alice", "--dir", str(alice),
       "--host", "alice-redis.example", "--host", "192.0.2.11")  # fmt: skip
    ok("sign", "--ca-dir", str(ca_dir), "--csr", str(alice / "alice.csr"),
       "--out", str(ca_dir / "alice.crt"), "--party", "alice")  # fmt: skip
    carol = tmp_path / "carol"
    ok("csr", "--party", "carol", "--dir", str(carol), "--host", "carol.example", "--host", host)
    out = tmp_path / "carol.crt"
    line = refused(
        "sign", "--ca-dir", str(ca_dir), "--csr", str(carol / "carol.csr"), "--out", str(out),
        "--party", "carol", "--host-of", "coordinator=192.0.2.10",
        "--host-of", "coordinator=coord.example",
    )  # fmt: skip
    assert f"{host!r} is {owner}'s registered host" in line, (how, line)
    assert not out.exists()
    # its own hosts only: signed
    ok("csr", "--party", "carol", "--dir", str(carol), "--host", "carol.example")
    fine = as_json(
        "sign", "--ca-dir", str(ca_dir), "--csr", str(carol / "carol.csr"), "--out", str(out),
        "--party", "carol", "--host-of", "coordinator=192.0.2.10",
    )  # fmt: skip
    assert fine["status"] == "issued"


def test_rotation_revokes_the_old_certificate_and_crl_and_revoke_commands(ca_dir):
    from cryptography import x509

    rotated = as_json("rotate", "--ca-dir", str(ca_dir), "--party", "bob")
    crl = x509.load_pem_x509_crl((ca_dir / "crl.pem").read_bytes())
    assert [format(r.serial_number, "x") for r in crl] == [rotated["old"]["serial"].lower()]
    listed = json.loads((ca_dir / "revoked.json").read_text())
    assert [(r["party"], r["reason"]) for r in listed] == [("bob", "rotated")]
    again = as_json("crl", "--ca-dir", str(ca_dir))
    assert (again["revoked"], again["changed"]) == (1, False)  # in date, the same list: kept
    renewed = as_json("crl", "--ca-dir", str(ca_dir), "--renew-days", "100")
    assert renewed["changed"] is True
    # a stolen coordinator key: revoked by hand, without a new certificate
    gone = as_json("revoke", "--ca-dir", str(ca_dir), "--cert", str(ca_dir / "coordinator.crt"))
    assert gone["party"] == "coordinator"
    crl = x509.load_pem_x509_crl((ca_dir / "crl.pem").read_bytes())
    assert len(list(crl)) == 2
