"""Node health checks (docs/node.md), shared by `python -m node health` and tasks.node.ops.health."""

from __future__ import annotations

import datetime as dt
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from node.settings import NodeSettings

if TYPE_CHECKING:
    from node.ops.probe import LinkCheck

EXPIRY_WARN_DAYS = 30
LINK_TIMEOUT_S = 3.0  # per peer, all peers at once: the coordinator waits 8 s for the report


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    warn: bool = False


@dataclass
class HealthReport:
    party: str
    checks: list[Check] = field(default_factory=list)
    links: list[LinkCheck] = field(default_factory=list)  # also in `checks` as "link <peer>"
    cert_days_left: int | None = None  # this party's own certificate

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def as_dict(self) -> dict:
        return {
            "party": self.party,
            "ok": self.ok,
            "checks": [asdict(c) for c in self.checks],
            "links": [link.as_dict() for link in self.links],
            "cert_days_left": self.cert_days_left,
        }


def _client(settings: NodeSettings):
    """This party's Redis (the node's own user), with short timeouts for a health check."""
    from node.contract.clients import redis_client

    return redis_client(
        settings.broker_url, settings.redis_ca_file, socket_connect_timeout=3, socket_timeout=3
    )


def _redis(settings: NodeSettings) -> Check:
    try:
        client = _client(settings)
        t = time.perf_counter()
        client.ping()
        ms = (time.perf_counter() - t) * 1000
        tls = "TLS" if settings.broker_url.startswith("rediss://") else "no TLS"
        return Check("redis", True, f"PING ok in {ms:.1f} ms ({tls}, authenticated)")
    except Exception as exc:
        return Check("redis", False, f"{type(exc).__name__}: {exc}")


def _worker(settings: NodeSettings) -> Check:
    """Both workers alive, from the heartbeats they keep in Redis.

    A task cannot serve as the probe here: workers accept only tasks signed by the coordinator.
    """
    import datetime as dt

    from node.contract import HEARTBEAT_KEY, HEARTBEAT_TTL_S, WORKER_ROLES, WorkerHeartbeat

    try:
        client = _client(settings)
        raws = {role: client.get(HEARTBEAT_KEY.format(role=role)) for role in WORKER_ROLES}
    except Exception as exc:
        return Check("celery worker", False, f"heartbeats unreadable ({type(exc).__name__}: {exc})")
    missing = [role for role, raw in raws.items() if not raw]
    if missing:
        return Check(
            "celery worker",
            False,
            f"no heartbeat from the {' and '.join(missing)} worker within {HEARTBEAT_TTL_S} s "
            "(not running, or cannot reach Redis)",
        )
    now = dt.datetime.now(dt.UTC)
    parts = []
    for raw in raws.values():
        beat = WorkerHeartbeat.from_json(raw)
        age = max(0.0, (now - beat.at).total_seconds())
        parts.append(f"{beat.worker} pid {beat.pid}, {age:.0f} s ago, {len(beat.active)} active")
    return Check("celery worker", True, "; ".join(parts))


def _refused(settings: NodeSettings) -> Check:
    """Task messages this node dropped as replays (node.worker.replay): a warning, not a failure."""
    from node.ops.refusals import refused_counts

    try:
        counts = refused_counts(_client(settings))
    except Exception as exc:
        return Check("refused tasks", True, f"unreadable ({type(exc).__name__})", warn=True)
    if not counts:
        return Check("refused tasks", True, "no task message dropped")
    what = ", ".join(f"{n} {reason}" for reason, n in counts.items())
    return Check(
        "refused tasks",
        True,
        f"dropped task messages: {what} — a signed task pushed again into the queue; see the "
        "worker log (partyline.security)",
        warn=True,
    )


def _ray(settings: NodeSettings) -> Check:
    from node.rayhead import head

    if head.is_up(settings):
        return Check("ray head", True, f"GCS answers on {settings.ray_address}")
    return Check("ray head", False, f"nothing listens on {settings.ray_address}")


def _certs(settings: NodeSettings) -> list[Check]:
    from certs.authority import cert_info, key_matches_cert, verify_chain

    out = []
    for label, path in (
        ("certificate", settings.cert_file),
        ("key", settings.key_file),
        ("CA", settings.ca_file),
    ):
        if not Path(path).is_file():
            out.append(Check(f"{label} file", False, f"{path} is missing"))
    if out:
        return out
    try:
        verify_chain(settings.cert_file, settings.ca_file)
        info = cert_info(settings.cert_file)
        if info.subject_cn != settings.party:
            out.append(
                Check(
                    "certificate", False, f"CN is {info.subject_cn!r}, expected {settings.party!r}"
                )
            )
        else:  # its dates: the "certificate expiry" check
            out.append(
                Check("certificate", True, f"CN={info.subject_cn}, signed by {info.issuer_cn}")
            )
    except ValueError as exc:
        out.append(Check("certificate", False, str(exc)))
    try:
        ok = key_matches_cert(settings.key_file, settings.cert_file)
        out.append(
            Check(
                "key matches certificate",
                ok,
                "yes" if ok else "private key does not belong to the certificate",
            )
        )
    except Exception as exc:
        out.append(Check("key matches certificate", False, f"{type(exc).__name__}: {exc}"))
    mode = Path(settings.key_file).stat().st_mode & 0o077
    if mode:
        out.append(
            Check(
                "key permissions",
                False,
                f"{settings.key_file} is readable by group/others; chmod 600",
            )
        )
    return out


def _cert_expiry(settings: NodeSettings) -> tuple[Check | None, int | None]:
    """This party's own certificate: fail when expired or not yet valid, warn under 30 days
    (None when the file is missing: the "certificate file" check says so)."""
    import datetime as dt

    from cryptography import x509

    name = "certificate expiry"
    if not Path(settings.cert_file).is_file():
        return None, None
    try:
        cert = x509.load_pem_x509_certificate(Path(settings.cert_file).read_bytes())
    except (OSError, ValueError) as exc:
        return Check(name, False, f"{settings.cert_file} unreadable: {exc}"), None
    now = dt.datetime.now(dt.UTC)
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    days = (end - now).days
    renew = (
        f"issue {settings.party} a new certificate from the federation CA (the rotation "
        "playbook, or python -m certs csr/sign/install; docs/operations.md)"
    )
    if now < start:
        return Check(
            name,
            False,
            f"not valid before {start:%Y-%m-%d %H:%M} UTC: this host's clock or the CA's is wrong",
        ), days
    if now > end:
        return Check(name, False, f"expired on {end:%Y-%m-%d}: {renew}"), days
    if days < EXPIRY_WARN_DAYS:
        return Check(
            name, True, f"expires on {end:%Y-%m-%d}, in {days} days: {renew}", warn=True
        ), days
    return Check(name, True, f"expires on {end:%Y-%m-%d}, in {days} days"), days


def _link_check(link: LinkCheck) -> Check:
    return Check(f"link {link.peer}", link.ok, link.message, warn=link.warn)


def _start_links(settings: NodeSettings, pool: ThreadPoolExecutor) -> dict[str, Future[LinkCheck]]:
    from node.ops.probe import check_peer

    return {
        peer: pool.submit(check_peer, settings, peer, address, LINK_TIMEOUT_S)
        for peer, address in sorted(settings.peer_probes.items())
    }


CRL_WARN_DAYS = 30


def _revocation(settings: NodeSettings) -> Check | None:
    """NODE_CRL_FILE: the CA's, in date (the probe and the fed link fail closed without)."""
    if settings.crl_file is None:
        return None
    try:
        revoked = settings.revoked_serials()
        from cryptography import x509

        crl = x509.load_pem_x509_crl(settings.crl_file.read_bytes())
    except (OSError, ValueError) as exc:  # CertsError is a ValueError
        return Check("revocation list", False, f"{exc}: the probe and fed link refuse every peer")
    due = crl.next_update_utc
    days = (due - dt.datetime.now(dt.UTC)).days if due else None
    msg = f"{len(revoked)} revoked; valid {days} more days" if days is not None else "no end"
    warn = days is not None and days < CRL_WARN_DAYS
    if warn:
        msg += ": install a new one (`python -m certs crl` on the CA's host, or converge)"
    return Check("revocation list", True, msg, warn=warn)


def _data_root(settings: NodeSettings) -> Check:
    root = settings.data_root
    if not root.is_dir():
        return Check("data root", False, f"{root} does not exist")
    if not os.access(root, os.R_OK | os.W_OK | os.X_OK):
        return Check("data root", False, f"{root} is not readable and writable by this user")
    return Check("data root", True, f"{root} readable and writable")


def run_checks(
    settings: NodeSettings, *, check_worker: bool = True, check_links: bool = True
) -> HealthReport:
    """Every check of this node; `check_links=False` leaves out the peers (a container's own
    healthcheck: a peer that is down must not make this node look broken)."""
    report = HealthReport(party=settings.party)
    with ThreadPoolExecutor(max_workers=max(1, len(settings.peer_probes))) as pool:
        links = _start_links(settings, pool) if check_links else {}  # answer while we check
        report.checks.append(_redis(settings))
        if check_worker:
            report.checks.append(_worker(settings))
            report.checks.append(_refused(settings))
        report.checks.append(_ray(settings))
        report.checks.extend(_certs(settings))
        expiry, report.cert_days_left = _cert_expiry(settings)
        if expiry is not None:
            report.checks.append(expiry)
        revocation = _revocation(settings)
        if revocation is not None:
            report.checks.append(revocation)
        report.checks.append(_data_root(settings))
        report.links = [future.result() for future in links.values()]
    report.checks.extend(_link_check(link) for link in report.links)
    return report


def list_datasets(settings: NodeSettings, limit: int = 1000) -> list[dict]:
    """CSV files under the data root, in name order: name, size, header columns (never rows).
    The walk skips hidden folders (the node's own `.partyline/`), does not follow links to
    folders, and stops at `limit` files; a file whose header cannot be read is listed without
    columns (one bad file never fails the listing)."""
    root = settings.data_root.resolve()
    out: list[dict] = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(f for f in files if f.endswith(".csv") and not f.startswith(".")):
            if len(out) >= limit:
                return out
            entry = _dataset(root, Path(folder) / name)
            if entry is not None:
                out.append(entry)
    return out


def _dataset(root: Path, path: Path) -> dict | None:
    from node.dataroot.paths import read_csv_header

    try:
        real = path.resolve()
        if root not in real.parents:
            return None  # a link out of the root: not a dataset of this node
        size = real.stat().st_size
    except OSError:
        return None
    try:
        columns = read_csv_header(real)
    except (OSError, ValueError):  # UnicodeDecodeError is a ValueError
        columns = []
    return {"name": str(path.relative_to(root)), "size": size, "columns": columns}
