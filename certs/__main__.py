"""python -m certs — create and inspect a Partyline federation's certificates."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from certs.authority import CA_CERT, DEFAULT_DAYS, cert_info, init_federation


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
        "the party; valid as TLS server and client, for gRPC and brpc links), or show them.",
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
    args = parser.parse_args(argv)
    console = Console()

    if args.cmd == "init":
        parties = [p.strip() for p in args.parties.split(",") if p.strip()]
        if not parties:
            parser.error("--parties is empty")
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
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
