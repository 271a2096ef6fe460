"""`make demo`'s federation before anything starts: every node checks the CA's revocation list."""

from __future__ import annotations

import threading

import pytest
from cryptography import x509

from certs.authority import Authority
from certs.revocation import write_crl
from certs.rotate import rotate
from deploy.local import demo
from deploy.local.demo import prepare
from node.ops.health import run_checks

pytestmark = pytest.mark.timeout(120)

NO_REDIS = "redis://node:x@127.0.0.1:1/0"  # health checks here must not reach a live Redis


def revocation_check(settings):
    checks = run_checks(settings, check_worker=False, check_links=False).checks
    [check] = [c for c in checks if c.name == "revocation list"]
    return check


def test_every_demo_node_checks_the_cas_revocation_list(tmp_path):
    fed, _ = prepare(tmp_path / "demo", ["alice", "bob"], None, say=lambda m: None)
    crl = fed.certs_dir / "crl.pem"
    assert crl.is_file()
    for node in fed.nodes.values():
        assert node.env()["NODE_CRL_FILE"] == str(crl)  # what its worker and Ray head get
        settings = node.settings(NODE_BROKER_URL=NO_REDIS)
        assert settings.crl_file == crl and settings.revoked_serials() == frozenset()
        check = revocation_check(settings)
        assert check.ok and not check.warn and check.detail.startswith("0 revoked; valid 8")


def test_a_certificate_rotated_in_the_demo_is_revoked_for_every_node(tmp_path):
    fed, _ = prepare(tmp_path / "demo", ["alice", "bob"], None, say=lambda m: None)
    old = x509.load_pem_x509_certificate((fed.certs_dir / "bob.crt").read_bytes())
    rotate(fed.certs_dir, "bob")  # the CA directory is the demo's: its list is the nodes'
    settings = fed.nodes["alice"].settings(NODE_BROKER_URL=NO_REDIS)
    assert settings.revoked_serials() == {old.serial_number}
    assert revocation_check(settings).detail.startswith("1 revoked")


def test_a_demo_left_running_renews_the_revocation_list_when_due(tmp_path, monkeypatch):
    fed, _ = prepare(tmp_path / "demo", ["alice", "bob"], None, say=lambda m: None)
    write_crl(fed.certs_dir, Authority.load(fed.certs_dir), days=10)  # 10 days left
    settings = fed.nodes["alice"].settings(NODE_BROKER_URL=NO_REDIS)
    assert revocation_check(settings).warn
    monkeypatch.setattr(demo, "CRL_CHECK_S", 0.0)  # check at once, not in an hour
    stop, said = threading.Event(), []
    demo.keep_running(fed, stop, lambda m: (said.append(m), stop.set()))
    assert said == [f"renewed the CA's revocation list {fed.certs_dir / 'crl.pem'}"]
    check = revocation_check(settings)
    assert check.ok and not check.warn and check.detail.startswith("0 revoked; valid 8")
    assert fed.renew_crl() is False  # in date: kept
