"""The cross-silo receiver: what it takes from a peer (pickled payloads read as opcodes, never
run), its per-peer budget, and a real mTLS link between two proxies fed hostile payloads."""

from __future__ import annotations

import os
import pickle

import cloudpickle
import pytest

from node.sfjob.fedlink import ALLOWED_GLOBALS, comm_options, payload_problem


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


def _fed_error():
    from fed.exceptions import FedRemoteError

    return FedRemoteError("bob", RuntimeError("SPU: link lost"))


@pytest.mark.parametrize(
    "payload",
    [b"data", {"a": [1, 2.5, (3, "x")], "b": None}, RuntimeError("boom"), _fed_error()],
    ids=["rayfed-ping", "plain-data", "error", "rayfed-error-report"],
)
def test_what_the_link_really_carries_is_accepted(payload):
    assert payload_problem(pickle.dumps(payload)) is None
    assert payload_problem(cloudpickle.dumps(payload)) is None


class _Call:
    """A pickle that calls `fn(*args)` when loaded."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return (self.fn, self.args)


def _tuple_hash_bomb(levels: int = 100) -> bytes:
    """{t: None} where t = (t', t'), t' = (t'', t''), … — 2^levels steps to hash, 6 bytes a level."""
    ops = [b"\x80\x04", b")", b"\x94"]  # PROTO 4, EMPTY_TUPLE, MEMOIZE
    for k in range(levels):
        ops += [b"h" + bytes([k]), b"h" + bytes([k]), b"\x86", b"\x94"]  # BINGET×2, TUPLE2
    ops += [b"}", b"h" + bytes([levels]), b"N", b"s", b"."]  # EMPTY_DICT, key, None, SETITEM
    return b"".join(ops)


def _colliding_int_keys(n: int) -> bytes:
    """{i * (2**61 - 1): None for i < n}: every key has hash 0, so inserting them is quadratic
    (written opcode by opcode: building the dict here would itself take half a minute)."""
    keys = b"".join(
        b"\x8a" + bytes([len(k)]) + k + b"N"  # LONG1 key, NONE
        for k in (pickle.encode_long(i * (2**61 - 1)) for i in range(1, n + 1))
    )
    return b"\x80\x04}(" + keys + b"u."  # EMPTY_DICT, MARK, …, SETITEMS, STOP


# each a few bytes to a few hundred KB, each would take gigabytes or hours to unpickle
HOSTILE = {
    "bytearray(2**31)": pickle.dumps(_Call(bytearray, 2**31)),
    "frozenset(range(10**8))": pickle.dumps(_Call(frozenset, range(10**8))),
    "a set": pickle.dumps(set(range(10))),
    "a dict keyed by a 2^100-step tuple": _tuple_hash_bomb(),
    "50,000 int keys of one hash": _colliding_int_keys(50_000),
    "more opcodes than the bound": pickle.dumps(list(range(200_000))),
    "trailing bytes": pickle.dumps(b"data") + b"xx",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_payload_that_would_cost_more_than_its_size_is_refused_unrun(name):
    import time

    t0 = time.process_time()
    assert payload_problem(HOSTILE[name]) is not None
    assert time.process_time() - t0 < 5  # read, never run: nothing close to its real cost


def test_rayfed_gets_the_same_allow_list_and_the_job_parties():
    opts = comm_options(["bob", "alice"])
    assert opts["serializing_allowed_list"] == ALLOWED_GLOBALS
    assert opts["partyline_peers"] == ["alice", "bob"]
    allowed = set(ALLOWED_GLOBALS["builtins"])
    assert not allowed & {"exec", "eval", "set", "frozenset", "bytearray", "range", "slice"}


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


def _service(peers=("bob",)):
    import threading

    from node.sfjob.fedlink import GuardedSendDataService

    return GuardedSendDataService({}, {}, "alice", threading.Lock(), "exe-1", list(peers))


def _send(svc, data, cn="bob", seq=("1", "2")):
    import asyncio

    return asyncio.run(svc.SendData(_Req(data, seq), _Ctx(cn)))


def test_the_receiver_refuses_code_strangers_copies_and_floods_and_logs_each(caplog):
    import logging

    from node.sfjob import fedlink

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
    from node.sfjob import fedlink

    monkeypatch.setattr(fedlink, "MAX_PENDING_MESSAGES", 3)
    svc = _service()
    codes = [_send(svc, pickle.dumps(i), seq=(str(i), "x")).code for i in range(5)]
    assert codes == [200, 200, 200, 429, 429]


def test_one_peers_unread_messages_never_crowd_out_anothers(monkeypatch):
    """bob fills its budget with messages for ids the job never reads: carol's real message is
    still taken; once the job reads one of bob's, bob may send again."""
    from node.sfjob import fedlink

    monkeypatch.setattr(fedlink, "MAX_PENDING_MESSAGES", 3)
    svc = _service(peers=("bob", "carol"))
    flood = [_send(svc, pickle.dumps(i), cn="bob", seq=(f"junk{i}", "x")).code for i in range(5)]
    assert flood == [200, 200, 200, 429, 429]
    assert _send(svc, pickle.dumps(b"real"), cn="carol", seq=("1", "2")).code == 200
    svc._all_data["junk0"].pop("x")  # the job read one of bob's messages
    assert _send(svc, pickle.dumps(7), cn="bob", seq=("3", "4")).code == 200


def test_the_check_runs_off_the_event_loop(monkeypatch):
    """While one message's check is still running, the receiver's loop serves on."""
    import asyncio
    import threading

    from node.sfjob import fedlink

    release = threading.Event()

    def slow(data):
        release.wait(10)
        return None

    monkeypatch.setattr(fedlink, "payload_problem", slow)
    svc = _service()

    async def main():
        sending = asyncio.create_task(svc.SendData(_Req(pickle.dumps(1)), _Ctx("bob")))
        ticks = 0
        for _ in range(5):  # the loop keeps turning while the check waits
            await asyncio.sleep(0.01)
            ticks += 1
        assert not sending.done()
        release.set()
        return ticks, (await sending).code

    assert asyncio.run(main()) == (5, 200)


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
    from node.sfjob.fedlink import GuardedGrpcSenderReceiverProxy, comm_options

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

    def proxy(party, parties, revoked=frozenset(), cert=None):
        opts = {**comm_options(parties, "exe-1", revoked), "timeout_in_ms": 5000}
        own = tls(party)
        if cert is not None:  # another certificate of the party (e.g. one rotated out)
            own = {**own, "cert": str(cert[0]), "key": str(cert[1])}
        p = GuardedGrpcSenderReceiverProxy({q: addresses[q] for q in addresses}, party, own, opts)
        p.start()
        return p

    made = []

    def make(party, parties, **kw):
        made.append(proxy(party, parties, **kw))
        return made[-1]

    make.certs = tmp_path  # type: ignore[attr-defined]

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


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def test_hostile_payloads_over_a_real_link_are_refused_and_cost_the_receiver_nothing(link):
    """Each payload of HOSTILE, sent over real mTLS to alice's receiver, is refused (the sender
    sees why) and alice's memory stays within 64 MB of where it was (before: bytearray(2**31)
    alone took 2 GB, the tuple bomb never returned); then a real message still arrives."""
    import gc

    alice = link("alice", ["alice", "bob"])
    bob = link("bob", ["alice", "bob"])
    assert alice.is_ready()[0] and bob.is_ready()[0]
    gc.collect()
    before = _rss_mb()
    for i, name in enumerate(sorted(HOSTILE)):
        with pytest.raises(RuntimeError, match="refused by alice"):
            bob._wait(_send_raw(bob, "alice", HOSTILE[name], f"h{i}"))
    gc.collect()
    assert _rss_mb() - before < 64
    assert bob.send("alice", {"rows": [1]}, "1", "2") == "OK"
    assert alice.get_data("bob", "1", "2") == {"rows": [1]}


async def _send_raw(proxy, dest: str, data: bytes, seq: str):
    """Send bytes as they are (RayFed's sender pickles its argument first)."""
    from fed.proxy.grpc.grpc_proxy import fed_pb2

    sender = proxy._sender
    stub = sender._stubs.get(dest) if hasattr(sender, "_stubs") else None
    if stub is None:
        await sender.send(dest, b"warm-up", f"w{seq}", "w")
        stub = sender._stubs[dest]
    request = fed_pb2.SendDataRequest(
        data=data, upstream_seq_id=seq, downstream_seq_id="x", job_name=sender._job_name
    )
    response = await stub.SendData(request, timeout=30)
    if response.code != 200:
        raise RuntimeError(response.result)
    return response


def test_a_rotated_out_certificate_is_refused_on_the_fed_link(link):
    """bob's certificate was rotated out (NODE_CRL_FILE lists it): a message signed in with it
    is refused by alice's receiver; bob's new certificate gets through."""
    from certs.revocation import revoked_serials
    from certs.rotate import rotate

    certs = link.certs
    res = rotate(certs, "bob")
    old = (
        next(p for p in res.backups if ".crt." in p.name),
        next(p for p in res.backups if ".key." in p.name),
    )
    revoked = revoked_serials(certs / "crl.pem", certs / "ca.crt")
    alice = link("alice", ["alice", "bob"], revoked=revoked)
    bob_old = link("bob", ["alice", "bob"], cert=old)
    assert alice.is_ready()[0] and bob_old.is_ready()[0]
    with pytest.raises(RuntimeError, match="certificate is revoked"):
        bob_old.send("alice", b"x", "1", "2")
    bob_old.stop()
    bob_new = link("bob", ["alice", "bob"])
    assert bob_new.is_ready()[0]
    assert bob_new.send("alice", {"rows": [1]}, "3", "4") == "OK"
    assert alice.get_data("bob", "3", "4") == {"rows": [1]}
