"""The local federation ⇄ the party registry (topology YAML) the coordinator reads.

`write_topology` describes a LocalFederation's parties in the coordinator's format (passwords as
${VAR} references, never in the file); `apply_topology` makes a LocalFederation use the ports a
topology file declares, so the launcher and the coordinator read the same file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import yaml

from coordinator.topology import Topology, load_topology


def password_var(party: str) -> str:
    return f"PARTYLINE_{party.upper().replace('-', '_')}_REDIS_PASSWORD"


def _range(r: range) -> str:
    return f"{r.start}-{r.stop - 1}"


def topology_dict(fed, *, federation: str = "local", user: str = "coordinator") -> dict:
    parties = {}
    for name, node in fed.nodes.items():
        scheme = "rediss" if node.redis_tls else "redis"
        entry = {
            "broker_url": f"{scheme}://{user}:${{{password_var(name)}}}@127.0.0.1:{node.ports['redis']}/0",
            "fed_host": "127.0.0.1",
            "fed_ports": _range(node.fed_ports),
            "spu_ports": _range(node.spu_ports),
            "slots": 1,
            "description": f"{name} (local node, data root {node.data_root})",
        }
        if node.redis_tls:
            entry["redis_ca_file"] = str(fed.certs_dir / "ca.crt")
        parties[name] = entry
    return {"version": 1, "federation": federation, "parties": parties}


def write_topology(fed, path: Path, **kw) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = (
        "# Party registry of a local federation, written by deploy/local (docs/topology.md).\n"
        "# Passwords are ${VAR} references: see secrets.env next to this file.\n"
    )
    path.write_text(header + yaml.safe_dump(topology_dict(fed, **kw), sort_keys=False))
    return path


EXAMPLE_REGISTRY = Path(__file__).resolve().parents[2] / "examples" / "topology.yaml"


def registry_ports(path: Path = EXAMPLE_REGISTRY) -> dict:
    """{party: FixedPorts} as a registry declares them (read as YAML: no secrets needed).

    `make demo` runs its parties on these, and the compose simulation keeps the same numbers
    (deploy/compose/config.py), so both describe the federation of examples/topology.yaml."""
    from deploy.local.federation import FixedPorts

    raw = yaml.safe_load(Path(path).read_text())
    out = {}
    for name, entry in raw["parties"].items():
        entry = {**raw.get("defaults", {}), **entry}
        port = int(str(entry["broker_url"]).rsplit(":", 1)[1].split("/")[0])
        fed = [int(x) for x in str(entry["fed_ports"]).split("-")]
        spu = [int(x) for x in str(entry["spu_ports"]).split("-")]
        out[name] = FixedPorts(port, range(fed[0], fed[1] + 1), range(spu[0], spu[1] + 1))
    return out


def coordinator_passwords(fed) -> dict[str, str]:
    """The environment a coordinator needs to expand the topology's ${VAR}s."""
    return {password_var(n): node.coordinator_password for n, node in fed.nodes.items()}


def apply_topology(fed, path: Path, env: Mapping[str, str] | None = None) -> Topology:
    """Load (and validate) the registry and take its Redis ports and fed/SPU ranges."""
    env = dict(os.environ if env is None else env)
    for name, node in fed.nodes.items():
        if password_var(name) in env:  # a given registry: its passwords come from the env
            node.coordinator_password = env[password_var(name)]
    env.update({k: v for k, v in coordinator_passwords(fed).items() if k not in env})
    topo = load_topology(path, env=env)
    missing = [p for p in fed.nodes if p not in topo.names]
    if missing:
        raise ValueError(f"{path}: no entry for party {', '.join(missing)}")
    for name, node in fed.nodes.items():
        spec = topo.party(name)
        node.ports["redis"] = spec.broker_port
        node.fed_ports = range(spec.fed_ports.start, spec.fed_ports.end + 1)
        node.spu_ports = range(spec.spu_ports.start, spec.spu_ports.end + 1)
    return topo
