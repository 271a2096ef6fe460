"""python -m certs — create and inspect a Partyline federation's certificates.

- `init`, `show`: the all-in-one layout (one directory with the CA and every party's key).
- `csr`, `install` (on a party's host) and `ca`, `sign`, `bundle`, `rotate` (with the CA): the
  distributed flow, where a party's private key never leaves its host (certs.cli).

Bad input exits 2 with one line on stderr naming the file and the problem; `--json` prints
one JSON object on stdout; human output ends with a `changed: true|false` line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from cryptography import x509
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from certs.authority import CA_CERT, DEFAULT_DAYS, cert_info, init_federation
from certs.cli import Handler, add_commands
from certs.common import CertsError, check_party, cn_of
from certs.requests import csr_sans


def _parse_hosts(values: list[str]) -> dict[str, list[str]]:
    hosts: dict[str, list[str]] = {}
    for value in values:
        party, sep, host = value.partition("=")
        if not sep or not party or not host:
            raise SystemExit(f"--host expects PARTY=HOST_OR_IP, got {value!r}")
        hosts.setdefault(party.strip(), []).append(host.strip())
    return hosts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m certs",
        description="Create one federation CA and a key + certificate per party (CN and SAN name "
        "the party; valid as TLS server and client, for gRPC and brpc links), or show them. "
        "For real operators, whose keys never leave their hosts: `csr` and `install` on each "
        "party's host, `ca`, `sign`, `bundle` and `rotate` with the CA. Bad input exits 2 with one "
        "line on stderr; --json prints one JSON object with a `changed` flag.",
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_init = sub.add_parser(
        "init", help="create the CA (if absent) and every party's key + certificate"
    )
    p_init.add_argument("--out", required=True, type=Path, help="directory to write into")
    p_init.add_argument(
        "--parties", required=True, help="comma-separated party names, e.g. alice,bob"
    )
    p_init.add_argument(
        "--host",
        action="append",
        default=[],
        metavar="PARTY=HOST",
        help="extra SAN host name or IP for a party (repeatable); localhost and 127.0.0.1 are always added",
    )
    p_init.add_argument("--days", type=int, default=DEFAULT_DAYS, help="leaf validity in days")
    p_init.add_argument(
        "--key-type", choices=["rsa", "ec"], default="rsa", help="RSA-2048 or EC P-256"
    )
    p_show = sub.add_parser("show", help="list subjects, SANs and days to expiry")
    p_show.add_argument("dir", type=Path)
    handlers = add_commands(sub)
    args = parser.parse_args(argv)
    console = Console(soft_wrap=True, highlight=False)
    if args.cmd in handlers:
        return _run(handlers[args.cmd], args, console)
    try:
        return _init_or_show(parser, args, console)
    except (CertsError, OSError, ValueError) as exc:
        return _fail(exc)


def _fail(exc: BaseException) -> int:
    if isinstance(exc, OSError) and exc.filename:
        message = f"{exc.filename}: {exc.strerror or exc}"
    else:
        message = " ".join(str(exc).split()) or type(exc).__name__
    Console(stderr=True, soft_wrap=True, highlight=False).print(f"[red]error:[/] {escape(message)}")
    return 2


def _run(handler: Handler, args: argparse.Namespace, console: Console) -> int:
    try:
        report = handler(args)
    except (CertsError, OSError) as exc:
        return _fail(exc)
    except Exception as exc:  # a bug: one readable line; CERTS_DEBUG=1 for the traceback
        if os.environ.get("CERTS_DEBUG"):
            raise
        Console(stderr=True, soft_wrap=True, highlight=False).print(
            f"[red]internal error:[/] {escape(type(exc).__name__ + ': ' + str(exc))} "
            "(CERTS_DEBUG=1 shows the traceback)"
        )
        return 1
    if args.json:
        print(json.dumps({"changed": report.changed, **report.data}))
    else:
        for line in report.lines:
            console.print(line)
        console.print(f"changed: {'true' if report.changed else 'false'}", markup=False)
    return 0


def _init_or_show(
    parser: argparse.ArgumentParser, args: argparse.Namespace, console: Console
) -> int:
    if args.cmd == "init":
        parties = [p.strip() for p in args.parties.split(",") if p.strip()]
        if not parties:
            parser.error("--parties is empty")
        for name in parties:
            check_party(name)
        hosts = _parse_hosts(args.host)
        unknown = sorted(set(hosts) - set(parties))
        if unknown:
            parser.error(f"--host names a party not in --parties: {', '.join(unknown)}")
        init_federation(args.out, parties, hosts, days=args.days, key_type=args.key_type)
        console.print(f"[green]wrote[/] CA and {len(parties)} party certificate(s) to {args.out}")
        args.dir = args.out
    directory: Path = args.dir
    if not (directory / CA_CERT).exists():
        console.print(f"[red]no {CA_CERT} in {directory}[/]")
        return 1
    table = Table(title=f"certificates in {directory}")
    for col in ("file", "subject CN", "issuer CN", "SAN", "days left"):
        table.add_column(col)
    for path in sorted(directory.glob("*.crt")):
        info = cert_info(path)
        days = info.days_left
        colour = "red" if days < 14 else "yellow" if days < 60 else "green"
        table.add_row(
            path.name + (" (CA)" if info.is_ca else ""),
            info.subject_cn,
            info.issuer_cn,
            ", ".join(info.sans),
            f"[{colour}]{days}[/]",
        )
    for path in sorted(directory.glob("*.csr")):
        table.add_row(path.name + " (request)", *_csr_row(path), "", "")
    console.print(table)
    return 0


def _csr_row(path: Path) -> tuple[str, str]:
    try:
        csr = x509.load_pem_x509_csr(path.read_bytes())
    except ValueError:
        return "(not a request)", ""
    return cn_of(csr.subject), ", ".join(str(e.value) for e in csr_sans(csr))


if __name__ == "__main__":
    sys.exit(main())
