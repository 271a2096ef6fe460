"""python -m deploy.ansible — write an Ansible inventory for a topology file's federation."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from deploy.ansible.inventory import DEFAULT_PROBE_PORT, Host, write
from deploy.local.topology import EXAMPLE_REGISTRY

console = Console(stderr=True)


def _pairs(values: list[str]) -> list[Host]:
    out = []
    for value in values:
        name, sep, address = value.partition("=")
        if not sep or not name or not address:
            raise SystemExit(f"--host expects PARTY=ADDRESS, got {value!r}")
        out.append(Host(name.strip(), address.strip()))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.ansible",
        description="Ansible deployment helpers (docs/operations.md).",
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    inv = sub.add_parser(
        "inventory",
        help="write hosts.yml and group_vars/all.yml for a federation",
        description="Write an inventory (hosts.yml, group_vars/all.yml) whose party registry "
        "takes each party's Redis port, fed/SPU ranges, slots and description from the topology "
        "file, and its address from --host. Parties not given --host are left out.",
    )
    inv.add_argument("--topology", type=Path, default=EXAMPLE_REGISTRY, help="the topology file")
    inv.add_argument(
        "--host",
        action="append",
        default=[],
        metavar="PARTY=IP",
        required=True,
        help="a party and the IP the others reach it at (repeatable)",
    )
    inv.add_argument(
        "--coordinator",
        required=True,
        metavar="IP",
        help="the coordinator host's IP (the only source allowed to the Redis ports)",
    )
    inv.add_argument("--federation", help="the federation's name (default: the topology's)")
    inv.add_argument("--probe-port", type=int, default=DEFAULT_PROBE_PORT)
    inv.add_argument("--out", type=Path, required=True, help="directory to write into")
    args = parser.parse_args(argv)
    try:
        hosts_file = write(
            args.out,
            args.topology,
            _pairs(args.host),
            Host("coordinator", args.coordinator),
            federation=args.federation,
            probe_port=args.probe_port,
        )
    except (ValueError, OSError, KeyError) as exc:
        console.print(f"[red]inventory:[/] {exc}")
        return 2
    console.print(f"[green]wrote[/] {hosts_file} and {args.out / 'group_vars' / 'all.yml'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
