"""The cross-silo receiver's allow-list (pure: pickled payloads, nothing executed)."""

from __future__ import annotations

import os
import pickle

import cloudpickle
import pytest

from node.fedlink import ALLOWED_GLOBALS, comm_options, payload_problem


class _Exec:
    def __reduce__(self):
        return (exec, ("open('/tmp/partyline-pwned', 'w')",))


class _System:
    def __reduce__(self):
        return (os.system, ("true",))


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        (_Exec(), "forbidden global builtins.exec"),
        (_System(), "forbidden global posix.system"),
        (lambda: 1, "forbidden global"),  # cloudpickle'd code
    ],
    ids=["exec", "os.system", "function"],
)
def test_a_payload_naming_anything_outside_the_allow_list_is_refused(payload, needle):
    assert needle in (payload_problem(cloudpickle.dumps(payload)) or "")


@pytest.mark.parametrize(
    "payload",
    [b"data", {"a": [1, 2.5, (3, "x")], "b": None}, {1, 2}, RuntimeError("boom")],
    ids=["rayfed-ping", "plain-data", "set", "error"],
)
def test_what_the_link_really_carries_is_accepted(payload):
    assert payload_problem(pickle.dumps(payload)) is None


def test_rayfed_gets_the_same_allow_list_and_the_job_parties():
    opts = comm_options(["bob", "alice"])
    assert opts["serializing_allowed_list"] == ALLOWED_GLOBALS
    assert opts["partyline_peers"] == ["alice", "bob"]
    assert "exec" not in ALLOWED_GLOBALS["builtins"] and "eval" not in ALLOWED_GLOBALS["builtins"]


# --- the guarded receiver's rules, one message at a time (no network: a request object) ------
class _Req:
    def __init__(self, data: bytes, seq=("1", "2"), job="exe-1"):
        self.data, self.upstream_seq_id, self.downstream_seq_id = data, seq[0], seq[1]
        self.job_name = job


class _Ctx:
    def __init__(self, cn: str | None):
        self.cn = cn

    def auth_context(self):
        return {"x509_common_name": [self.cn.encode()]} if self.cn else {}


def _service():
    import threading

    from node.fedlink import GuardedSendDataService

    return GuardedSendDataService({}, {}, "alice", threading.Lock(), "exe-1", ["bob"])


def _send(svc, data, cn="bob", seq=("1", "2")):
    import asyncio

    return asyncio.run(svc.SendData(_Req(data, seq), _Ctx(cn)))


def test_the_receiver_refuses_code_strangers_copies_and_floods_and_logs_each(caplog):
    import logging

    from node import fedlink

    svc = _service()
    with caplog.at_level(logging.WARNING, logger="partyline.security"):
        r = _send(svc, cloudpickle.dumps(_Exec()))
        assert (r.code, "forbidden global builtins.exec" in r.result) == (403, True)
        assert _send(svc, pickle.dumps(b"x"), cn="carol").code == 403  # not in this job
        assert _send(svc, pickle.dumps(b"x"), cn=None).code == 403  # no certificate name
        assert _send(svc, pickle.dumps({"a": 1}), seq=("5", "6")).code == 200
        assert _send(svc, pickle.dumps({"a": 2}), seq=("5", "6")).code == 409  # no overwrite
        big = b"\0" * (fedlink.MAX_MESSAGE_BYTES + 1)
        assert _send(svc, big, seq=("7", "8")).code == 413
    messages = [r.getMessage() for r in caplog.records]
    assert (
        "party alice refused a cross-silo message from bob: forbidden global builtins.exec"
        in (messages[0])
    )
    assert "from carol: the sender is not a party of this job" in messages[1]
    assert len(messages) == 5  # every refusal, and nothing for the accepted message


def test_the_receiver_bounds_what_a_peer_can_make_it_hold(monkeypatch):
    from node import fedlink

    monkeypatch.setattr(fedlink, "MAX_PENDING_MESSAGES", 3)
    svc = _service()
    codes = [_send(svc, pickle.dumps(i), seq=(str(i), "x")).code for i in range(5)]
    assert codes == [200, 200, 200, 429, 429]


# --- the one proxy actor's object, over a real mTLS link between two of them (no Ray) ---------
def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def link(tmp_path, monkeypatch):
    import fed._private.constants as fed_constants
    import fed.config

    from certs.authority import init_federation
    from node.fedlink import GuardedGrpcSenderReceiverProxy, comm_options

    # what RayFed's proxy actor reads from Ray's KV store at start (the job's comm options)
    job = {fed_constants.KEY_OF_CROSS_SILO_COMM_CONFIG_DICT: comm_options(["alice", "bob"])}
    monkeypatch.setattr(fed.config, "_job_config", fed.config.JobConfig(cloudpickle.dumps(job)))
    init_federation(tmp_path, ["alice", "bob", "carol"])
    addresses = {p: f"127.0.0.1:{_free_port()}" for p in ("alice", "bob", "carol")}

    def tls(party):
        return {
            "cert": str(tmp_path / f"{party}.crt"),
            "key": str(tmp_path / f"{party}.key"),
            "ca_cert": str(tmp_path / "ca.crt"),
        }

    def proxy(party, parties):
        opts = {**comm_options(parties, "exe-1"), "timeout_in_ms": 5000}
        p = GuardedGrpcSenderReceiverProxy(
            {q: addresses[q] for q in addresses}, party, tls(party), opts
        )
        p.start()
        return p

    made = []

    def make(party, parties):
        made.append(proxy(party, parties))
        return made[-1]

    yield make
    for p in made:
        p.stop()


def test_one_proxy_sends_and_receives_over_mtls_and_refuses_a_stranger(link):
    import concurrent.futures

    alice = link("alice", ["alice", "bob"])
    bob = link("bob", ["alice", "bob"])
    carol = link("carol", ["carol", "alice"])  # a party of another job, with a valid certificate
    assert alice.is_ready()[0] and bob.is_ready()[0] and carol.is_ready()[0]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        waiting = pool.submit(bob.get_data, "alice", "1", "2")  # waits before the data arrives
        assert alice.send("bob", {"rows": [1, 2]}, "1", "2") == "OK"
        assert waiting.result(timeout=10) == {"rows": [1, 2]}
    assert bob.send("alice", RuntimeError("boom"), "3", "4") == "OK"
    assert str(alice.get_data("bob", "3", "4")) == "boom"
    with pytest.raises(RuntimeError, match="the sender is not a party of this job"):
        carol.send("alice", b"x", "5", "6")
