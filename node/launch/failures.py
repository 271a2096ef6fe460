"""Turn what a job process left behind into one typed cause and one readable line (pure).

The job process reports an exception (type + text) or just dies; Ray, RayFed, gRPC, brpc and
SPU write what really happened to the job log, coloured and wrapped in pids, actor ids and C++
frames. Here that evidence becomes an ErrorInfo: `type` from node.contract.ErrorType, a
`message` a person can act on (it names the peer where the peer is the cause), and `details`:
the cleaned log excerpt behind it, for the folded view. The caller adds "party <self>: ".
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from node.contract import ErrorInfo, ErrorType, one_line, strip_ansi

_RAY_PREFIX = re.compile(r"^\((?:[\w:.-]+ )?pid=\d+(?:, ip=[^)]*)?\)\s*")
_CPP_FRAME = re.compile(r"\[[^\]]*\.(?:cc|h|cpp):\d+\]\s*")
_SPU_WHAT = re.compile(r"what:\s*\n?\s*(.*)")

# evidence → cause, checked in this order over the job log (newest lines first)
_TLS = re.compile(
    r"CERTIFICATE_VERIFY_FAILED|certificate verify failed|unknown ca|bad certificate|"
    r"certificate unknown|SSL_do_handshake|handshake failed|ssl_transport_security|"
    r"wrong version number|packet length too long|tlsv1 alert",
    re.IGNORECASE,
)
_RAY_DOWN = re.compile(
    r"Failed to connect to GCS|Could not find any running Ray instance|"
    r"GCS (?:server|client).*(?:unavailable|disconnected|not respond)|"
    r"Failed to get the system config from raylet|raylet.*(?:died|failed to connect)",
    re.IGNORECASE,
)
_REFUSED = re.compile(
    r"Connection refused|connect failed|failed to connect to all addresses|"
    r"No route to host|Name or service not known|errno=111",
    re.IGNORECASE,
)
_PEER_GONE = re.compile(
    r"Failed to send .* to|exit_on_sending_failure|Sending data .* failed|"
    r"Get data timeout|recv timeout|Connection reset by peer|Broken pipe|"
    r"Socket closed|StatusCode\.UNAVAILABLE|peer .*(?:closed|disconnected)|"
    r"SendImpl error|\[E112\]|Not connected to",
    re.IGNORECASE,
)
# brpc inside SPU: the peer's end of the SPU link is gone (its process died). Unlike a "Get data
# timeout" (a slow peer, or a protocol mismatch), this is the peer, even inside SPU's "what:".
_SPU_LINK_BROKEN = re.compile(r"SendImpl error|\[E112\]|Not connected to", re.IGNORECASE)


_BIND = re.compile(
    r"Failed to bind to address|Address already in use|failed to listen to port|"
    r"Fail to listen|bind\(\) failed",
    re.IGNORECASE,
)


def port_in_use(what: str, port: int) -> ErrorInfo:
    return ErrorInfo(
        type=ErrorType.PORT_IN_USE,
        message=(
            f"its {what} port {port} is in use on this host (a previous job still closing, or "
            "another program); a new attempt gets other ports"
        ),
    )


def clean(line: str) -> str:
    """A log line without ANSI codes and Ray's "(Actor pid=123)" prefix."""
    return _RAY_PREFIX.sub("", strip_ansi(line).strip())


def _last_match(lines: Sequence[str], pattern: re.Pattern[str]) -> str | None:
    for line in reversed(lines):
        if pattern.search(line):
            return line
    return None


def _short(line: str, limit: int = 160) -> str:
    return one_line(_CPP_FRAME.sub("", line), limit)


@dataclass(frozen=True)
class Situation:
    """What the supervisor knows besides the log."""

    peers: tuple[str, ...]
    connected: bool  # the cross-silo links were up (cluster initialized)
    start_timeout_s: float
    ray_address: str


def _peers(s: Situation) -> str:
    return ", ".join(s.peers) or "the peer"


def _details(lines: Sequence[str], extra: str | None = None) -> str:
    body = "\n".join(lines)
    return f"{extra}\n\n{body}" if extra else body


def _tls(s: Situation, evidence: str, details: str) -> ErrorInfo:
    return ErrorInfo(
        type=ErrorType.TLS_HANDSHAKE,
        message=(
            f"TLS handshake with {_peers(s)} failed ({_short(evidence, 120)}): the two parties' "
            "certificates are not from the same federation CA — check both with "
            "`python -m certs show`"
        ),
        details=details,
    )


def _peer_lost(s: Situation, evidence: str, details: str) -> ErrorInfo:
    return ErrorInfo(
        type=ErrorType.PEER_LOST,
        message=f"lost the link to {_peers(s)} during the job ({_short(evidence, 140)})",
        details=details,
    )


def link_timeout(s: Situation, log: Sequence[str]) -> ErrorInfo:
    """The cross-silo links did not come up within the start timeout."""
    lines = [clean(x) for x in log]
    peers = _peers(s)
    tls = _last_match(lines, _TLS)
    if tls:
        return _tls(s, tls, _details(lines))
    refused = _last_match(lines, _REFUSED)
    if refused:
        return ErrorInfo(
            type=ErrorType.PEER_UNREACHABLE,
            message=(
                f"could not reach {peers}'s link port within {s.start_timeout_s:.0f} s "
                f"({_short(refused, 120)}): check that {peers}'s node runs and that its fed/SPU "
                "ports are open to this party"
            ),
            details=_details(lines),
        )
    return ErrorInfo(
        type=ErrorType.PEER_CONNECT_TIMEOUT,
        message=(
            f"{peers} did not join the job within {s.start_timeout_s:.0f} s: its worker is "
            "offline or busy, or it never received its task"
        ),
        details=_details(lines),
    )


def ray_head_down(s: Situation) -> ErrorInfo:
    return ErrorInfo(
        type=ErrorType.RAY_HEAD_UNREACHABLE,
        message=(
            f"its Ray head at {s.ray_address} does not answer: start it "
            "(`python -m node ray-head start`) — the job can run again once it is up"
        ),
    )


def from_exception(
    s: Situation, exc_type: str, exc_text: str, trace: str, log: Sequence[str]
) -> ErrorInfo:
    """The job process raised `exc_type: exc_text` (with `trace`)."""
    lines = [clean(x) for x in log]
    text = strip_ansi(exc_text)
    evidence = [*lines, *text.splitlines()]
    details = _details(lines, strip_ansi(trace).strip() or None)
    if not s.connected:
        bind = _last_match(text.splitlines() or [text], _BIND)
        if bind:
            return ErrorInfo(
                type=ErrorType.PORT_IN_USE,
                message=f"a link port of this job is in use on this host ({_short(bind, 140)})",
                details=details,
            )
        tls = _last_match(evidence, _TLS)
        if tls:
            return _tls(s, tls, details)
        ray = _last_match(evidence, _RAY_DOWN)
        if ray:
            return ErrorInfo(
                type=ErrorType.RAY_HEAD_UNREACHABLE,
                message=f"its Ray head at {s.ray_address} does not answer ({_short(ray, 120)})",
                details=details,
            )
    else:
        gone = _last_match(evidence, _PEER_GONE)
        what = _SPU_WHAT.search(text)
        if what and _SPU_LINK_BROKEN.search(what.group(1)):
            return _peer_lost(s, what.group(1), details)
        if gone and not what:
            return _peer_lost(s, gone, details)
    what = _SPU_WHAT.search(text)
    headline = what.group(1) if what else (text.strip().splitlines() or [exc_type])[0]
    kind = ErrorType.PSI_FAILED if s.connected else ErrorType.INTERNAL
    return ErrorInfo(
        type=kind,
        message=f"{exc_type}: {_short(headline, 200)} (full trace in the job log)",
        details=details,
    )


def from_crash(s: Situation, rc: int | None, log: Sequence[str]) -> ErrorInfo:
    """The job process ended without a result or an error report."""
    lines = [clean(x) for x in log]
    if not s.connected:
        tls = _last_match(lines, _TLS)
        if tls:
            return _tls(s, tls, _details(lines))
    elif gone := _last_match(lines, _PEER_GONE):
        return _peer_lost(s, gone, _details(lines))
    how = "was killed" if rc is not None and rc < 0 else f"exited with code {rc}"
    last = _last_match(lines, re.compile(r"error|exception|fail|fatal", re.IGNORECASE))
    why = f": {_short(last, 160)}" if last else ""
    return ErrorInfo(
        type=ErrorType.JOB_PROCESS_CRASHED,
        message=f"its job process {how} before finishing{why}",
        details=_details(lines),
    )
