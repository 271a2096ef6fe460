"""Revocation: a certificate rotated out (or revoked by hand) stops being accepted.

The CA directory keeps `revoked.json` (every revoked certificate: serial, party, its own expiry,
when and why) and `crl.pem`, a certificate revocation list signed by the federation CA and
valid `CRL_DAYS` (re-issue it with `python -m certs crl` before then: the Ansible role does at
every converge). `rotate` revokes the certificate it replaces.

Partyline was built for air-gapped hosts whose CA lives offline on the controller, so it does
not use short-lived certificates renewed automatically (that needs a CA every host can reach at
any time); the CRL travels with the CA certificate instead (bundles, the Ansible role), and every
endpoint Partyline controls checks it — see docs/operations.md, "Revocation", for which do and
which cannot (SPU's brpc link).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from certs.authority import Authority
from certs.common import CertsError, cn_of, serial_hex

REVOKED_FILE = "revoked.json"
CRL_FILE = "crl.pem"
CRL_DAYS = 90  # how long a list is valid
CRL_RENEW_DAYS = 30  # `ensure_crl` writes a new one when the current has this many days left


@dataclass(frozen=True)
class Revoked:
    serial: int
    party: str
    not_after: dt.datetime
    revoked_at: dt.datetime
    reason: str


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def read_revoked(ca_dir: Path) -> list[Revoked]:
    path = Path(ca_dir) / REVOKED_FILE
    if not path.exists():
        return []
    try:
        rows = json.loads(path.read_text())
        return [
            Revoked(
                int(r["serial"], 16), r["party"], dt.datetime.fromisoformat(r["not_after"]),
                dt.datetime.fromisoformat(r["revoked_at"]), r.get("reason", ""),
            )
            for r in rows
        ]  # fmt: skip
    except (ValueError, KeyError, TypeError) as exc:
        raise CertsError(f"{path}: not a list of revoked certificates ({exc})") from None


def _write_revoked(ca_dir: Path, rows: list[Revoked]) -> None:
    doc = [
        {
            "serial": format(r.serial, "x"), "party": r.party, "not_after": r.not_after.isoformat(),
            "revoked_at": r.revoked_at.isoformat(), "reason": r.reason,
        }
        for r in rows
    ]  # fmt: skip
    tmp = Path(ca_dir) / f".{REVOKED_FILE}.tmp"
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    tmp.replace(Path(ca_dir) / REVOKED_FILE)


def revoke(ca_dir: Path, authority: Authority, cert: x509.Certificate, reason: str) -> Path:
    """Record `cert` as revoked and write a new CRL; returns the CRL's path."""
    if cert.issuer != authority.cert.subject:
        raise CertsError(f"certificate {serial_hex(cert)} was not issued by this CA")
    rows = [r for r in read_revoked(ca_dir) if r.serial != cert.serial_number]
    rows.append(
        Revoked(cert.serial_number, cn_of(cert.subject), cert.not_valid_after_utc, _now(), reason)
    )
    _write_revoked(ca_dir, rows)
    return write_crl(ca_dir, authority)


def write_crl(ca_dir: Path, authority: Authority, days: int = CRL_DAYS) -> Path:
    """The CRL of every revoked certificate not yet expired, signed by the CA, valid `days`."""
    now = _now()
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(authority.cert.subject)
        .last_update(now - dt.timedelta(minutes=5))
        .next_update(now + dt.timedelta(days=days))
    )
    for r in read_revoked(ca_dir):
        if r.not_after > now:  # an expired certificate is refused anyway
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(r.serial)
                .revocation_date(r.revoked_at)
                .build()
            )
    crl = builder.sign(authority.key, hashes.SHA256())
    path = Path(ca_dir) / CRL_FILE
    tmp = path.with_name(f".{CRL_FILE}.tmp")
    tmp.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    tmp.replace(path)
    return path


def crl_is_current(ca_dir: Path, renew_days: int = CRL_RENEW_DAYS) -> bool:
    """Whether CA_DIR/crl.pem is this CA's, lists exactly the revoked certificates not yet
    expired and has more than `renew_days` left. Reads no key: a bundle made from a current
    list needs none."""
    path = Path(ca_dir) / CRL_FILE
    try:
        current = revoked_serials(path, Path(ca_dir) / "ca.crt")
        crl = x509.load_pem_x509_crl(path.read_bytes())
    except (CertsError, OSError, ValueError):
        return False
    wanted = {r.serial for r in read_revoked(ca_dir) if r.not_after > _now()}
    left = crl.next_update_utc - _now() if crl.next_update_utc else dt.timedelta(0)
    return current == wanted and left > dt.timedelta(days=renew_days)


def ensure_crl(
    ca_dir: Path, authority: Authority, days: int = CRL_DAYS, renew_days: int = CRL_RENEW_DAYS
) -> tuple[Path, bool]:
    """(the CRL, whether it was written): kept when `crl_is_current` — so a converge that
    changes nothing writes nothing."""
    if crl_is_current(ca_dir, renew_days):
        return Path(ca_dir) / CRL_FILE, False
    return write_crl(ca_dir, authority, days), True


def revoked_serials(crl_file: Path, ca_file: Path) -> frozenset[int]:
    """The serials a CRL revokes — once its signature verifies against the federation CA and it
    has not passed its next update (else CertsError: a stale or forged list is no list)."""
    try:
        crl = x509.load_pem_x509_crl(Path(crl_file).read_bytes())
        ca = x509.load_pem_x509_certificate(Path(ca_file).read_bytes())
    except (OSError, ValueError) as exc:
        raise CertsError(f"{crl_file}: cannot read the revocation list ({exc})") from None
    if crl.issuer != ca.subject or not crl.is_signature_valid(ca.public_key()):  # type: ignore[arg-type]
        raise CertsError(f"{crl_file}: not signed by the federation CA {ca_file}")
    next_update = crl.next_update_utc
    if next_update is not None and next_update < _now():
        raise CertsError(
            f"{crl_file}: out of date since {next_update:%Y-%m-%d}; issue a new one with "
            "`python -m certs crl` on the CA's host"
        )
    return frozenset(r.serial_number for r in crl)
