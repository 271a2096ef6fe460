"""The standing mTLS probe: see that the links between parties work before a job runs.

A job's fed and SPU ports exist only while the job runs, so each node can keep one small TLS
listener (`NODE_PROBE_PORT`, `python -m node probe`, also run by `python -m node up`). It
presents this party's certificate, accepts only a client whose certificate chains to the
federation CA (`NODE_CA_FILE`), says one line (`partyline-probe <party>`) and closes.

`check_peer` is the other end: it connects with this party's certificate, verifies that the
peer's chains to the federation CA and that it names the expected party (CN and SAN, as
`certs.authority` issues them), and returns a `LinkCheck` whose one-line message says what to do.
`python -m node health` runs it for every peer of `NODE_PEER_PROBES`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from enum import StrEnum

from cryptography import x509

from certs.authority import CertInfo, describe
from node.settings import NodeSettings, split_host_port

log = logging.getLogger("partyline.probe")

GREETING = "partyline-probe"
HANDSHAKE_TIMEOUT_S = 5.0  # per read, and for the whole handshake and greeting together
MAX_CONNECTIONS = 32  # handled at once; more are closed at once (the probe is not a service)
MAX_PER_SOURCE = 4  # of them from one address: one host cannot take every slot
EXPIRY_WARN_DAYS = 30
_REFUSALS = {
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "it presented no certificate",
    "CERTIFICATE_VERIFY_FAILED": "its certificate does not chain to NODE_CA_FILE",
}


class LinkOutcome(StrEnum):
    OK = "ok"
    WRONG_PARTY = "wrong_party"  # the peer's certificate names another party
    UNREACHABLE = "unreachable"  # refused, no route, name does not resolve
    TIMEOUT = "timeout"  # no answer (dropped by a firewall?) or no probe greeting
    UNTRUSTED = "untrusted"  # the peer's certificate does not chain to our federation CA
    TLS_REFUSED = "tls_refused"  # the peer refused our certificate, or spoke no TLS


@dataclass(frozen=True)
class LinkCheck:
    party: str  # this party, who checks
    peer: str  # the party expected at `address`
    address: str
    outcome: LinkOutcome
    message: str  # one line: what happened and what to do
    peer_cn: str | None = None  # the party the peer's certificate names (handshake done)
    days_left: int | None = None  # the peer certificate's days to expiry (handshake done)
    elapsed_ms: float | None = None

    @property
    def ok(self) -> bool:
        return self.outcome is LinkOutcome.OK

    @property
    def warn(self) -> bool:
        return self.ok and self.days_left is not None and self.days_left < EXPIRY_WARN_DAYS

    def as_dict(self) -> dict:
        return {**asdict(self), "outcome": self.outcome.value, "ok": self.ok, "warn": self.warn}


# --- TLS contexts -----------------------------------------------------------------------------
def _check_revocation(ctx: ssl.SSLContext, settings: NodeSettings) -> None:
    """With NODE_CRL_FILE: a peer whose certificate it revokes fails the handshake (OpenSSL
    checks the list; it refuses everyone with a list out of date: fail closed)."""
    if settings.crl_file is not None:
        settings.revoked_serials()  # the CA's own list, in date — or CertsError now
        ctx.load_verify_locations(settings.crl_file)
        ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF


def server_context(settings: NodeSettings) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(settings.cert_file, settings.key_file)
    ctx.load_verify_locations(settings.ca_file)
    _check_revocation(ctx, settings)
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_context(settings: NodeSettings) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(settings.cert_file, settings.key_file)
    ctx.load_verify_locations(settings.ca_file)
    _check_revocation(ctx, settings)
    # identity is the party the certificate names, not the host name we dialled
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def cert_party(info: CertInfo) -> str:
    """The party a federation certificate names: its CN (`certs.authority` puts it in the SAN too)."""
    return info.subject_cn


# --- server -----------------------------------------------------------------------------------
class ProbeServer:
    """Bound at construction (so `address` is known), serving once `serve_forever` runs."""

    def __init__(self, settings: NodeSettings) -> None:
        self.party = settings.party
        self.settings = settings
        self._crl_stamp = settings.crl_stamp()
        self.ctx = server_context(settings)
        host, port = settings.probe_listen_host, settings.probe_port
        if port is None:
            raise ValueError("no probe port: set NODE_PROBE_PORT")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.create_server((host.strip("[]"), port), family=family)
        self.sock.settimeout(0.5)  # how often the accept loop looks at `stop`
        self.address: tuple[str, int] = self.sock.getsockname()[:2]
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._sources: Counter[str] = Counter()
        self._lock = threading.Lock()

    def _admit(self, source: str) -> bool:
        """A slot for a connection from `source`, within MAX_CONNECTIONS and MAX_PER_SOURCE."""
        with self._lock:
            if self._sources[source] >= MAX_PER_SOURCE:
                return False
            if not self._slots.acquire(blocking=False):
                return False
            self._sources[source] += 1
            return True

    def _leave(self, source: str) -> None:
        with self._lock:
            self._sources[source] -= 1
            if self._sources[source] <= 0:
                del self._sources[source]
            self._slots.release()

    def serve_forever(self, stop: threading.Event | None = None) -> None:
        stop = stop or threading.Event()
        try:
            while not stop.is_set():
                try:
                    conn, peer = self.sock.accept()
                except TimeoutError:
                    continue
                except OSError as exc:  # e.g. EMFILE: keep serving
                    log.warning("probe accept failed: %s", exc)
                    time.sleep(0.5)
                    continue
                if not self._admit(peer[0]):
                    log.warning("probe busy: closed a connection from %s", _where(peer))
                    conn.close()
                    continue
                threading.Thread(
                    target=self._answer, args=(conn, peer), name="probe-conn", daemon=True
                ).start()
        finally:
            self.sock.close()

    def _context(self) -> ssl.SSLContext:
        """The TLS context, made again when NODE_CRL_FILE changed (a new revocation list takes
        effect at the next connection, without a restart)."""
        stamp = self.settings.crl_stamp()
        with self._lock:
            if stamp != self._crl_stamp:
                self.ctx, self._crl_stamp = server_context(self.settings), stamp
            return self.ctx

    def _answer(self, conn: socket.socket, peer: tuple) -> None:
        cancel = _cut_after(conn, HANDSHAKE_TIMEOUT_S)
        try:
            conn.settimeout(HANDSHAKE_TIMEOUT_S)
            with self._context().wrap_socket(conn, server_side=True) as tls:
                der = tls.getpeercert(binary_form=True)
                cn = cert_party(describe(x509.load_der_x509_certificate(der))) if der else "?"
                tls.sendall(f"{GREETING} {self.party}\n".encode())
                log.debug("probe answered %s at %s", cn, _where(peer))
        except ssl.SSLError as exc:
            why = _REFUSALS.get(exc.reason or "")
            if "revoked" in str(getattr(exc, "verify_message", "") or ""):
                why = "its certificate is revoked (NODE_CRL_FILE)"
            if why:
                log.info("probe refused a client at %s: %s", _where(peer), why)
            else:
                log.info("probe: no TLS session with %s: %s", _where(peer), exc.reason or exc)
        except (OSError, ValueError) as exc:
            log.info("probe client at %s failed: %s", _where(peer), exc or type(exc).__name__)
        finally:
            cancel()
            conn.close()
            self._leave(peer[0])


def _cut_after(conn: socket.socket, seconds: float) -> Callable[[], None]:
    """Shut the connection down after `seconds` in all (a timeout per read alone would let a
    client that sends a byte every few seconds hold a slot for ever); returns the cancel."""
    guard = socket.socket(fileno=os.dup(conn.fileno()))  # shutdown acts on the connection

    def cut() -> None:
        with contextlib.suppress(OSError):
            guard.shutdown(socket.SHUT_RDWR)

    timer = threading.Timer(seconds, cut)
    timer.daemon = True
    timer.start()

    def cancel() -> None:
        timer.cancel()
        timer.join()
        guard.close()

    return cancel


def serve(
    settings: NodeSettings,
    stop: threading.Event | None = None,
    *,
    on_ready: Callable[[tuple[str, int]], None] | None = None,
) -> None:
    """Run this party's probe on NODE_PROBE_LISTEN_HOST:NODE_PROBE_PORT until `stop` is set."""
    server = ProbeServer(settings)
    if on_ready is not None:
        on_ready(server.address)
    server.serve_forever(stop)


def _where(peer: tuple) -> str:
    return f"[{peer[0]}]:{peer[1]}" if ":" in peer[0] else f"{peer[0]}:{peer[1]}"


# --- client -----------------------------------------------------------------------------------
def check_peer(settings: NodeSettings, party: str, address: str, timeout: float = 5.0) -> LinkCheck:
    """Connect to `party`'s probe at `address` with this party's certificate; never raises."""
    me = settings.party
    at = f"{party} at {address}"
    start = time.perf_counter()

    def result(outcome: LinkOutcome, message: str, info: CertInfo | None = None) -> LinkCheck:
        ms = round((time.perf_counter() - start) * 1000, 1)
        named = cert_party(info) if info else None
        days = info.days_left if info else None
        return LinkCheck(me, party, address, outcome, message, named, days, ms)

    try:
        host, port = split_host_port(address)
        ctx = client_context(settings)
    except (ValueError, OSError) as exc:
        return result(LinkOutcome.UNREACHABLE, f"{at}: cannot check: {exc}")
    try:
        raw = socket.create_connection((host, port), timeout=timeout)
    except socket.gaierror as exc:
        return result(
            LinkOutcome.UNREACHABLE,
            f"{at}: the name {host} does not resolve ({exc.strerror}): "
            "fix its address in NODE_PEER_PROBES or this host's DNS",
        )
    except ConnectionRefusedError:
        return result(
            LinkOutcome.UNREACHABLE,
            f"{at} refused the connection: is {party}'s probe (python -m node probe / "
            f"NODE_PROBE_PORT) running and its port open to {me}?",
        )
    except TimeoutError:
        return result(
            LinkOutcome.TIMEOUT,
            f"{at} did not answer within {timeout:.0f} s: a firewall drops the traffic or the "
            f"address is wrong; {party} must open its probe port to {me}",
        )
    except OSError as exc:
        return result(
            LinkOutcome.UNREACHABLE,
            f"{at} is unreachable ({exc.strerror or exc}): check the route from {me} to {host}",
        )
    with raw:
        try:
            tls = ctx.wrap_socket(raw)
        except ssl.SSLCertVerificationError as exc:
            if exc.verify_code == 23:  # X509_V_ERR_CERT_REVOKED
                return result(
                    LinkOutcome.UNTRUSTED,
                    f"{at} presented a revoked certificate (NODE_CRL_FILE): {party} must install "
                    "its new certificate",
                )
            if exc.verify_code in (9, 10):  # X509_V_ERR_CERT_NOT_YET_VALID / _HAS_EXPIRED
                return result(
                    LinkOutcome.UNTRUSTED,
                    f"{at} presented a certificate that is not valid now ({exc.verify_message}):"
                    f" {party} must renew it (or a clock is wrong)",
                )
            return result(
                LinkOutcome.UNTRUSTED,
                f"{at} presented a certificate that does not chain to {me}'s federation CA "
                f"({exc.verify_message}): the address points at a node of another federation, "
                f"or {party} and {me} use different CA files (NODE_CA_FILE)",
            )
        except TimeoutError:
            return result(
                LinkOutcome.TIMEOUT,
                f"{at} accepted the connection but no TLS handshake followed within "
                f"{timeout:.0f} s: is this {party}'s probe port?",
            )
        except OSError as exc:  # ssl.SSLError included
            return result(LinkOutcome.TLS_REFUSED, _tls_refused(at, party, me, exc))
        with tls:
            der = tls.getpeercert(binary_form=True)
            if not der:
                return result(LinkOutcome.UNTRUSTED, f"{at} presented no certificate")
            info = describe(x509.load_der_x509_certificate(der))
            named = cert_party(info)
            if named != party:
                return result(
                    LinkOutcome.WRONG_PARTY,
                    f"{at} presented {named}'s certificate: the address of {party} in "
                    "NODE_PEER_PROBES points at another party's node",
                    info,
                )
            if info.sans and party not in info.sans:
                return result(
                    LinkOutcome.WRONG_PARTY,
                    f"{at} presented a certificate with CN {named} whose SAN does not name "
                    f"{party} ({', '.join(info.sans)}): reissue {party}'s certificate",
                    info,
                )
            try:
                line = _read_line(tls)
            except TimeoutError:
                line = ""
            except OSError as exc:  # ssl.SSLError included: an alert about our certificate
                return result(LinkOutcome.TLS_REFUSED, _tls_refused(at, party, me, exc), info)
    if not line.startswith(GREETING):
        return result(
            LinkOutcome.TIMEOUT,
            f"{at} completed TLS as {party} but sent no probe greeting within {timeout:.0f} s: "
            f"is this {party}'s probe port (not a fed or SPU port)?",
            info,
        )
    ms, days = (time.perf_counter() - start) * 1000, info.days_left
    renew = f": {party} should renew it" if days < EXPIRY_WARN_DAYS else ""
    expiry = f"{party}'s certificate expires in {days} days{renew}"
    return result(LinkOutcome.OK, f"{at}: mTLS ok in {ms:.0f} ms; {expiry}", info)


def _tls_refused(at: str, party: str, me: str, exc: Exception) -> str:
    why = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
    if isinstance(exc, ssl.SSLError) and "WRONG_VERSION_NUMBER" in str(why).upper():
        return f"{at} does not speak TLS ({why}): is this {party}'s probe port?"
    if "REVOKED" in str(why).upper():
        return (
            f"{at} refused {me}'s certificate as revoked: install {me}'s new certificate "
            "(rotated) on this host"
        )
    return (
        f"{at} refused {me}'s certificate ({why}): {party} must trust the same federation CA "
        f"(NODE_CA_FILE) that signed {me}'s certificate"
    )


def _read_line(tls: ssl.SSLSocket, limit: int = 256) -> str:
    data = b""
    while b"\n" not in data and len(data) < limit:
        chunk = tls.recv(limit - len(data))
        if not chunk:
            break
        data += chunk
    return data.decode("utf-8", "replace").strip()
