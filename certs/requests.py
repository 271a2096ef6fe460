"""Host side of the distributed flow: a party's private key is made on its own host and never
leaves it; only a certificate request goes out and only a certificate comes back.

    python -m certs csr --party alice --dir /etc/partyline/certs        # on alice's host
    python -m certs sign --ca-dir ca/ --csr alice.csr --out alice.crt   # on the controller
    python -m certs install --party alice --dir /etc/partyline/certs --cert alice.crt  # host

Files in DIR:

- `NAME.key`: the live key, mode 0600. `csr` creates it only when absent and never replaces it
  (a loose mode is tightened to 0600).
- `NAME.csr`: the request (CN = NAME, OU = partyline, SAN = NAME + hosts + localhost +
  127.0.0.1, IPs as IP entries). It is rewritten only when its content would change (public
  key, subject or SAN set), so an unchanged request keeps its bytes and mtime: `changed: false`
  for Ansible.
- `NAME.key.next`: key rotation. `csr --new-key` stages a new key here (made once; later
  `--new-key` runs reuse it) and writes `NAME.csr` for it, while `NAME.key` and `NAME.crt` go
  on serving. Once the certificate for it is back, `install` promotes it: `NAME.key` becomes
  `NAME.key.old`, `NAME.key.next` becomes `NAME.key`, and the previous `NAME.crt` is kept as
  `NAME.crt.old`. To abandon a staged key, delete `NAME.key.next`.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization

from certs.authority import (
    DEFAULT_HOSTS,
    CAKey,
    generate_key,
    leaf_subject,
    now_utc,
    party_cert_name,
    party_key_name,
    san_entries,
    write_cert,
    write_key,
)
from certs.common import (
    CertsError,
    Outcome,
    check_host,
    check_party,
    cn_of,
    is_ca,
    iso,
    key_type_of,
    load_cert,
    load_key,
    serial_hex,
    signed_by,
    spki,
)

NEXT_SUFFIX = ".next"  # NAME.key.next: a staged key waiting for its certificate
OLD_SUFFIX = ".old"  # NAME.key.old / NAME.crt.old: what `install` replaced


def csr_name(party: str) -> str:
    return f"{party}.csr"


def next_key_name(party: str) -> str:
    return party_key_name(party) + NEXT_SUFFIX


def csr_sans(csr: x509.CertificateSigningRequest) -> list[x509.GeneralName]:
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return list(san)


def wanted_sans(party: str, hosts: list[str]) -> list[x509.GeneralName]:
    return san_entries([party, *hosts, *DEFAULT_HOSTS])


def make_csr(key: CAKey, party: str, hosts: list[str]) -> x509.CertificateSigningRequest:
    """A request for `party`'s leaf: CN = party, OU = partyline, SAN = party + hosts + the
    localhost defaults (duplicates dropped), signed with `key`."""
    check_party(party)
    for host in hosts:
        check_host(host)
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(leaf_subject(party))
        .add_extension(x509.SubjectAlternativeName(wanted_sans(party, hosts)), critical=False)
        .sign(key, hashes.SHA256())
    )


def csr_matches(
    csr: x509.CertificateSigningRequest, key: CAKey, party: str, hosts: list[str]
) -> bool:
    """Whether `csr` already asks for what `make_csr(key, party, hosts)` would."""
    return (
        csr.is_signature_valid
        and spki(csr.public_key()) == spki(key)
        and csr.subject == leaf_subject(party)
        and set(csr_sans(csr)) == set(wanted_sans(party, hosts))
    )


@dataclass(frozen=True)
class CsrResult:
    key: Path  # the key the request is for (NAME.key, or NAME.key.next with new_key)
    csr: Path
    key_outcome: Outcome  # CREATED or REUSED
    csr_outcome: Outcome  # CREATED, UPDATED or UNCHANGED
    mode_fixed: bool = False  # an existing key's loose mode was tightened to 0600
    pending: Path | None = None  # a staged NAME.key.next that this (live-key) run left alone

    @property
    def changed(self) -> bool:
        return self.key_outcome.changed or self.csr_outcome.changed or self.mode_fixed


def _existing_key(path: Path, key_type: str | None) -> tuple[CAKey, bool]:
    key = load_key(path)
    if key_type and key_type_of(key) != key_type:
        raise CertsError(
            f"{path}: an existing {key_type_of(key).upper()} key, not {key_type.upper()}; "
            "stage a new key with --new-key or drop --key-type"
        )
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        os.chmod(path, 0o600)
        return key, True
    return key, False


def ensure_key_and_csr(
    directory: Path,
    party: str,
    hosts: list[str] | None = None,
    key_type: str | None = None,
    new_key: bool = False,
) -> CsrResult:
    """Make sure DIR holds a key and a current request for `party` (see the module docstring).
    `key_type` (rsa | ec, default rsa) applies to a key made here; an existing key of another
    type is refused. `new_key` works on NAME.key.next instead of NAME.key."""
    check_party(party)
    hosts = [check_host(h) for h in hosts or []]
    if key_type not in (None, "rsa", "ec"):
        raise CertsError(f"unknown key type {key_type!r}: use 'rsa' or 'ec'")
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise CertsError(f"{directory}: not a directory")
    directory.mkdir(parents=True, exist_ok=True)
    key_path = directory / (next_key_name(party) if new_key else party_key_name(party))
    mode_fixed = False
    if key_path.exists():
        key, mode_fixed = _existing_key(key_path, key_type)
        key_outcome = Outcome.REUSED
    else:
        key = generate_key(key_type or "rsa")
        write_key(key_path, key)
        key_outcome = Outcome.CREATED

    csr_path = directory / csr_name(party)
    csr_outcome = Outcome.CREATED
    if csr_path.exists():
        csr_outcome = Outcome.UPDATED
        try:
            existing = x509.load_pem_x509_csr(csr_path.read_bytes())
            if csr_matches(existing, key, party, hosts):
                csr_outcome = Outcome.UNCHANGED
        except (ValueError, UnsupportedAlgorithm):
            pass  # not a request we can read: replace it
    if csr_outcome.changed:
        csr = make_csr(key, party, hosts)
        csr_path.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    next_path = directory / next_key_name(party)
    pending = next_path if not new_key and next_path.exists() else None
    return CsrResult(key_path, csr_path, key_outcome, csr_outcome, mode_fixed, pending)


@dataclass(frozen=True)
class InstallResult:
    cert: Path  # DIR/NAME.crt
    key: Path  # DIR/NAME.key
    cert_outcome: Outcome  # CREATED, UPDATED or UNCHANGED
    key_outcome: Outcome  # PROMOTED (NAME.key.next became NAME.key) or UNCHANGED
    serial: str  # hex
    not_after: str

    @property
    def changed(self) -> bool:
        return self.cert_outcome.changed or self.key_outcome.changed


def install_cert(
    directory: Path, party: str, cert_path: Path, ca_path: Path | None = None
) -> InstallResult:
    """Put the certificate signed for `party` in place as DIR/NAME.crt. If it certifies the
    staged NAME.key.next, that key is promoted (NAME.key → NAME.key.old, NAME.key.next →
    NAME.key) and the previous NAME.crt kept as NAME.crt.old. Refused: a certificate for another
    party, a CA certificate, one that fits neither key, or (with `ca_path`) one the CA did not
    sign or that is not valid now. Nothing changes when it is refused."""
    check_party(party)
    directory, cert_path = Path(directory), Path(cert_path)
    cert = load_cert(cert_path)
    cn = cn_of(cert.subject)
    if cn != party:
        raise CertsError(f"{cert_path}: the certificate is for {cn!r}, not {party!r}")
    if is_ca(cert):
        raise CertsError(f"{cert_path}: a CA certificate, not a party's")
    if ca_path is not None:
        if not signed_by(cert, load_cert(ca_path)):
            raise CertsError(f"{cert_path}: not signed by the CA in {ca_path}")
        if not cert.not_valid_before_utc <= now_utc() <= cert.not_valid_after_utc:
            raise CertsError(f"{cert_path}: not valid now")
    key_path = directory / party_key_name(party)
    next_path = directory / next_key_name(party)
    crt_path = directory / party_cert_name(party)
    if next_path.exists() and spki(load_key(next_path)) == spki(cert):
        key_outcome = Outcome.PROMOTED
    elif key_path.exists() and spki(load_key(key_path)) == spki(cert):
        key_outcome = Outcome.UNCHANGED
    else:
        raise CertsError(f"{cert_path}: its public key matches neither {key_path} nor {next_path}")

    pem = cert.public_bytes(serialization.Encoding.PEM)
    if not crt_path.exists():
        cert_outcome = Outcome.CREATED
    elif crt_path.read_bytes() == pem or crt_path.resolve() == cert_path.resolve():
        cert_outcome = Outcome.UNCHANGED  # already in place (perhaps copied there directly)
    else:
        cert_outcome = Outcome.UPDATED
    if key_outcome is Outcome.PROMOTED:
        if key_path.exists():
            os.replace(key_path, key_path.with_name(key_path.name + OLD_SUFFIX))
        os.replace(next_path, key_path)
    if cert_outcome is Outcome.UPDATED:
        os.replace(crt_path, crt_path.with_name(crt_path.name + OLD_SUFFIX))
    if cert_outcome.changed:
        write_cert(crt_path, cert)
    return InstallResult(
        crt_path,
        key_path,
        cert_outcome,
        key_outcome,
        serial_hex(cert),
        iso(cert.not_valid_after_utc),
    )
