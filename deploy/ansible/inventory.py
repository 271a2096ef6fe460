"""An Ansible inventory for the federation of a topology file (the one `make demo` and compose
read): the hosts, and group_vars/all.yml with the party registry the roles use.

The topology gives each party's Redis port, fed/SPU port ranges, slots and description; the
operator gives the address each host is reached at. Passwords never appear: the roles make them
on first use (controller secrets directory) or on the host itself.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

import yaml

from deploy.local.topology import EXAMPLE_REGISTRY

DEFAULT_PROBE_PORT = 7400
COORDINATOR_GROUP = "partyline_coordinator"
PARTIES_GROUP = "partyline_parties"
HEADER = (
    "# Written by `python -m deploy.ansible inventory` from {topology}.\n"
    "# Ports, slots and descriptions come from that file; addresses from --host/--coordinator.\n"
)


class _Dumper(yaml.SafeDumper):
    """Lists indented under their key, as yamllint's default rules want."""

    def increase_indent(self, flow: bool = False, indentless: bool = False):
        return super().increase_indent(flow, False)


def _dump(data: dict) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False)


@dataclass(frozen=True)
class Host:
    name: str
    address: str  # what the others (and Ansible) reach it at


def registry(
    topology: Path,
    parties: list[str] | None,
    addresses: dict[str, str],
    probe_port: int = DEFAULT_PROBE_PORT,
) -> dict[str, dict]:
    """{party: registry entry} for the roles, from a topology file (read as YAML: no secrets)."""
    raw = yaml.safe_load(Path(topology).read_text())
    entries = raw.get("parties") or {}
    wanted = parties or list(entries)
    unknown = [p for p in wanted if p not in entries]
    if unknown:
        raise ValueError(f"{topology}: no party {', '.join(unknown)}")
    missing = [p for p in wanted if p not in addresses]
    if missing:
        raise ValueError(f"no address for party {', '.join(missing)}: pass --host PARTY=ADDRESS")
    out: dict[str, dict] = {}
    for name in wanted:
        entry = {**(raw.get("defaults") or {}), **entries[name]}
        port = int(str(entry["broker_url"]).rsplit(":", 1)[1].split("/")[0])
        item = {
            "address": addresses[name],
            "redis_port": port,
            "fed_ports": str(entry["fed_ports"]),
            "spu_ports": str(entry["spu_ports"]),
            "probe_port": probe_port,
            "slots": int(entry.get("slots", 1)),
        }
        if entry.get("description"):
            item["description"] = str(entry["description"])
        out[name] = item
    return out


def _check_address(what: str, address: str) -> None:
    try:
        ipaddress.ip_address(address)
    except ValueError as exc:
        raise ValueError(
            f"{what}: {address!r} is not an IP address (the firewall rules need one)"
        ) from exc


def group_vars(
    topology: Path,
    parties: list[Host],
    coordinator: Host,
    *,
    federation: str | None = None,
    probe_port: int = DEFAULT_PROBE_PORT,
) -> dict:
    for h in [*parties, coordinator]:
        _check_address(h.name, h.address)
    raw = yaml.safe_load(Path(topology).read_text())
    reg = registry(
        topology, [p.name for p in parties], {p.name: p.address for p in parties}, probe_port
    )
    return {
        "partyline_federation_name": federation or str(raw.get("federation", "partyline")),
        "partyline_coordinator_addresses": [coordinator.address],
        "partyline_parties": reg,
    }


def hosts(parties: list[Host], coordinator: Host, host_vars: dict[str, dict] | None = None) -> dict:
    def entry(h: Host) -> dict:
        return {"ansible_host": h.address, **(host_vars or {}).get(h.name, {})}

    return {
        "all": {
            "children": {
                COORDINATOR_GROUP: {"hosts": {coordinator.name: entry(coordinator)}},
                PARTIES_GROUP: {"hosts": {p.name: entry(p) for p in parties}},
            }
        }
    }


def write(
    out: Path,
    topology: Path,
    parties: list[Host],
    coordinator: Host,
    *,
    federation: str | None = None,
    probe_port: int = DEFAULT_PROBE_PORT,
    host_vars: dict[str, dict] | None = None,
    extra_vars: dict | None = None,
) -> Path:
    """hosts.yml and group_vars/all.yml in `out`; returns the hosts file."""
    out = Path(out)
    (out / "group_vars").mkdir(parents=True, exist_ok=True)
    header = HEADER.format(topology=_shown(topology))
    gv = group_vars(topology, parties, coordinator, federation=federation, probe_port=probe_port)
    gv.update(extra_vars or {})
    (out / "group_vars" / "all.yml").write_text("---\n" + header + _dump(gv))
    hosts_file = out / "hosts.yml"
    hosts_file.write_text("---\n" + header + _dump(hosts(parties, coordinator, host_vars)))
    return hosts_file


def _shown(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(EXAMPLE_REGISTRY.parents[1]))
    except ValueError:
        return str(path)
