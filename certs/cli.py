"""The distributed-flow subcommands of `python -m certs`: csr, install (party host), ca,
sign, bundle, rotate (controller, with the CA). Each returns a Report: a `changed` flag, the JSON
fields of `--json`, and the lines a person reads."""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from rich.markup import escape

from certs.authority import DEFAULT_DAYS
from certs.bundle import write_bundle
from certs.common import (
    CertsError,
    check_host,
    cn_of,
    fingerprint,
    host_key,
    iso,
    load_cert,
    party_names,
    registered_hosts,
    serial_hex,
)
from certs.requests import ensure_key_and_csr, install_cert
from certs.revocation import CRL_DAYS, CRL_RENEW_DAYS, ensure_crl, read_revoked, revoke
from certs.rotate import rotate
from certs.signing import DEFAULT_RENEW_DAYS, ensure_ca, ensure_signed, load_authority

JSON_HELP = 'print one JSON object instead ({"changed": bool, ...paths}); errors stay on stderr'


@dataclass
class Report:
    changed: bool
    data: dict[str, Any]
    lines: list[str] = field(default_factory=list)


def _cert_fields(cert: x509.Certificate) -> dict[str, str]:
    return {
        "serial": serial_hex(cert),
        "not_after": iso(cert.not_valid_after_utc),
        "sha256": fingerprint(cert),
    }


def _paragraphs(*texts: str) -> str:
    return "\n\n".join(textwrap.fill(text, 79) for text in texts)


def _p(path: Path) -> str:
    return escape(str(path))


def _word(outcome: str) -> str:
    colour = "yellow" if outcome in ("reused", "unchanged") else "green"
    return f"[{colour}]{outcome}[/]"


def run_csr(args: argparse.Namespace) -> Report:
    res = ensure_key_and_csr(args.dir, args.party, args.host, args.key_type, args.new_key)
    lines = [
        f"key      {_word(res.key_outcome)}  {_p(res.key)}",
        f"request  {_word(res.csr_outcome)}  {_p(res.csr)}",
    ]
    if res.mode_fixed:
        lines.append(f"[yellow]tightened[/] {_p(res.key)} to mode 0600")
    if res.pending:
        lines.append(
            f"note: a staged key {_p(res.pending)} waits; this request is for the live key"
        )
    data = {
        "party": args.party,
        "key": str(res.key),
        "csr": str(res.csr),
        "key_status": res.key_outcome.value,
        "csr_status": res.csr_outcome.value,
        "mode_fixed": res.mode_fixed,
        "pending_key": str(res.pending) if res.pending else None,
    }
    return Report(res.changed, data, lines)


def run_install(args: argparse.Namespace) -> Report:
    res = install_cert(args.dir, args.party, args.cert, args.ca)
    lines = [
        f"certificate  {_word(res.cert_outcome)}  {_p(res.cert)} (serial {res.serial}, "
        f"until {res.not_after})",
        f"key          {_word(res.key_outcome)}  {_p(res.key)}",
    ]
    data = {
        "party": args.party,
        "cert": str(res.cert),
        "key": str(res.key),
        "cert_status": res.cert_outcome.value,
        "key_status": res.key_outcome.value,
        "serial": res.serial,
        "not_after": res.not_after,
    }
    return Report(res.changed, data, lines)


def run_ca(args: argparse.Namespace) -> Report:
    res = ensure_ca(args.dir, args.name, args.days, args.key_type)
    info = _cert_fields(res.cert)
    lines = [
        f"federation CA  {_word(res.outcome)}  {_p(res.cert_path)}",
        f"serial {info['serial']}, valid until {info['not_after']}, sha256 {info['sha256']}",
    ]
    data = {"cert": str(res.cert_path), "status": res.outcome.value, **info}
    return Report(res.changed, data, lines)


def run_sign(args: argparse.Namespace) -> Report:
    authority = load_authority(args.ca_dir)
    hosts = registered_hosts(args.ca_dir)  # what the CA already certified, for whom
    for spec in args.host_of or []:
        name, sep, host = spec.partition("=")
        if not sep or not name or not host:
            raise CertsError(f"--host-of {spec!r}: expected NAME=HOST")
        hosts[host_key(check_host(host))] = name
    res = ensure_signed(
        authority,
        args.csr,
        args.out,
        args.party,
        args.days,
        args.renew_days,
        party_names(args.ca_dir),
        hosts,
    )
    info = _cert_fields(res.cert)
    lines = [
        f"certificate for {res.party}  {_word(res.outcome)}  {_p(res.cert_path)}",
        f"serial {info['serial']}, valid until {info['not_after']}",
    ]
    data = {"party": res.party, "cert": str(res.cert_path), "status": res.outcome.value, **info}
    return Report(res.changed, data, lines)


def run_bundle(args: argparse.Namespace) -> Report:
    res = write_bundle(args.ca_dir, args.party, args.out, args.cert, args.coordinator_cert)
    lines = [
        f"bundle for {args.party}  {_word(res.outcome)}  {_p(res.path)}",
        f"members: {', '.join(res.members)}",
        f"{args.party}.crt serial {res.serial}, valid until {res.not_after}",
    ]
    data: dict[str, Any] = {
        "party": args.party,
        "bundle": str(res.path),
        "status": res.outcome.value,
        "members": list(res.members),
        "serial": res.serial,
        "not_after": res.not_after,
        "crl": None,
    }
    if res.crl is not None:
        word = "written anew for it" if res.crl.written else "as it was"
        lines.append(
            f"crl.pem {word}: {len(res.crl.serials)} revoked, next update {res.crl.next_update}"
        )
        data["crl"] = {
            "written": res.crl.written,
            "revoked_serials": list(res.crl.serials),
            "next_update": res.crl.next_update,
        }
    return Report(res.changed, data, lines)


def run_rotate(args: argparse.Namespace) -> Report:
    res = rotate(args.ca_dir, args.party, args.csr, args.days, args.key_type)
    old = _cert_fields(res.old_cert) if res.old_cert is not None else None
    new = _cert_fields(res.cert)
    lines = [
        f"rotated {res.party}: {_p(res.cert_path)}",
        f"old  serial {old['serial']}, until {old['not_after']}" if old else "old  (none)",
        f"new  serial {new['serial']}, until {new['not_after']}",
    ]
    lines += [f"kept {_p(path)}" for path in res.backups]
    if res.key_path is not None:
        lines.append(f"new key {_p(res.key_path)}")
    data = {
        "party": res.party,
        "cert": str(res.cert_path),
        "key": str(res.key_path) if res.key_path else None,
        "old": old,
        "new": new,
        "backups": [str(p) for p in res.backups],
    }
    return Report(True, data, lines)


def run_crl(args: argparse.Namespace) -> Report:
    authority = load_authority(args.ca_dir)
    path, changed = ensure_crl(args.ca_dir, authority, args.days, args.renew_days)
    revoked = read_revoked(args.ca_dir)
    word = "written" if changed else "unchanged"
    lines = [f"revocation list  {word}  {_p(path)}", f"{len(revoked)} revoked"]
    return Report(changed, {"crl": str(path), "revoked": len(revoked)}, lines)


def run_revoke(args: argparse.Namespace) -> Report:
    authority = load_authority(args.ca_dir)
    cert = load_cert(args.cert)
    path = revoke(args.ca_dir, authority, cert, args.reason)
    serial = serial_hex(cert)
    lines = [f"revoked {cn_of(cert.subject)}'s certificate {serial}", f"revocation list {_p(path)}"]
    return Report(True, {"serial": serial, "party": cn_of(cert.subject), "crl": str(path)}, lines)


Handler = Callable[[argparse.Namespace], Report]


def add_commands(sub: Any) -> dict[str, Handler]:
    """Add csr, install, sign, bundle and rotate to `sub` (argparse subparsers)."""
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser(
        "csr",
        formatter_class=fmt,
        help="on a party's host: make its key (if absent) and a certificate request",
        description=_paragraphs(
            "Write DIR/NAME.key (mode 0600) only if it is absent, and DIR/NAME.csr: CN=NAME, "
            "OU=partyline, SAN = NAME + --host + localhost + 127.0.0.1. An existing key is "
            "reused and never replaced; the request is rewritten only if its key, subject or "
            "SAN would change (`changed: false` when nothing did).",
            "Key rotation: --new-key stages a new key in DIR/NAME.key.next (made once, reused "
            "by later --new-key runs) and writes the request for it; NAME.key keeps serving. "
            "Sign the request (`sign` or `rotate --csr`), then `install` the certificate: "
            "NAME.key.next becomes NAME.key, the previous key NAME.key.old.",
        ),
    )
    p.add_argument("--party", required=True, help="party name (CN)")
    p.add_argument("--dir", required=True, type=Path, help="the party's certificate directory")
    p.add_argument(
        "--host",
        action="append",
        default=[],
        metavar="HOST",
        help="extra SAN host name or IP (repeatable)",
    )
    p.add_argument(
        "--key-type",
        choices=["rsa", "ec"],
        default=None,
        help="type of a key made here (default rsa); an existing key of another type is refused",
    )
    p.add_argument(
        "--new-key",
        action="store_true",
        help="request for a staged new key in NAME.key.next (rotation)",
    )
    p.add_argument("--json", action="store_true", help=JSON_HELP)

    p = sub.add_parser(
        "install",
        help="on a party's host: put its signed certificate in place (promotes a staged key)",
        description="Copy CERT to DIR/NAME.crt (the previous one kept as NAME.crt.old). If CERT "
        "certifies the staged DIR/NAME.key.next, that key becomes NAME.key (the previous one "
        "NAME.key.old). Refused: a certificate for another party or that fits neither key.",
    )
    p.add_argument("--party", required=True, help="party name (CN)")
    p.add_argument("--dir", required=True, type=Path, help="the party's certificate directory")
    p.add_argument("--cert", required=True, type=Path, help="the certificate `sign` issued")
    p.add_argument("--ca", type=Path, help="also check that this CA certificate signed it")
    p.add_argument("--json", action="store_true", help=JSON_HELP)

    p = sub.add_parser(
        "ca",
        help="with the CA: create the federation CA when there is none",
        description="Create DIR/ca.crt and DIR/ca.key (mode 0600) unless they exist; an "
        "existing CA is kept as it is (changed: false). A ca.crt without its ca.key is refused.",
    )
    p.add_argument("--dir", required=True, type=Path, help="the CA directory")
    p.add_argument("--name", default="Partyline federation CA", help="the CA's CN")
    p.add_argument("--days", type=int, default=3650, help="validity in days")
    p.add_argument("--key-type", choices=["rsa", "ec"], default="rsa", help="RSA-2048 or EC P-256")
    p.add_argument("--json", action="store_true", help=JSON_HELP)

    p = sub.add_parser(
        "sign",
        help="with the CA: sign a party's certificate request",
        description="Check CSR (its signature; CN = --party; SAN only DNS names and IPs, none "
        "another party's name or a host registered to another party or the coordinator — in "
        "another certificate of the CA directory, or given with --host-of; no CA request) and "
        "write the party's "
        "certificate to --out, with the profile `init` uses. Nothing else is written, and no "
        "private key but the CA's is read. If --out already holds this CA's certificate for the "
        "same key and SAN with more than --renew-days left, it is kept (changed: false).",
    )
    p.add_argument("--ca-dir", required=True, type=Path, help="directory with ca.crt and ca.key")
    p.add_argument("--csr", required=True, type=Path, help="the request (PEM or DER)")
    p.add_argument("--out", required=True, type=Path, help="certificate file to write")
    p.add_argument("--party", required=True, help="the party the request must be for (its CN)")
    p.add_argument(
        "--host-of",
        action="append",
        metavar="NAME=HOST",
        help="HOST (a name or address) is registered to party NAME (or the coordinator): "
        "another party's request naming it is refused; repeat for every party's hosts",
    )
    p.add_argument("--days", type=int, default=DEFAULT_DAYS, help="validity in days")
    p.add_argument(
        "--renew-days",
        type=int,
        default=DEFAULT_RENEW_DAYS,
        help="reissue when --out has this many days left or fewer",
    )
    p.add_argument("--json", action="store_true", help=JSON_HELP)

    p = sub.add_parser(
        "bundle",
        help="with the CA: a .tar.gz of ca.crt, the party's and the coordinator's certificates "
        "and the revocation list",
        description="Write a reproducible .tar.gz with ca.crt, NAME.crt, coordinator.crt (the "
        "task signer; not in the coordinator's own bundle), crl.pem (the CA's revocation list, "
        "NODE_CRL_FILE; written again first, with ca.key, when missing, out of step with "
        "revoked.json or due as `crl` would; not in the coordinator's bundle), manifest.json and "
        "README.txt (serials, expiry, SHA-256 fingerprints). Never a private key: anything that "
        "looks like one is refused.",
    )
    p.add_argument(
        "--ca-dir",
        required=True,
        type=Path,
        help="directory with ca.crt and crl.pem (ca.key when the list must be written again)",
    )
    p.add_argument("--party", required=True, help="party name")
    p.add_argument("--out", required=True, type=Path, help="the .tar.gz to write")
    p.add_argument("--cert", type=Path, help="the party's certificate (default CA_DIR/NAME.crt)")
    p.add_argument(
        "--coordinator-cert",
        type=Path,
        help="the coordinator's certificate (default CA_DIR/coordinator.crt)",
    )
    p.add_argument("--json", action="store_true", help=JSON_HELP)

    p = sub.add_parser(
        "rotate",
        help="with the CA: a new certificate for one party (always reissued)",
        description="Issue NAME a new certificate in CA_DIR, touching no other party's files. "
        "With --csr: sign that request (made with `csr --new-key` on the party's host); no key "
        "is written to CA_DIR. Without: the development layout of `init` — a new key and "
        "certificate with the same SAN. The previous files are kept as "
        "NAME.crt.<old serial hex>.old and NAME.key.<old serial hex>.old. Refused: the CA "
        "itself, and a party without CA_DIR/NAME.crt unless --csr is given.",
    )
    p.add_argument("--ca-dir", required=True, type=Path, help="directory with ca.crt and ca.key")
    p.add_argument("--party", required=True, help="party name")
    p.add_argument("--csr", type=Path, help="the party's new request (distributed flow)")
    p.add_argument("--days", type=int, default=DEFAULT_DAYS, help="validity in days")
    p.add_argument(
        "--key-type", choices=["rsa", "ec"], help="without --csr: new key type (default: as before)"
    )
    p.add_argument("--json", action="store_true", help=JSON_HELP)

    p = sub.add_parser(
        "crl",
        help="with the CA: write the revocation list again (before it runs out)",
        description="Write CA_DIR/crl.pem: every revoked certificate not yet expired, signed by "
        "the CA, valid --days — unless the one there already lists exactly those and has more "
        "than --renew-days left (changed: false). Endpoints that check it refuse a list past "
        "its next update, so issue it again in time (the Ansible role does at every converge).",
    )
    p.add_argument("--ca-dir", required=True, type=Path, help="directory with ca.crt and ca.key")
    p.add_argument("--days", type=int, default=CRL_DAYS, help="validity in days")
    p.add_argument(
        "--renew-days", type=int, default=CRL_RENEW_DAYS, help="write a new list this early"
    )
    p.add_argument("--json", action="store_true", help=JSON_HELP)

    p = sub.add_parser(
        "revoke",
        help="with the CA: revoke a certificate (a stolen key), without issuing a new one",
        description="Record CERT as revoked (CA_DIR/revoked.json) and write a new crl.pem. "
        "`rotate` revokes the certificate it replaces by itself.",
    )
    p.add_argument("--ca-dir", required=True, type=Path, help="directory with ca.crt and ca.key")
    p.add_argument("--cert", required=True, type=Path, help="the certificate to revoke")
    p.add_argument("--reason", default="revoked by the CA operator", help="kept in revoked.json")
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    return {
        "crl": run_crl,
        "revoke": run_revoke,
        "csr": run_csr,
        "install": run_install,
        "ca": run_ca,
        "sign": run_sign,
        "bundle": run_bundle,
        "rotate": run_rotate,
    }
