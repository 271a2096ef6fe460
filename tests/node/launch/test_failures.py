"""node/launch/failures.py: the job log's evidence → one typed cause and one readable line (pure)."""

from __future__ import annotations

import pytest

from node.contract import RETRYABLE, ErrorType
from node.launch.failures import (
    Situation,
    clean,
    from_crash,
    from_exception,
    link_timeout,
    ray_head_down,
)

ANSI_RED = "\x1b[31m"
ANSI_OFF = "\x1b[0m"
NOT_CONNECTED = Situation(("bob",), False, 45.0, "127.0.0.1:6379")
CONNECTED = Situation(("bob",), True, 45.0, "127.0.0.1:6379")

GRPC_TLS = (
    f"{ANSI_RED}(SenderProxyActor pid=4242){ANSI_OFF} E1123 20:50:01.123 ssl_transport_security.cc:1446] "
    "Handshake failed with fatal error SSL_ERROR_SSL: error:1000007d:SSL routines:"
    "OPENSSL_internal:CERTIFICATE_VERIFY_FAILED"
)
BRPC_TLS = (
    "W1123 20:50:01 socket.cpp:1776] Fail to SSL_do_handshake: error:14094418:SSL "
    "routines:ssl3_read_bytes:tlsv1 alert unknown ca"
)
GRPC_REFUSED = (
    "(ReceiverProxyActor pid=99) failed to connect to all addresses; last error: UNKNOWN: "
    "ipv4:127.0.0.1:21000: Failed to connect to remote host: Connection refused"
)


def _assert_readable(err) -> None:
    assert "\x1b" not in err.message and "\n" not in err.message
    assert len(err.message) <= 300
    assert err.details is None or "\x1b" not in err.details


def test_clean_strips_colour_and_the_ray_actor_prefix():
    assert clean(f"{ANSI_RED}(SenderProxyActor pid=4242){ANSI_OFF} hello") == "hello"
    assert clean("(pid=7, ip=10.0.0.1) hi") == "hi"


@pytest.mark.parametrize("line", [GRPC_TLS, BRPC_TLS])
def test_link_timeout_with_tls_evidence_is_a_certificate_problem(line):
    err = link_timeout(NOT_CONNECTED, ["starting", line, "retrying"])
    assert err.type == ErrorType.TLS_HANDSHAKE
    assert err.type not in RETRYABLE  # an operator must fix the certificates first
    assert "TLS handshake with bob failed" in err.message
    assert "python -m certs show" in err.message
    _assert_readable(err)
    assert "pid=4242" not in err.message


def test_link_timeout_with_refused_connections_names_the_unreachable_peer():
    err = link_timeout(NOT_CONNECTED, [GRPC_REFUSED])
    assert err.type == ErrorType.PEER_UNREACHABLE and err.type in RETRYABLE
    assert err.message.startswith("could not reach bob's link port within 45 s")
    _assert_readable(err)


def test_link_timeout_without_evidence_says_the_peer_never_joined():
    err = link_timeout(NOT_CONNECTED, ["waiting for party bob to be ready"])
    assert err.type == ErrorType.PEER_CONNECT_TIMEOUT and err.type in RETRYABLE
    assert err.message.startswith("bob did not join the job within 45 s")
    # the old word list treated these words as "never retry"; types decide now
    assert "certificate" not in err.message and "handshake" not in err.message


def test_ray_head_down_is_retryable_and_says_what_to_do():
    err = ray_head_down(NOT_CONNECTED)
    assert err.type == ErrorType.RAY_HEAD_UNREACHABLE and err.type in RETRYABLE
    assert "127.0.0.1:6379" in err.message and "ray-head start" in err.message


def test_an_spu_error_becomes_one_line_with_the_trace_in_details():
    text = (
        "[2026-11-23 20:50:01.1] [info] something\n"
        "what: \n\t[external/yacl/yacl/link/transport/channel.cc:427] Get data timeout, "
        "key=root-1:P2P-1:1->0\nstacktrace:\n#0 yacl::link::Channel::Recv()+0x7f\n"
    )
    err = from_exception(CONNECTED, "RuntimeError", text, "Traceback …\n" + text, ["log line"])
    assert err.type == ErrorType.PSI_FAILED
    assert err.message.startswith("RuntimeError: Get data timeout, key=root-1:P2P-1:1->0")
    assert "channel.cc" not in err.message
    assert "stacktrace" in err.details and "log line" in err.details
    _assert_readable(err)


def test_a_ray_connection_error_before_the_links_is_the_ray_head():
    err = from_exception(
        NOT_CONNECTED,
        "ConnectionError",
        "Could not find any running Ray instance. Please specify the one to connect to.",
        "",
        [],
    )
    assert err.type == ErrorType.RAY_HEAD_UNREACHABLE


def test_a_send_failure_after_the_links_were_up_is_the_peer_lost():
    err = from_crash(
        CONNECTED,
        1,
        [f"{ANSI_RED}(SenderProxyActor pid=1){ANSI_OFF} Failed to send ObjectRef(ab) to bob"],
    )
    assert err.type == ErrorType.PEER_LOST and err.type in RETRYABLE
    assert err.message.startswith("lost the link to bob during the job")
    _assert_readable(err)


def test_a_killed_job_process_is_named_as_such():
    err = from_crash(NOT_CONNECTED, -9, ["just starting"])
    assert err.type == ErrorType.JOB_PROCESS_CRASHED
    assert err.message == "its job process was killed before finishing"


def test_a_port_another_listener_holds_is_port_in_use_and_retryable():
    text = (
        "Grpc server failed to listen to port: 17325 Try another port by setting `listen_addr` "
        "into `cluster` config when calling `fed.init`. Grpc error msg: Failed to bind to "
        "address [::]:17325; set GRPC_VERBOSITY=debug"
    )
    err = from_exception(NOT_CONNECTED, "AssertionError", text, "", [])
    assert err.type == ErrorType.PORT_IN_USE and err.type in RETRYABLE
    assert err.message.startswith("a link port of this job is in use on this host")


SPU_SEND_FAILED = (
    "[2026-11-23 20:50:11.4] [error] [channel.cc:311] SendImpl error [E112]Not connected to "
    "127.0.0.1:17326 yet, server_id=0"
)


def test_an_spu_job_process_that_aborts_on_a_dead_peer_link_is_the_peer_lost():
    """bob's worker killed while alice sends: alice's SPU aborts ~10 s later. That is bob's
    doing (PeerLost, retryable), not a crash of alice's own job process."""
    err = from_crash(CONNECTED, -6, ["psi running", SPU_SEND_FAILED])
    assert err.type == ErrorType.PEER_LOST and err.type in RETRYABLE
    assert err.message.startswith("lost the link to bob during the job (")
    _assert_readable(err)


def test_an_spu_exception_saying_the_peer_link_broke_is_the_peer_lost():
    text = f"what: \n\t[external/yacl/yacl/link/transport/channel.cc:311] {SPU_SEND_FAILED}\n"
    err = from_exception(CONNECTED, "RuntimeError", text, text, [])
    assert err.type == ErrorType.PEER_LOST
    assert "Not connected to" in err.message
