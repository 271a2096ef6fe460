"""Everything the compose file mounts, generated from one topology (`python -m deploy.compose init`).

The ports come from examples/topology.yaml, the demo federation's registry: the compose
simulation keeps every party's Redis port and fed/SPU ranges and only changes the hosts to the
compose names (`alice.peer` for the links, `alice-gw` for the coordinator's Redis). Per party:
`certs/` (CA certificate, the CA's revocation list `crl.pem` — NODE_CRL_FILE —, the party's key
and certificate, the coordinator's certificate),
`secrets/node_broker_url`, `redis/redis.conf` (deploy/redis template, as `make demo`),
`gateway.json` (what the gateway relays) and `node.env`. For the coordinator: the topology,
its key, the parties' certificates and its secrets; for PostgreSQL its password. Private keys
and secrets are mode 0600 and owned by the images' user (uid 10001) when run as root.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

import yaml

from certs.authority import init_federation, party_cert_name, party_key_name
from certs.revocation import CRL_FILE, ensure_crl
from coordinator.topology import Topology, parse_topology
from deploy.local.topology import password_var, registry_ports
from deploy.redis import RedisTls, render_redis_conf

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
SOURCE_TOPOLOGY = REPO_ROOT / "examples" / "topology.yaml"
COMPOSE_FILE = HERE / "docker-compose.yml"
EXTRA_FILES = {"carol": HERE / "docker-compose.carol.yml"}  # parties beyond alice and bob
BASE_PARTIES = ("alice", "bob")
IMAGE_UID = 10001
REDIS_PORT = 6379  # inside each party's network; the gateway maps the registry's port to it
PROBE_PORT = 7400  # the node's probe inside its network
PROBE_WAN_BASE = 7400  # on wan: 7401, 7402, … in registry order
CERTS = Path("/etc/partyline/certs")


@dataclass(frozen=True)
class ComposeParty:
    name: str
    broker_port: int
    fed_ports: tuple[int, int]
    spu_ports: tuple[int, int]
    probe_wan_port: int

    @property
    def link_host(self) -> str:
        return f"{self.name}.peer"

    @property
    def gateway(self) -> str:
        return f"{self.name}-gw"


def compose_files(parties: list[str]) -> list[Path]:
    unknown = [p for p in parties if p not in BASE_PARTIES and p not in EXTRA_FILES]
    if unknown or not set(BASE_PARTIES) <= set(parties):
        raise ValueError(
            f"the compose simulation runs {', '.join(BASE_PARTIES)} and optionally "
            f"{', '.join(EXTRA_FILES)}; got {', '.join(parties)} (docs/compose.md: adding a party)"
        )
    return [COMPOSE_FILE, *(EXTRA_FILES[p] for p in parties if p in EXTRA_FILES)]


def compose_parties(parties: list[str], source: Path = SOURCE_TOPOLOGY) -> list[ComposeParty]:
    """The parties' ports as the demo registry declares them (the same reader as `make demo`)."""
    declared = registry_ports(source)
    defined = list(declared)
    missing = [p for p in parties if p not in declared]
    if missing:
        raise ValueError(f"{source}: no party {', '.join(missing)} (it has {', '.join(defined)})")
    out = []
    for name in parties:
        f = declared[name]
        out.append(
            ComposeParty(
                name,
                f.redis,
                (f.fed.start, f.fed.stop - 1),
                (f.spu.start, f.spu.stop - 1),
                PROBE_WAN_BASE + 1 + defined.index(name),
            )
        )
    _check_ports_distinct(out)
    return out


def _check_ports_distinct(parties: list[ComposeParty]) -> None:
    """Every gateway listens on every party's link ports: they must not overlap."""
    owner: dict[int, str] = {}
    for p in parties:
        spans = {
            "fed_ports": p.fed_ports,
            "spu_ports": p.spu_ports,
            "probe": (p.probe_wan_port,) * 2,
            "redis": (p.broker_port,) * 2,
        }
        for what, (a, b) in spans.items():
            for port in range(a, b + 1):
                if port in owner:
                    raise ValueError(f"port {port} of {p.name}'s {what} is also {owner[port]}'s")
                owner[port] = f"{p.name} {what}"


def topology_dict(parties: list[ComposeParty]) -> dict:
    return {
        "version": 1,
        "federation": "compose",
        "defaults": {"redis_ca_file": "certs/ca.crt", "slots": 1},
        "parties": {
            p.name: {
                "broker_url": f"rediss://coordinator:${{{password_var(p.name)}}}@{p.gateway}:{p.broker_port}/0",
                "fed_host": p.link_host,
                "fed_ports": f"{p.fed_ports[0]}-{p.fed_ports[1]}",
                "spu_ports": f"{p.spu_ports[0]}-{p.spu_ports[1]}",
                "description": f"{p.name} (compose simulation)",
            }
            for p in parties
        },
    }


def gateway_routes(me: ComposeParty, parties: list[ComposeParty]) -> dict:
    node, redis = f"{me.name}-node", f"{me.name}-redis"
    routes = [
        {"name": f"{me.name} fed (from peers)", "ports": list(me.fed_ports), "to": node},
        {"name": f"{me.name} spu (from peers)", "ports": list(me.spu_ports), "to": node},
        {
            "name": f"{me.name} probe (from peers)",
            "ports": [me.probe_wan_port] * 2,
            "to": node,
            "to_port": PROBE_PORT,
        },
        {
            "name": f"{me.name} redis (from the coordinator)",
            "ports": [me.broker_port] * 2,
            "to": redis,
            "to_port": REDIS_PORT,
        },
    ]
    for peer in parties:
        if peer.name == me.name:
            continue
        routes += [
            {
                "name": f"{peer.name} fed (to {peer.name})",
                "ports": list(peer.fed_ports),
                "to": peer.gateway,
                "listen": me.link_host,
            },
            {
                "name": f"{peer.name} spu (to {peer.name})",
                "ports": list(peer.spu_ports),
                "to": peer.gateway,
                "listen": me.link_host,
            },
            {
                "name": f"{peer.name} probe (to {peer.name})",
                "ports": [peer.probe_wan_port] * 2,
                "to": peer.gateway,
                # only inside this party's network (`wan` members cannot relay through it)
                "listen": me.link_host,
            },
        ]
    return {"party": me.name, "ready_file": "/tmp/gateway.ready", "routes": routes}


def node_env(me: ComposeParty, parties: list[ComposeParty]) -> dict[str, str]:
    peers = [p for p in parties if p.name != me.name]
    return {
        "NODE_PARTY": me.name,
        "NODE_REDIS_CA_FILE": str(CERTS / "ca.crt"),
        "NODE_CERT_FILE": str(CERTS / party_cert_name(me.name)),
        "NODE_KEY_FILE": str(CERTS / party_key_name(me.name)),
        "NODE_CA_FILE": str(CERTS / "ca.crt"),
        "NODE_CRL_FILE": str(CERTS / CRL_FILE),
        "NODE_TRUSTED_SIGNERS": str(CERTS / "coordinator.crt"),
        "NODE_ALLOWED_PEERS": ",".join(p.name for p in peers),
        "NODE_FED_LISTEN_HOST": "0.0.0.0",
        "NODE_SPU_LISTEN_HOST": "0.0.0.0",
        "NODE_PROBE_PORT": str(PROBE_PORT),
        "NODE_PEER_PROBES": ",".join(f"{p.name}={p.link_host}:{p.probe_wan_port}" for p in peers),
        "NODE_METRICS_PORT": "9464",
        "NODE_METRICS_LISTEN_HOST": "0.0.0.0",
        "NODE_WORKER_NAME": f"{me.name}-compose",
        "NODE_RAY_TEMP_DIR": "/tmp/ray",
    }


@dataclass
class Generated:
    dir: Path
    parties: list[ComposeParty]
    topology: Topology
    api_token: str
    env_file: Path
    files: list[Path]


def _secret(path: Path, length: int = 24) -> str:
    """The secret stored at `path`, made once: a re-init keeps a running federation's passwords."""
    if path.exists():
        return path.read_text().strip()
    value = secrets.token_urlsafe(length)
    _write(path, value + "\n", secret=True)
    return value


def _write(path: Path, text: str, *, secret: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o600 if secret else 0o644)


def generate(
    out: Path,
    party_names: list[str],
    *,
    ui_port: int = 8000,
    image_tag: str = "dev",
    source: Path = SOURCE_TOPOLOGY,
    project: str = "partyline",
) -> Generated:
    compose_files(party_names)  # refuses a party the compose files do not describe
    parties = compose_parties(party_names, source)
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    out.chmod(0o700)  # secrets below are readable by the images' user only through their mounts
    ca_dir = out / "ca"
    hosts = {p.name: [p.link_host, p.gateway, f"{p.name}-redis", f"{p.name}-node"] for p in parties}
    authority = init_federation(ca_dir, [p.name for p in parties] + ["coordinator"], hosts)
    ensure_crl(ca_dir, authority)  # every node checks it (NODE_CRL_FILE), as on real hosts
    token = _secret(out / "coordinator" / "secrets" / "coord_api_token", 24)
    db_password = _secret(out / "postgres" / "secrets" / "postgres_password", 24)
    _write(
        out / "coordinator" / "secrets" / "coord_database_url",
        f"postgresql+psycopg://partyline:{db_password}@postgres:5432/partyline\n",
        secret=True,
    )
    for p in parties:
        pdir = out / p.name
        node_pw = _secret(pdir / "secrets" / ".node_redis_password", 18)
        coord_pw = _secret(out / "coordinator" / "secrets" / password_var(p.name), 18)
        for f in (
            "ca.crt", CRL_FILE, "coordinator.crt", party_cert_name(p.name), party_key_name(p.name)
        ):  # fmt: skip
            (pdir / "certs").mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ca_dir / f, pdir / "certs" / f)
            (pdir / "certs" / f).chmod(0o600 if f.endswith(".key") else 0o644)
        _write(
            pdir / "secrets" / "node_broker_url",
            f"rediss://node:{node_pw}@{p.name}-redis:{REDIS_PORT}/0\n",
            secret=True,
        )
        tls = RedisTls(
            CERTS / party_cert_name(p.name), CERTS / party_key_name(p.name), CERTS / "ca.crt"
        )
        conf = render_redis_conf(
            port=REDIS_PORT,
            data_dir="/var/lib/partyline/redis",
            node_password=node_pw,
            coordinator_password=coord_pw,
            tls=tls,
            bind="0.0.0.0",
        )
        _write(pdir / "redis" / "redis.conf", conf, secret=True)
        _write(pdir / "gateway.json", json.dumps(gateway_routes(p, parties), indent=1) + "\n")
        _write(pdir / "node.env", "".join(f"{k}={v}\n" for k, v in node_env(p, parties).items()))
    cdir = out / "coordinator"
    (cdir / "certs" / "parties").mkdir(parents=True, exist_ok=True)
    for f in ("ca.crt", "coordinator.crt", "coordinator.key"):
        shutil.copyfile(ca_dir / f, cdir / "certs" / f)
        (cdir / "certs" / f).chmod(0o600 if f.endswith(".key") else 0o644)
    for p in parties:
        shutil.copyfile(
            ca_dir / party_cert_name(p.name), cdir / "certs" / "parties" / party_cert_name(p.name)
        )
    text = "# written by python -m deploy.compose init from examples/topology.yaml\n"
    text += yaml.safe_dump(topology_dict(parties), sort_keys=False)
    _write(cdir / "topology.yaml", text)
    env = {p: (cdir / "secrets" / password_var(p.name)).read_text().strip() for p in parties}
    topology = parse_topology(
        text,
        source=str(cdir / "topology.yaml"),
        base_dir=cdir,
        env={password_var(p.name): v for p, v in env.items()},
    )
    env_file = out / ".env"
    _write(
        env_file,
        "".join(
            f"{k}={v}\n"
            for k, v in {
                "COMPOSE_PROJECT_NAME": project,
                "PARTYLINE_COMPOSE_DIR": str(out),
                "PARTYLINE_IMAGE_TAG": image_tag,
                "PARTYLINE_UI_PORT": str(ui_port),
                "PARTYLINE_PARTIES": ",".join(p.name for p in parties),
            }.items()
        ),
    )
    if os.geteuid() == 0:  # the images run as uid 10001: it must own what it reads
        for sub in [*(p.name for p in parties), "coordinator", "postgres"]:
            for path in [out / sub, *(out / sub).rglob("*")]:
                os.chown(path, IMAGE_UID, IMAGE_UID)
    files = sorted(f for f in out.rglob("*") if f.is_file())
    return Generated(out, parties, topology, token, env_file, files)
