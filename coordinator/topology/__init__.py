"""The party registry (docs/architecture.md §3): one YAML file names every party of a federation.

The coordinator, the local launcher, the compose file and the Ansible inventory all describe the
same topology. The schema is documented in docs/topology.md.

- `model`: the pydantic models (`Topology`, `PartySpec`, `PartyDefaults`) and `JobPorts`;
- `fields`: field types and checks (`PortRange`, ``${VAR}`` interpolation, hosts, broker URLs);
- `loading`: `load_topology` / `parse_topology`, errors naming file:line: field;
- `ports`: `pick_ports` / `PortPool`, per-job fed and SPU ports.

Pure and light: pydantic and PyYAML only; nothing here opens a connection.
"""

from coordinator.topology.fields import PLACEHOLDER_PASSWORDS, PortRange
from coordinator.topology.loading import (
    TopologyError,
    TopologyIssue,
    load_topology,
    parse_topology,
)
from coordinator.topology.model import JobPorts, PartyDefaults, PartySpec, Topology
from coordinator.topology.ports import PortPool, PortsExhausted, pick_ports

__all__ = [
    "PLACEHOLDER_PASSWORDS",
    "JobPorts",
    "PartyDefaults",
    "PartySpec",
    "PortPool",
    "PortRange",
    "PortsExhausted",
    "Topology",
    "TopologyError",
    "TopologyIssue",
    "load_topology",
    "parse_topology",
    "pick_ports",
]
