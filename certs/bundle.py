"""The tarball a party gets by hand: what it must trust and its own certificate, never a key.

Members (all PEM certificates, re-encoded from the parsed certificate so nothing else that a
source file may hold comes along):

- `ca.crt`: the federation CA, to verify peers;
- `NAME.crt`: the party's own certificate (its key is already on its host);
- `coordinator.crt`: the coordinator's certificate, the only task signer the node trusts
  (NODE_TRUSTED_SIGNERS); left out of the coordinator's own bundle;
- `crl.pem`: the CA's current revocation list (NODE_CRL_FILE), re-encoded the same way; when
  CA_DIR/crl.pem is missing, out of step with revoked.json or due for renewal it is written
  first (`ensure_crl`, the one step that reads ca.key). Left out of the coordinator's bundle:
  the coordinator checks no revocation list;
- `manifest.json`: party, per certificate its CN, serial, not_after, SHA-256 fingerprint, and
  the revocation list's serials and next update;
- `README.txt`: the same for a person, with where each file goes.

The archive is reproducible (fixed member times and owners, no gzip timestamp), so writing the
same bundle again leaves the file untouched (`changed: false`). Any member whose name ends in
`.key` or whose bytes hold "PRIVATE KEY" is refused.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certs.authority import CA_CERT, now_utc, party_cert_name
from certs.common import (
    CertsError,
    Outcome,
    check_party,
    cn_of,
    fingerprint,
    is_ca,
    iso,
    load_cert,
    read_file,
    serial_hex,
    signed_by,
)
from certs.revocation import CRL_FILE, crl_is_current, ensure_crl
from certs.signing import load_authority

COORDINATOR = "coordinator"
COORDINATOR_CERT = "coordinator.crt"
MANIFEST = "manifest.json"
README = "README.txt"


class PrivateKeyInBundle(CertsError):
    """Something about to go into a bundle looks like a private key."""


def check_member(name: str, data: bytes) -> None:
    """Refuse anything that could be private key material."""
    if name.endswith(".key") or ".key." in name or b"PRIVATE KEY" in data:
        raise PrivateKeyInBundle(f"{name}: private key material; a bundle never holds keys")


def _checked(path: Path, ca: x509.Certificate, ca_path: Path) -> x509.Certificate:
    cert = load_cert(path)
    if is_ca(cert):
        raise CertsError(f"{path}: a CA certificate, not a party's or the coordinator's")
    if not signed_by(cert, ca):
        raise CertsError(f"{path}: not signed by the CA in {ca_path}")
    if cert.not_valid_after_utc < now_utc():
        raise CertsError(f"{path}: expired on {cert.not_valid_after_utc:%Y-%m-%d}")
    return cert


@dataclass(frozen=True)
class BundleCrl:
    """The revocation list a bundle carries, and whether it was written for this bundle."""

    crl: x509.CertificateRevocationList
    written: bool

    @property
    def serials(self) -> tuple[str, ...]:
        return tuple(sorted(format(r.serial_number, "x") for r in self.crl))

    @property
    def next_update(self) -> str:
        due = self.crl.next_update_utc
        return iso(due) if due is not None else ""

    @property
    def pem(self) -> bytes:
        return self.crl.public_bytes(serialization.Encoding.PEM)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.crl.public_bytes(serialization.Encoding.DER)).hexdigest()

    def manifest(self) -> dict[str, object]:
        return {
            "file": CRL_FILE,
            "issuer_cn": cn_of(self.crl.issuer),
            "last_update": iso(self.crl.last_update_utc),
            "next_update": self.next_update,
            "revoked_serials": list(self.serials),
            "sha256": self.sha256,
        }

    def readme_lines(self) -> tuple[list[str], list[str]]:
        """(where the file goes, its fingerprint) for README.txt."""
        where = [
            f"{CRL_FILE:<18} the CA's revocation list ({len(self.serials)} revoked): install it",
            f"{'':<18} next to ca.crt and point NODE_CRL_FILE at it; the node refuses every",
            f"{'':<18} peer once it is past {self.next_update}: install a newer one before",
        ]
        check = [
            f"{CRL_FILE}: revoked serials {', '.join(self.serials) or '(none)'}",
            f"  next update {self.next_update}",
            f"  sha256 {self.sha256}",
        ]
        return where, check


def bundle_crl(ca_dir: Path) -> BundleCrl:
    """CA_DIR/crl.pem as it is when current (`crl_is_current`: no key read); else written again
    with the CA's key first (`ensure_crl`)."""
    ca_dir = Path(ca_dir)
    written = not crl_is_current(ca_dir)
    if written:
        try:
            authority = load_authority(ca_dir)
        except CertsError as exc:
            raise CertsError(
                f"{ca_dir / CRL_FILE} is missing, out of date or does not list what revoked.json "
                f"does; writing it again needs the CA's key: {exc}"
            ) from None
        ensure_crl(ca_dir, authority)
    return BundleCrl(x509.load_pem_x509_crl(read_file(ca_dir / CRL_FILE)), written)


def _readme(party: str, certs: dict[str, x509.Certificate], crl: BundleCrl | None) -> str:
    lines = [
        f"Partyline certificates for party {party!r}",
        "",
        f"{CA_CERT:<18} the federation CA: verify every peer against it",
        f"{party_cert_name(party):<18} this party's certificate; its key (NAME.key) is already",
        f"{'':<18} on the party's host and is not in this bundle",
    ]
    if COORDINATOR_CERT in certs:
        lines.append(
            f"{COORDINATOR_CERT:<18} the coordinator's certificate: the only task signer "
            "to trust (NODE_TRUSTED_SIGNERS)"
        )
    where, check = crl.readme_lines() if crl is not None else ([], [])
    lines += [
        *where,
        "",
        "Compare these SHA-256 fingerprints with the operator over another channel:",
        "",
    ]
    for name, cert in certs.items():
        lines.append(f"{name}: CN={cn_of(cert.subject)} serial={serial_hex(cert)}")
        lines.append(f"  not after {iso(cert.not_valid_after_utc)}")
        lines.append(f"  sha256 {fingerprint(cert)}")
    return "\n".join([*lines, *check]) + "\n"


def _manifest(party: str, certs: dict[str, x509.Certificate], crl: BundleCrl | None) -> dict:
    manifest: dict[str, object] = {
        "party": party,
        "certificates": {
            name: {
                "subject_cn": cn_of(cert.subject),
                "serial": serial_hex(cert),
                "not_after": iso(cert.not_valid_after_utc),
                "sha256": fingerprint(cert),
            }
            for name, cert in certs.items()
        },
    }
    if crl is not None:
        manifest["revocation_list"] = crl.manifest()
    return manifest


def bundle_bytes(
    party: str, certs: dict[str, x509.Certificate], crl: BundleCrl | None = None
) -> bytes:
    """The .tar.gz of `certs` (member name → certificate), `crl` as crl.pem, manifest, README."""
    members = [
        (name, cert.public_bytes(serialization.Encoding.PEM)) for name, cert in certs.items()
    ]
    if crl is not None:
        members.append((CRL_FILE, crl.pem))
    manifest = _manifest(party, certs, crl)
    members.append((MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode()))
    members.append((README, _readme(party, certs, crl).encode()))
    mtime = int(certs[party_cert_name(party)].not_valid_before_utc.timestamp())
    raw = io.BytesIO()
    with (
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for name, data in members:
            check_member(name, data)
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), mtime, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


@dataclass(frozen=True)
class BundleResult:
    path: Path
    members: tuple[str, ...]
    outcome: Outcome  # CREATED, UPDATED or UNCHANGED
    serial: str  # the party certificate's, hex
    not_after: str
    crl: BundleCrl | None = None  # None in the coordinator's bundle

    @property
    def changed(self) -> bool:
        return self.outcome.changed or (self.crl is not None and self.crl.written)


def _certificates(
    ca_dir: Path, party: str, cert: Path | None, coordinator_cert: Path | None
) -> dict[str, x509.Certificate]:
    """ca.crt, the party's certificate and (but for the coordinator) the coordinator's, each
    checked: a leaf of this CA, valid now, for the right name."""
    ca_path = ca_dir / CA_CERT
    ca = load_cert(ca_path)
    cert_path = Path(cert) if cert is not None else ca_dir / party_cert_name(party)
    leaf = _checked(cert_path, ca, ca_path)
    if cn_of(leaf.subject) != party:
        raise CertsError(
            f"{cert_path}: the certificate is for {cn_of(leaf.subject)!r}, not {party!r}"
        )
    certs = {CA_CERT: ca, party_cert_name(party): leaf}
    if party != COORDINATOR:
        coord_path = Path(coordinator_cert) if coordinator_cert else ca_dir / COORDINATOR_CERT
        coord = _checked(coord_path, ca, ca_path)
        if cn_of(coord.subject) == party:
            raise CertsError(
                f"{coord_path}: this is {party!r}'s own certificate, not the coordinator's"
            )
        certs[COORDINATOR_CERT] = coord
    return certs


def _write_if_changed(out: Path, data: bytes) -> Outcome:
    if out.exists():
        outcome = Outcome.UNCHANGED if out.read_bytes() == data else Outcome.UPDATED
    else:
        outcome = Outcome.CREATED
    if outcome.changed:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(data)
    return outcome


def write_bundle(
    ca_dir: Path,
    party: str,
    out: Path,
    cert: Path | None = None,
    coordinator_cert: Path | None = None,
) -> BundleResult:
    """Write `party`'s bundle to `out`. The party certificate is `cert` or CADIR/NAME.crt, the
    coordinator's `coordinator_cert` or CADIR/coordinator.crt; each must be a leaf the CA in
    CADIR signed, valid now. A party's bundle carries CADIR/crl.pem (`bundle_crl`); ca.key is
    read only when that list has to be written again, never put in the bundle."""
    check_party(party)
    ca_dir, out = Path(ca_dir), Path(out)
    if out.is_dir():
        raise CertsError(f"{out}: is a directory; --out names the .tar.gz file")
    certs = _certificates(ca_dir, party, cert, coordinator_cert)
    crl = bundle_crl(ca_dir) if party != COORDINATOR else None
    outcome = _write_if_changed(out, bundle_bytes(party, certs, crl))
    leaf = certs[party_cert_name(party)]
    members = (*certs, *((CRL_FILE,) if crl is not None else ()), MANIFEST, README)
    return BundleResult(out, members, outcome, serial_hex(leaf), iso(leaf.not_valid_after_utc), crl)
