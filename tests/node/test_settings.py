"""Node settings and signer checks that protect the boundary between organisations."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from certs.authority import init_federation
from node.settings import NodeSettings
from node.worker.signing import SignerError, check_task_signers


def _settings(tmp_path, **kw) -> NodeSettings:
    base = {
        "party": "alice",
        "broker_url": "rediss://node:s3cret-Zq81@alice.example:6380/0",
        "data_root": tmp_path,
        "cert_file": tmp_path / "alice.crt",
        "key_file": tmp_path / "alice.key",
        "ca_file": tmp_path / "ca.crt",
        "trusted_signers": str(tmp_path / "coordinator.crt"),
    }
    return NodeSettings(**{**base, **kw})


def test_plain_redis_to_another_host_is_refused_unless_allowed(tmp_path):
    url = "redis://node:s3cret-Zq81@10.0.0.5:6379/0"
    with pytest.raises(ValidationError) as err:
        _settings(tmp_path, broker_url=url)
    msg = str(err.value)
    assert "NODE_BROKER_URL is redis:// (no TLS) to 10.0.0.5, another host" in msg
    assert "NODE_ALLOW_PLAINTEXT_REDIS=true" in msg and "s3cret" not in msg
    assert _settings(tmp_path, broker_url=url, allow_plaintext_redis=True).broker_url == url
    local = "redis://node:s3cret-Zq81@127.0.0.1:6379/0"  # this machine: no need to say so
    assert _settings(tmp_path, broker_url=local).broker_url == local


@pytest.fixture()
def certs(tmp_path):
    d = tmp_path / "certs"
    init_federation(d, ["alice", "bob", "coordinator"])
    return d


def test_the_coordinators_certificate_is_the_only_task_signer(certs):
    files = check_task_signers(str(certs / "coordinator.crt"), party="alice", peers=["bob"])
    assert [f.name for f in files] == ["coordinator.crt"]


@pytest.mark.parametrize(
    ("trusted", "needle"),
    [
        ("{d}", "is a directory"),
        ("{d}/*.crt", "is the certificate of this party 'alice'"),
        ("{d}/bob.crt", "is the certificate of peer party 'bob'"),
        ("{d}/alice.crt", "is the certificate of this party 'alice'"),
        ("{d}/ca.crt", "is a CA certificate"),
        ("{d}/nothing-*.crt", "no certificate matches"),
    ],
    ids=["directory", "glob-of-all", "peer", "own", "ca", "none"],
)
def test_a_party_certificate_or_a_folder_of_them_is_refused_as_signer(certs, trusted, needle):
    """With the federation's certs folder as signer store, bob could sign tasks for alice."""
    with pytest.raises(SignerError, match=needle):
        check_task_signers(trusted.format(d=certs), party="alice", peers=["bob"])
