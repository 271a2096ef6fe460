"""The generated compose config: one topology, the same ports as the demo federation's registry
(examples/topology.yaml), and files the containers can read but nobody else can."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
import yaml

from coordinator.topology import load_topology
from deploy.compose import config
from deploy.local.demo import make_federation
from deploy.local.topology import password_var, write_topology
from node.ops.health import run_checks
from node.settings import NodeSettings

EXAMPLE = config.SOURCE_TOPOLOGY


@pytest.fixture()
def generated(tmp_path):
    return config.generate(tmp_path / "compose", ["alice", "bob"])


def test_make_demo_and_compose_describe_the_same_parties_and_ports(generated, tmp_path):
    fed = make_federation(tmp_path / "demo", ["alice", "bob"], log=lambda m: None)
    demo = yaml.safe_load(write_topology(fed, tmp_path / "demo" / "topology.yaml").read_text())
    compose = yaml.safe_load((generated.dir / "coordinator" / "topology.yaml").read_text())
    assert list(demo["parties"]) == list(compose["parties"]) == ["alice", "bob"]
    for name in ("alice", "bob"):
        d, c = demo["parties"][name], compose["parties"][name]
        assert (d["fed_ports"], d["spu_ports"]) == (c["fed_ports"], c["spu_ports"])
        assert d["broker_url"].rsplit(":", 1)[1] == c["broker_url"].rsplit(":", 1)[1]  # port/db


def test_the_compose_registry_keeps_the_demo_registrys_parties_and_ports(generated):
    raw = yaml.safe_load(EXAMPLE.read_text())
    topo = generated.topology
    assert topo.names == ("alice", "bob")
    for name in topo.names:
        spec, example = topo.party(name), {**raw.get("defaults", {}), **raw["parties"][name]}
        assert str(spec.fed_ports) == example["fed_ports"]
        assert str(spec.spu_ports) == example["spu_ports"]
        assert spec.broker_port == int(example["broker_url"].rsplit(":", 1)[1].split("/")[0])
        assert spec.fed_host == f"{name}.peer" and spec.broker_host == f"{name}-gw"


def test_the_written_registry_loads_with_the_coordinators_secrets(generated):
    secrets = generated.dir / "coordinator" / "secrets"
    env = {
        password_var(p): (secrets / password_var(p)).read_text().strip() for p in ("alice", "bob")
    }
    topo = load_topology(generated.dir / "coordinator" / "topology.yaml", env=env)
    assert topo.names == generated.topology.names
    assert "${" in (generated.dir / "coordinator" / "topology.yaml").read_text()  # no password


def test_each_gateway_relays_its_own_ranges_inward_and_its_peers_outward(generated):
    parties = {p.name: p for p in generated.parties}
    for me in parties.values():
        routes = json.loads((generated.dir / me.name / "gateway.json").read_text())["routes"]
        by_target: dict[str, list[tuple[int, int]]] = {}
        for r in routes:
            by_target.setdefault(r["to"], []).append(tuple(r["ports"]))
        assert sorted(by_target[f"{me.name}-node"]) == sorted(
            [me.fed_ports, me.spu_ports, (me.probe_wan_port,) * 2]
        )
        assert by_target[f"{me.name}-redis"] == [(me.broker_port,) * 2]
        for peer in parties.values():
            if peer is not me:
                assert sorted(by_target[peer.gateway]) == sorted(
                    [peer.fed_ports, peer.spu_ports, (peer.probe_wan_port,) * 2]
                )
        env = dict(
            line.split("=", 1)
            for line in (generated.dir / me.name / "node.env").read_text().split()
        )
        peers = [p for p in parties.values() if p is not me]
        assert env["NODE_PEER_PROBES"] == ",".join(
            f"{p.name}={p.link_host}:{p.probe_wan_port}" for p in peers
        )


def test_the_compose_file_describes_exactly_these_parties_and_networks(generated):
    doc = yaml.safe_load(config.COMPOSE_FILE.read_text())
    services, networks = doc["services"], doc["networks"]
    names = [p.name for p in generated.parties]
    for p in names:
        assert {f"{p}-redis", f"{p}-node", f"{p}-gw"} <= set(services)
        assert networks[p] == {"internal": True}
        assert services[f"{p}-node"]["networks"] == [p]  # Ray and workers: never on wan
        assert services[f"{p}-redis"]["networks"] == [p]
        gw = services[f"{p}-gw"]["networks"]
        assert set(gw) == {p, "wan"}
        assert sorted(gw[p]["aliases"]) == sorted(f"{q}.peer" for q in names)
    assert networks["wan"] == {"internal": True}
    assert not [s for s in services if s.startswith("carol")]  # carol is the documented option


def _node_env(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if line)


def _node_mounts(names: list[str]) -> dict[str, dict[str, str]]:
    """party → {container folder: host folder as written} of its node service."""
    services: dict = {}
    for f in config.compose_files(names):
        for name, svc in yaml.safe_load(f.read_text())["services"].items():
            services.setdefault(name, {}).update(svc)
    mounts = {}
    for p in names:
        pairs = (v.rsplit(":", 2)[:2] for v in services[f"{p}-node"]["volumes"])
        mounts[p] = {target: source for source, target in pairs}
    return mounts


def test_every_node_container_checks_the_cas_revocation_list(tmp_path):
    names = ["alice", "bob", "carol"]
    gen = config.generate(tmp_path / "compose", names)
    ca_crl = (gen.dir / "ca" / "crl.pem").read_bytes()
    mounts = _node_mounts(names)
    for p in names:
        env = _node_env(gen.dir / p / "node.env")
        crl = Path(env["NODE_CRL_FILE"])
        assert crl == config.CERTS / "crl.pem"
        # the folder is mounted from the party's certs/, which holds the CA's current list
        assert mounts[p][str(crl.parent)].endswith(f"}}/{p}/certs")
        on_host = gen.dir / p / "certs" / "crl.pem"
        assert on_host.read_bytes() == ca_crl
        assert stat.S_IMODE(on_host.stat().st_mode) == 0o644  # readable by the image's user
        # the node's settings as written, container paths mapped to the host's: health accepts
        host_env = {
            k.removeprefix("NODE_").lower(): v.replace(str(config.CERTS), str(on_host.parent))
            for k, v in env.items()
        }
        settings = NodeSettings(
            **host_env, broker_url="redis://node:x@127.0.0.1:1/0", data_root=str(tmp_path)
        )
        checks = run_checks(settings, check_worker=False, check_links=False).checks
        [check] = [c for c in checks if c.name == "revocation list"]
        assert check.ok and not check.warn and check.detail.startswith("0 revoked"), check


def test_secrets_and_keys_are_private(generated):
    for f in generated.files:
        mode = stat.S_IMODE(f.stat().st_mode)
        if f.suffix == ".key" or "secrets" in f.parts or f.name == "redis.conf":
            assert mode == 0o600, f
    assert stat.S_IMODE(generated.dir.stat().st_mode) == 0o700


def test_a_second_init_keeps_the_passwords_of_a_running_federation(tmp_path):
    a = config.generate(tmp_path / "c", ["alice", "bob"])
    before = (a.dir / "alice" / "secrets" / "node_broker_url").read_text()
    b = config.generate(tmp_path / "c", ["alice", "bob"])
    assert (b.dir / "alice" / "secrets" / "node_broker_url").read_text() == before
    assert a.api_token == b.api_token


def test_an_unknown_party_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match="optionally carol; got alice, dave"):
        config.generate(tmp_path / "c", ["alice", "dave"])
    assert not (tmp_path / "c").exists()
