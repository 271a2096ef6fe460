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
