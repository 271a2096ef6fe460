"""The tarball a party gets by hand: what it must trust and its own certificate, never a key.

Members (all PEM certificates, re-encoded from the parsed certificate so nothing else that a
source file may hold comes along):

- `ca.crt`: the federation CA, to verify peers;
- `NAME.crt`: the party's own certificate (its key is already on its host);
- `coordinator.crt`: the coordinator's certificate, the only task signer the node trusts
  (NODE_TRUSTED_SIGNERS); left out of the coordinator's own bundle;
- `manifest.json`: party, and per certificate its CN, serial, not_after, SHA-256 fingerprint;
- `README.txt`: the same for a person, with where each file goes.

The archive is reproducible (fixed member times and owners, no gzip timestamp), so writing the
same bundle again leaves the file untouched (`changed: false`). Any member whose name ends in
`.key` or whose bytes hold "PRIVATE KEY" is refused.
"""

from __future__ import annotations

import gzip
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
    serial_hex,
    signed_by,
)

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


def _readme(party: str, certs: dict[str, x509.Certificate]) -> str:
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
    lines += ["", "Compare these SHA-256 fingerprints with the operator over another channel:", ""]
    for name, cert in certs.items():
        lines.append(f"{name}: CN={cn_of(cert.subject)} serial={serial_hex(cert)}")
        lines.append(f"  not after {iso(cert.not_valid_after_utc)}")
        lines.append(f"  sha256 {fingerprint(cert)}")
    return "\n".join(lines) + "\n"


def bundle_bytes(party: str, certs: dict[str, x509.Certificate]) -> bytes:
    """The .tar.gz of `certs` (member name → certificate) plus manifest and README."""
    manifest = {
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
    members = [
        (name, cert.public_bytes(serialization.Encoding.PEM)) for name, cert in certs.items()
    ]
    members.append((MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode()))
    members.append((README, _readme(party, certs).encode()))
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

    @property
    def changed(self) -> bool:
        return self.outcome.changed


def write_bundle(
    ca_dir: Path,
    party: str,
    out: Path,
    cert: Path | None = None,
    coordinator_cert: Path | None = None,
) -> BundleResult:
    """Write `party`'s bundle to `out`. The party certificate is `cert` or CADIR/NAME.crt, the
    coordinator's `coordinator_cert` or CADIR/coordinator.crt; each must be a leaf the CA in
    CADIR signed, valid now. Only CA_DIR/ca.crt is read from the CA, never ca.key."""
    check_party(party)
    ca_dir, out = Path(ca_dir), Path(out)
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
    data = bundle_bytes(party, certs)
    if out.is_dir():
        raise CertsError(f"{out}: is a directory; --out names the .tar.gz file")
    if out.exists():
        outcome = Outcome.UNCHANGED if out.read_bytes() == data else Outcome.UPDATED
    else:
        outcome = Outcome.CREATED
    if outcome.changed:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(data)
    return BundleResult(
        out,
        (*certs, MANIFEST, README),
        outcome,
        serial_hex(leaf),
        iso(leaf.not_valid_after_utc),
    )
