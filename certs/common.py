"""What the csr / sign / install / bundle / rotate steps share: the one-line error, outcomes,
name checks, loading PEM files with readable errors."""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import re
from enum import StrEnum
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import NameOID

from certs.authority import CA_CERT, CAKey, LeafPublicKey, now_utc
from node.contract import PARTY_RE

RESERVED_PARTY_NAMES = frozenset({"ca"})  # ca.crt / ca.key are the federation CA's files
_LABEL_RE = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")


class CertsError(ValueError):
    """Bad input, said in one line that names the file or value and the problem."""


class Outcome(StrEnum):
    """What a step did to one file."""

    CREATED = "created"  # the file did not exist and was written
    REUSED = "reused"  # an existing key was kept
    UPDATED = "updated"  # the file existed and was rewritten
    UNCHANGED = "unchanged"  # the file already said what it should: not touched
    ISSUED = "issued"  # a new certificate was signed and written
    PROMOTED = "promoted"  # a staged key (NAME.key.next) became the live key

    @property
    def changed(self) -> bool:
        return self not in (Outcome.REUSED, Outcome.UNCHANGED)


def check_party(party: str) -> str:
    if not PARTY_RE.fullmatch(party):
        raise CertsError(f"{party!r} is not a party name (lowercase [a-z][a-z0-9_-]{{0,31}})")
    if party in RESERVED_PARTY_NAMES:
        raise CertsError(f"{party!r} names the federation CA's own files; choose another name")
    return party


def check_host(host: str) -> str:
    """A SAN host: an IP address or a DNS name (no wildcards)."""
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    labels = host.split(".")
    if len(host) > 253 or not all(_LABEL_RE.fullmatch(label) for label in labels):
        raise CertsError(f"{host!r} is neither an IP address nor a DNS host name")
    return host


def spki(item: CAKey | CertificatePublicKeyTypes | x509.Certificate) -> bytes:
    """DER SubjectPublicKeyInfo, to compare keys, requests and certificates."""
    public = item.public_key() if isinstance(item, CAKey | x509.Certificate) else item
    return public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def fingerprint(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def serial_hex(cert: x509.Certificate) -> str:
    return format(cert.serial_number, "x")


def iso(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).isoformat(timespec="seconds")


def days_left(cert: x509.Certificate) -> float:
    return (cert.not_valid_after_utc - now_utc()).total_seconds() / 86400


def cn_of(name: x509.Name) -> str:
    attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attrs[0].value) if len(attrs) == 1 else ""


def read_file(path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise CertsError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CertsError(f"{path}: is a directory, not a file") from None
    except OSError as exc:
        raise CertsError(f"{path}: cannot read ({exc.strerror or exc})") from None


def load_cert(path: Path) -> x509.Certificate:
    data = read_file(path)
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError:
        raise CertsError(f"{path}: not a PEM certificate") from None


def load_key(path: Path) -> CAKey:
    data = read_file(path)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise CertsError(f"{path}: not an unencrypted PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise CertsError(f"{path}: an RSA or EC key is needed, this is {type(key).__name__}")
    return key


def key_type_of(key: CAKey | LeafPublicKey) -> str:
    return "rsa" if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey) else "ec"


def is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    if cert.issuer != ca.subject:
        return False
    try:
        cert.verify_directly_issued_by(ca)
    except Exception:  # InvalidSignature, ValueError, TypeError
        return False
    return True


SHARED_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})  # in every leaf: nobody's own


def host_key(host: str) -> str:
    """A SAN host as compared: an IP address in its canonical form, a DNS name in lower case
    without a trailing dot."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host.lower().rstrip(".")


def registered_hosts(ca_dir: Path) -> dict[str, str]:
    """host → the name (party or coordinator) whose certificate in `ca_dir` holds it in its SAN
    (DNS names and IP addresses; the localhost entries every leaf has are nobody's)."""
    owners: dict[str, str] = {}
    for path in sorted(Path(ca_dir).glob("*.crt")):
        if path.name == CA_CERT:
            continue
        try:
            cert = x509.load_pem_x509_certificate(path.read_bytes())
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except (OSError, ValueError, x509.ExtensionNotFound):
            continue
        owner = cn_of(cert.subject)
        if not owner or is_ca(cert):
            continue
        for entry in san:
            if isinstance(entry, x509.DNSName | x509.IPAddress):
                key = host_key(str(entry.value))
                if key not in SHARED_HOSTS:
                    owners.setdefault(key, owner)
    return owners


def party_names(ca_dir: Path) -> set[str]:
    """CNs of the leaf certificates in `ca_dir`: names a request for another party must not
    claim in its SAN (a peer dials a party by its name)."""
    names: set[str] = set()
    for path in Path(ca_dir).glob("*.crt"):
        if path.name == CA_CERT:
            continue
        try:
            cert = x509.load_pem_x509_certificate(path.read_bytes())
        except (OSError, ValueError):
            continue
        cn = cn_of(cert.subject)
        if cn and not is_ca(cert):
            names.add(cn)
    return names
