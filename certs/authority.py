"""Federation CA and per-party certificates.

One root CA signs every party's leaf directly (brpc SPU links verify with depth 1, so no
intermediate CA). Each leaf names its party in CN and SAN, carries the hosts/IPs the party is
reached at, and is valid for both TLS server and client use (the same key + cert is used on
both ends of gRPC cross-silo links and brpc SPU links).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
DEFAULT_HOSTS = ("localhost", "127.0.0.1")
DEFAULT_DAYS = 365


def party_cert_name(party: str) -> str:
    return f"{party}.crt"


def party_key_name(party: str) -> str:
    return f"{party}.key"


CAKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey  # what the CA signs with
LeafPublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey  # what a leaf certifies


def generate_key(kind: str) -> CAKey:
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    raise ValueError(f"unknown key type {kind!r}: use 'rsa' or 'ec'")


def write_key(path: Path, key: CAKey) -> None:
    """Write `key` as unencrypted PKCS#8 PEM, mode 0600 (also when the file existed)."""
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path, 0o600)


def write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def leaf_subject(party: str) -> x509.Name:
    """Subject of a party's leaf (and of its certificate request): CN = party, OU = partyline."""
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, party),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "partyline"),
        ]
    )


def san_entries(names: list[str]) -> list[x509.GeneralName]:
    """SAN entries for host names and IPs, in order, duplicates dropped; IPs as IPAddress."""
    out: list[x509.GeneralName] = []
    seen: set[str] = set()
    for name in names:
        if name in seen:
            continue
        seen.add(name)
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            out.append(x509.DNSName(name))
    return out


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class Authority:
    """A loaded federation CA that can issue party certificates."""

    cert: x509.Certificate
    key: CAKey

    @classmethod
    def create(cls, name: str = "Partyline federation CA", days: int = 3650, key_type: str = "rsa"):
        key = generate_key(key_type)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = now_utc()
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        return cls(cert=cert, key=key)

    @classmethod
    def load(cls, directory: Path) -> Authority:
        directory = Path(directory)
        cert = x509.load_pem_x509_certificate((directory / CA_CERT).read_bytes())
        key = serialization.load_pem_private_key((directory / CA_KEY).read_bytes(), password=None)
        if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            raise ValueError(f"{directory / CA_KEY}: the CA key must be RSA or EC")
        return cls(cert=cert, key=key)

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        write_cert(directory / CA_CERT, self.cert)
        write_key(directory / CA_KEY, self.key)

    def issue(
        self,
        party: str,
        hosts: list[str] | None = None,
        days: int = DEFAULT_DAYS,
        key_type: str = "rsa",
    ) -> tuple[CAKey, x509.Certificate]:
        """Return (key, cert) for `party`; CN = party, SAN = party + hosts (+ localhost defaults)."""
        key = generate_key(key_type)
        names = [party, *(hosts or []), *DEFAULT_HOSTS]
        return key, self.sign_leaf(party, key.public_key(), san_entries(names), days)

    def sign_leaf(
        self,
        party: str,
        public_key: LeafPublicKey,
        sans: list[x509.GeneralName],
        days: int = DEFAULT_DAYS,
    ) -> x509.Certificate:
        """The one leaf profile: CN = party, OU = partyline, SAN = `sans` as given (callers add the
        party and the localhost defaults), TLS server + client, not a CA. `issue` (a new key made
        here) and `certs.signing.sign_csr` (a key that never leaves its host) both use it."""
        now = now_utc()
        return (
            x509.CertificateBuilder()
            .subject_name(leaf_subject(party))
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=isinstance(public_key, rsa.RSAPublicKey),
                    data_encipherment=False,
                    key_agreement=isinstance(public_key, ec.EllipticCurvePublicKey),
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )

    def issue_to(self, directory: Path, party: str, hosts: list[str] | None = None, **kw) -> None:
        key, cert = self.issue(party, hosts, **kw)
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        write_key(directory / party_key_name(party), key)
        write_cert(directory / party_cert_name(party), cert)


def init_federation(
    out: Path,
    parties: list[str],
    hosts: dict[str, list[str]] | None = None,
    days: int = DEFAULT_DAYS,
    key_type: str = "rsa",
    ca_name: str = "Partyline federation CA",
) -> Authority:
    """Create a CA in `out` (or reuse the one there) and a key+cert for every party."""
    out = Path(out)
    if (out / CA_CERT).exists() and (out / CA_KEY).exists():
        ca = Authority.load(out)
    elif (out / CA_CERT).exists():
        raise FileExistsError(
            f"{out / CA_CERT} exists but {CA_KEY} does not: refusing to replace the federation CA"
        )
    else:
        ca = Authority.create(name=ca_name, key_type=key_type)
        ca.save(out)
    for party in parties:
        ca.issue_to(out, party, (hosts or {}).get(party, []), days=days, key_type=key_type)
    return ca


@dataclass(frozen=True)
class CertInfo:
    path: Path
    subject_cn: str
    issuer_cn: str
    sans: list[str]
    not_after: dt.datetime
    is_ca: bool

    @property
    def days_left(self) -> int:
        return (self.not_after - now_utc()).days


def _cn(name: x509.Name) -> str:
    attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else ""


def cert_info(path: Path) -> CertInfo:
    cert = x509.load_pem_x509_certificate(Path(path).read_bytes())
    return describe(cert, Path(path))


def describe(cert: x509.Certificate, path: Path | None = None) -> CertInfo:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans = [str(v) for v in san.get_values_for_type(x509.DNSName)] + [
            str(v) for v in san.get_values_for_type(x509.IPAddress)
        ]
    except x509.ExtensionNotFound:
        sans = []
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    return CertInfo(
        path=path or Path("-"),
        subject_cn=_cn(cert.subject),
        issuer_cn=_cn(cert.issuer),
        sans=sans,
        not_after=cert.not_valid_after_utc,
        is_ca=is_ca,
    )


def verify_chain(cert_path: Path, ca_path: Path) -> None:
    """Raise ValueError unless `cert_path` is signed directly by `ca_path` and currently valid."""
    cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    ca = x509.load_pem_x509_certificate(Path(ca_path).read_bytes())
    if cert.issuer != ca.subject:
        raise ValueError(f"{cert_path} was not issued by the CA in {ca_path}")
    try:
        cert.verify_directly_issued_by(ca)
    except Exception as exc:  # InvalidSignature, ValueError, TypeError
        raise ValueError(
            f"{cert_path}: signature does not verify against {ca_path}: {exc}"
        ) from exc
    now = now_utc()
    if not (cert.not_valid_before_utc <= now <= cert.not_valid_after_utc):
        raise ValueError(
            f"{cert_path} is not valid now (valid until {cert.not_valid_after_utc:%Y-%m-%d})"
        )


def key_matches_cert(key_path: Path, cert_path: Path) -> bool:
    key = serialization.load_pem_private_key(Path(key_path).read_bytes(), password=None)
    cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    fmt = serialization.PublicFormat.SubjectPublicKeyInfo
    enc = serialization.Encoding.DER
    return key.public_key().public_bytes(enc, fmt) == cert.public_key().public_bytes(enc, fmt)
