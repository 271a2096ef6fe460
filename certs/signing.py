"""Controller side: sign a party's certificate request with the federation CA.

The request's own signature must verify; its CN must be a party name (and the one expected,
when given); its SAN may hold DNS names and IP addresses only, none of them another party's
name; it must not ask for a CA certificate. Only the request's public key and SAN entries are
used: the certificate gets the one leaf profile of `Authority.sign_leaf` (the one `init`
issues), with the party name, localhost and 127.0.0.1 always in its SAN. The party's private
key is never read or needed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from certs.authority import (
    CA_CERT,
    CA_KEY,
    DEFAULT_DAYS,
    DEFAULT_HOSTS,
    Authority,
    LeafPublicKey,
    san_entries,
    write_cert,
)
from certs.common import (
    RESERVED_PARTY_NAMES,
    CertsError,
    Outcome,
    check_host,
    cn_of,
    days_left,
    host_key,
    read_file,
    signed_by,
    spki,
)
from certs.requests import csr_sans
from node.contract import PARTY_RE

DEFAULT_RENEW_DAYS = 30
MIN_RSA_BITS = 2048
EC_CURVES = (ec.SECP256R1, ec.SECP384R1)


def load_authority(ca_dir: Path) -> Authority:
    ca_dir = Path(ca_dir)
    for name in (CA_CERT, CA_KEY):
        if not (ca_dir / name).is_file():
            raise CertsError(f"{ca_dir / name}: no such file (is {ca_dir} the CA directory?)")
    try:
        return Authority.load(ca_dir)
    except (ValueError, TypeError) as exc:
        raise CertsError(f"{ca_dir}: cannot load the CA ({exc})") from None


@dataclass(frozen=True)
class CaResult:
    cert_path: Path
    cert: x509.Certificate
    outcome: Outcome  # CREATED or UNCHANGED

    @property
    def changed(self) -> bool:
        return self.outcome.changed


def ensure_ca(
    ca_dir: Path, name: str = "Partyline federation CA", days: int = 3650, key_type: str = "rsa"
) -> CaResult:
    """Create the federation CA in `ca_dir` unless one is there (then it is only loaded, and
    `name`, `days` and `key_type` are ignored). A ca.crt without its ca.key is refused, as by
    `init`: it is never replaced."""
    ca_dir = Path(ca_dir)
    if (ca_dir / CA_CERT).exists() or (ca_dir / CA_KEY).exists():
        authority = load_authority(ca_dir)
        return CaResult(ca_dir / CA_CERT, authority.cert, Outcome.UNCHANGED)
    if days < 1:
        raise CertsError(f"--days must be at least 1, got {days}")
    authority = Authority.create(name=name, days=days, key_type=key_type)
    authority.save(ca_dir)
    return CaResult(ca_dir / CA_CERT, authority.cert, Outcome.CREATED)


def load_csr(path: Path) -> x509.CertificateSigningRequest:
    data = read_file(path)
    try:
        return x509.load_pem_x509_csr(data)
    except ValueError:
        pass
    try:
        return x509.load_der_x509_csr(data)
    except ValueError:
        raise CertsError(f"{path}: not a certificate signing request (PEM or DER)") from None


def _public_key(csr: x509.CertificateSigningRequest, source: str) -> LeafPublicKey:
    try:
        key = csr.public_key()
    except (ValueError, UnsupportedAlgorithm):
        raise CertsError(f"{source}: the request's public key cannot be read") from None
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise CertsError(
                f"{source}: RSA key of {key.key_size} bits; at least {MIN_RSA_BITS} needed"
            )
        return key
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, EC_CURVES):
            raise CertsError(f"{source}: EC curve {key.curve.name} not accepted (P-256, P-384)")
        return key
    raise CertsError(f"{source}: a {type(key).__name__} key; RSA or EC is needed")


def check_csr(
    csr: x509.CertificateSigningRequest,
    source: str = "request",
    expected_party: str | None = None,
    reserved: Iterable[str] = (),
    hosts: Mapping[str, str] | None = None,
) -> str:
    """Return the party `csr` is for, or raise CertsError naming `source` and the problem.
    `reserved`: names of the federation's parties; `hosts`: host → whose it is (another
    party's or the coordinator's registered host or address). The request may claim only its
    own: a certificate for alice's Redis host would let its holder pose as alice's Redis."""
    try:
        valid = csr.is_signature_valid
    except (ValueError, UnsupportedAlgorithm):
        valid = False
    if not valid:
        raise CertsError(f"{source}: the request's signature does not verify (altered or corrupt)")
    cns = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(cns) != 1:
        raise CertsError(f"{source}: the subject must hold exactly one CN, it has {len(cns)}")
    party = cn_of(csr.subject)
    if not PARTY_RE.fullmatch(party) or party in RESERVED_PARTY_NAMES:
        raise CertsError(f"{source}: CN {party!r} is not a party name")
    if expected_party is not None and party != expected_party:
        raise CertsError(
            f"{source}: the request is for {party!r}, not {expected_party!r} (--party)"
        )
    _public_key(csr, source)
    try:
        extensions = list(csr.extensions)
    except ValueError as exc:
        raise CertsError(f"{source}: malformed extensions ({exc})") from None
    for ext in extensions:
        if isinstance(ext.value, x509.BasicConstraints) and ext.value.ca:
            raise CertsError(f"{source}: the request asks for a CA certificate; refused")
    others = set(reserved) - {party}
    for entry in csr_sans(csr):
        if isinstance(entry, x509.IPAddress):
            continue
        if not isinstance(entry, x509.DNSName):
            raise CertsError(
                f"{source}: SAN entry {entry.value!r} is a {type(entry).__name__}; "
                "only DNS names and IP addresses are accepted"
            )
        try:
            check_host(entry.value)
        except CertsError as exc:
            raise CertsError(f"{source}: SAN entry {exc}") from None
        if entry.value in others:
            raise CertsError(
                f"{source}: SAN entry {entry.value!r} is another party's name; refused"
            )
    _own_hosts_only(csr, party, hosts or {}, source)
    return party


def _own_hosts_only(
    csr: x509.CertificateSigningRequest, party: str, hosts: Mapping[str, str], source: str
) -> None:
    for entry in csr_sans(csr):
        if not isinstance(entry, x509.DNSName | x509.IPAddress):
            continue
        owner = hosts.get(host_key(str(entry.value)))
        if owner is not None and owner != party:
            raise CertsError(
                f"{source}: SAN entry {str(entry.value)!r} is {owner}'s registered host; a "
                f"certificate for {party} may not name it (refused)"
            )


def leaf_sans(party: str, csr: x509.CertificateSigningRequest) -> list[x509.GeneralName]:
    """The SAN the certificate gets: the party name, the request's entries, the localhost
    defaults — in that order, duplicates dropped."""
    out: list[x509.GeneralName] = []
    for entry in [x509.DNSName(party), *csr_sans(csr), *san_entries(list(DEFAULT_HOSTS))]:
        if entry not in out:
            out.append(entry)
    return out


def sign_csr(
    authority: Authority,
    csr: x509.CertificateSigningRequest,
    days: int = DEFAULT_DAYS,
    expected_party: str | None = None,
    reserved: Iterable[str] = (),
    source: str = "request",
    hosts: Mapping[str, str] | None = None,
) -> x509.Certificate:
    """Check `csr` (see `check_csr`) and issue the party's leaf for its public key."""
    if days < 1:
        raise CertsError(f"--days must be at least 1, got {days}")
    party = check_csr(csr, source, expected_party, reserved, hosts)
    return authority.sign_leaf(party, _public_key(csr, source), leaf_sans(party, csr), days)


def _still_good(
    cert: x509.Certificate,
    authority: Authority,
    csr: x509.CertificateSigningRequest,
    party: str,
    renew_days: int,
) -> bool:
    try:
        sans = set(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except (x509.ExtensionNotFound, ValueError):
        return False
    return (
        signed_by(cert, authority.cert)
        and cn_of(cert.subject) == party
        and spki(cert) == spki(csr.public_key())
        and sans == set(leaf_sans(party, csr))
        and days_left(cert) > renew_days
    )


@dataclass(frozen=True)
class SignResult:
    party: str
    cert_path: Path
    cert: x509.Certificate
    outcome: Outcome  # ISSUED or UNCHANGED

    @property
    def changed(self) -> bool:
        return self.outcome.changed


def ensure_signed(
    authority: Authority,
    csr_path: Path,
    out: Path,
    party: str | None = None,
    days: int = DEFAULT_DAYS,
    renew_days: int = DEFAULT_RENEW_DAYS,
    reserved: Iterable[str] = (),
    hosts: Mapping[str, str] | None = None,
) -> SignResult:
    """Sign `csr_path` into `out`, unless `out` already holds this CA's certificate for the
    same party, public key and SAN with more than `renew_days` days left. Writes only `out`."""
    out = Path(out)
    csr = load_csr(csr_path)
    party = check_csr(csr, str(csr_path), party, reserved, hosts)
    if out.is_dir():
        raise CertsError(f"{out}: is a directory; --out names the certificate file")
    if out.exists():
        try:
            current = x509.load_pem_x509_certificate(out.read_bytes())
        except ValueError:
            current = None  # not a certificate: replace it
        if current is not None and _still_good(current, authority, csr, party, renew_days):
            return SignResult(party, out, current, Outcome.UNCHANGED)
    cert = sign_csr(authority, csr, days, party, reserved, str(csr_path), hosts)
    write_cert(out, cert)
    return SignResult(party, out, cert, Outcome.ISSUED)
