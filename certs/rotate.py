"""Rotate one party's certificate in the CA directory, touching no other party's files.

- With a request (`--csr FILE`, the distributed flow: the party's host made a new key with
  `python -m certs csr --new-key`): the request is checked and signed into CADIR/NAME.crt.
  No key is written to CADIR; a NAME.key already there (the development layout) no longer
  fits and is moved aside like the certificate.
- Without a request (the all-in-one development layout of `init`, where CADIR holds the party
  keys): a new key of the same type (or `key_type`) and a certificate with the same SAN.

The previous files are kept as CADIR/NAME.crt.<old serial, hex>.old and
CADIR/NAME.key.<old serial, hex>.old (mode 0600), and the previous certificate is revoked
(CADIR/revoked.json, a new CADIR/crl.pem: certs.revocation). A new certificate is always issued. Refused:
the CA itself (`ca`), and a party with no CADIR/NAME.crt unless a request is given.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from certs.authority import (
    DEFAULT_DAYS,
    CAKey,
    describe,
    party_cert_name,
    party_key_name,
    write_cert,
    write_key,
)
from certs.common import (
    CertsError,
    check_party,
    cn_of,
    is_ca,
    key_type_of,
    load_cert,
    load_key,
    party_names,
    serial_hex,
)
from certs.revocation import revoke
from certs.signing import load_authority, load_csr, sign_csr


@dataclass(frozen=True)
class RotateResult:
    party: str
    cert_path: Path
    cert: x509.Certificate
    key_path: Path | None  # the new key written to CADIR; None with a request
    old_cert: x509.Certificate | None
    backups: tuple[Path, ...]  # where the previous certificate (and key) were moved

    @property
    def changed(self) -> bool:
        return True


def backup_name(path: Path, old: x509.Certificate | None) -> Path:
    tag = serial_hex(old) if old is not None else "unknown"
    return path.with_name(f"{path.name}.{tag}.old")


def rotate(
    ca_dir: Path,
    party: str,
    csr_path: Path | None = None,
    days: int = DEFAULT_DAYS,
    key_type: str | None = None,
) -> RotateResult:
    """Issue `party` a new certificate in `ca_dir` (see the module docstring)."""
    if party == "ca":
        raise CertsError("'ca' is the federation CA itself; rotate parties, not the CA")
    check_party(party)
    if days < 1:
        raise CertsError(f"--days must be at least 1, got {days}")
    ca_dir = Path(ca_dir)
    authority = load_authority(ca_dir)
    crt_path = ca_dir / party_cert_name(party)
    key_path = ca_dir / party_key_name(party)
    old = load_cert(crt_path) if crt_path.exists() else None
    if old is not None and (is_ca(old) or cn_of(old.subject) != party):
        raise CertsError(f"{crt_path}: not {party!r}'s leaf certificate; refusing to replace it")

    new_key: CAKey | None = None
    if csr_path is not None:
        if key_type is not None:
            raise CertsError("--key-type applies without --csr only (the host chose the key)")
        csr = load_csr(csr_path)
        cert = sign_csr(authority, csr, days, party, party_names(ca_dir), str(csr_path))
    else:
        if old is None:
            raise CertsError(
                f"{crt_path}: no such certificate; {party!r} is not a party of this CA "
                "(to add one, give its request with --csr)"
            )
        if not key_path.exists():
            raise CertsError(
                f"{key_path}: no such file; {party}'s key lives on its own host — rotate with "
                "--csr (made there by `python -m certs csr --new-key`)"
            )
        kind = key_type or key_type_of(load_key(key_path))
        if kind not in ("rsa", "ec"):
            raise CertsError(f"unknown key type {kind!r}: use 'rsa' or 'ec'")
        hosts = [h for h in describe(old).sans if h != party]
        new_key, cert = authority.issue(party, hosts, days, kind)

    backups: list[Path] = []
    if old is not None:
        backups.append(backup_name(crt_path, old))
        os.replace(crt_path, backups[-1])
    if key_path.exists():
        backups.append(backup_name(key_path, old))
        os.replace(key_path, backups[-1])
    write_cert(crt_path, cert)
    if new_key is not None:
        write_key(key_path, new_key)
    if old is not None:  # rotated out: no endpoint that checks the CRL accepts it any more
        revoke(ca_dir, authority, old, "rotated")
    return RotateResult(
        party, crt_path, cert, key_path if new_key is not None else None, old, tuple(backups)
    )
