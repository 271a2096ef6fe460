"""The party registry's models (coordinator/topology/model.py): hosts, brokers, clashes."""

from __future__ import annotations

import pytest

from coordinator.topology import TopologyError, load_topology, pick_ports
from tests.coordinator.topology.helpers import BASE, PASSWORDS, edit, expect_error, line_of, write


def test_parties_on_different_hosts_may_use_the_same_ranges(workdir):
    topo = load_topology(write(workdir, BASE))
    assert topo.party("alice").fed_ports == topo.party("bob").fed_ports


def test_party_accessor_names_known_parties(workdir):
    topo = load_topology(write(workdir, BASE))
    with pytest.raises(KeyError, match=r"unknown party 'dave'; known parties: alice, bob"):
        topo.party("dave")


def test_ipv6_hosts_are_bracketed_for_host_port(workdir):
    text = edit(BASE, "fed_host: alice.example", 'fed_host: "::1"')
    topo = load_topology(write(workdir, text))
    assert topo.party("alice").fed_address(21000) == "[::1]:21000"


def test_plain_redis_to_another_host_is_refused_unless_allowed(workdir, env):
    """The password and every signed task would cross the network in clear."""
    text = edit(
        BASE,
        "rediss://coordinator:${ALICE_REDIS_PASSWORD}@alice.example",
        "redis://coordinator:${ALICE_REDIS_PASSWORD}@alice.example",
    )
    with pytest.raises(TopologyError) as err:
        load_topology(write(workdir, text))
    msg = str(err.value)
    assert "parties.alice.broker_url: redis:// (no TLS) to alice.example, another host" in msg
    assert "allow_plaintext_redis: true" in msg
    assert PASSWORDS["ALICE_REDIS_PASSWORD"] not in msg
    local = text.replace("@alice.example:6380", "@127.0.0.1:6380")  # this machine: fine
    assert not load_topology(write(workdir, local)).party("alice").broker_tls


def test_broker_port_clash_on_the_same_host(workdir):
    bob = BASE[BASE.index("  bob:") :]
    moved = (
        bob.replace("bob.example", "alice.example")
        .replace("21000-21049", "21200-21249")
        .replace("21100-21149", "21300-21349")
    )
    text = BASE.replace(bob, moved)
    expect_error(
        workdir,
        text,
        line_of(text, "alice.example:6380", 2),
        "parties.bob.broker_url",
        "Redis port 6380 overlaps party alice's Redis port 6380 on the same host",
    )


def test_localhost_and_127_are_the_same_host(workdir):
    text = BASE.replace("alice.example", "localhost").replace("bob.example", "127.0.0.1")
    text = text.replace("127.0.0.1:6380", "127.0.0.1:6381")
    expect_error(
        workdir,
        text,
        line_of(text, "fed_ports", 2),
        "parties.bob.fed_ports",
        "on the same host (127.0.0.1 / localhost)",
    )


def test_endpoints_for_params(topo):
    eps = topo.endpoints(pick_ports(topo, ["alice", "bob"]))
    assert eps["bob"].fed_host == "bob.example" and eps["bob"].spu_port == 21100


def test_spu_host_taken_from_fed_host_is_not_reported_twice(workdir):
    text = edit(BASE, "    fed_host: bob.example", "    fed_host: 0.0.0.0")
    msg = expect_error(
        workdir, text, line_of(text, "0.0.0.0"), "parties.bob.fed_host", "listen-all"
    )
    assert msg.count("listen-all") == 1, msg


def test_yaml_boolean_party_name_is_explained(workdir):
    text = edit(BASE, "  bob:", "  on:")
    expect_error(workdir, text, line_of(text, "  on:"), "parties.on", "put it in quotes")


def test_password_with_a_slash_is_not_echoed(workdir, monkeypatch):
    monkeypatch.setenv("BOB_REDIS_PASSWORD", "abc/def-xyz")
    with pytest.raises(TopologyError) as info:
        load_topology(write(workdir, BASE))
    assert "percent-encode" in str(info.value)
    assert "abc" not in str(info.value) and "def-xyz" not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__
