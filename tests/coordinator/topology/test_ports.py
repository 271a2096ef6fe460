"""Per-job ports (coordinator/topology/ports.py): pick_ports and PortPool."""

from __future__ import annotations

import pytest

from coordinator.topology import JobPorts, PortPool, PortsExhausted, pick_ports


def test_pick_lowest_free(topo):
    assert pick_ports(topo, ["alice", "bob"]) == {
        "alice": JobPorts(21000, 21100),
        "bob": JobPorts(21000, 21100),
    }


def test_pick_skips_used_ports(topo):
    got = pick_ports(topo, ["alice", "bob"], {"alice": {21000, 21001, 21100}, "bob": {21001}})
    assert got == {"alice": JobPorts(21002, 21101), "bob": JobPorts(21000, 21100)}


def test_pick_exhausted_names_party_and_range(topo):
    with pytest.raises(PortsExhausted) as info:
        pick_ports(topo, ["alice", "bob"], {"bob": {21000, 21001, 21002}})
    assert "party bob" in str(info.value) and "fed_ports 21000-21002" in str(info.value)
    assert info.value.party == "bob" and info.value.kind == "fed"
    with pytest.raises(PortsExhausted, match=r"no free spu port for party alice: .*21100-21101"):
        pick_ports(topo, ["alice"], {"alice": {21100, 21101}})


def test_pick_unknown_or_repeated_party(topo):
    with pytest.raises(KeyError, match="unknown party 'dave'"):
        pick_ports(topo, ["alice", "dave"])
    with pytest.raises(ValueError, match="listed twice"):
        pick_ports(topo, ["alice", "alice"])


def test_port_pool_acquire_release_cooldown(topo):
    now = [0.0]
    pool = PortPool(topo, cooldown_s=10.0, clock=lambda: now[0])
    a = pool.acquire("exe-1", ["alice", "bob"])
    b = pool.acquire("exe-2", ["alice"])
    assert a["alice"] == JobPorts(21000, 21100) and b["alice"] == JobPorts(21001, 21101)
    with pytest.raises(PortsExhausted, match="no free spu port for party alice"):
        pool.acquire("exe-3", ["alice"])
    pool.release("exe-1")
    pool.release("exe-1")  # idempotent
    with pytest.raises(PortsExhausted):  # still cooling down
        pool.acquire("exe-3", ["alice"])
    now[0] = 11.0
    assert pool.acquire("exe-3", ["alice"]) == {"alice": JobPorts(21000, 21100)}
    with pytest.raises(ValueError, match="already held"):
        pool.acquire("exe-3", ["bob"])


def test_port_pool_hold_restores_state(topo):
    pool = PortPool(topo)
    pool.hold("exe-old", {"alice": JobPorts(21000, 21100)})
    assert pool.acquire("exe-new", ["alice"]) == {"alice": JobPorts(21001, 21101)}
    with pytest.raises(ValueError, match="outside"):
        pool.hold("exe-bad", {"alice": JobPorts(30000, 21100)})


def test_rotating_pool_hands_a_port_out_again_only_after_the_whole_range(topo):
    pool = PortPool(topo, rotate=True)
    seen = []
    n = len(topo.party("alice").fed_ports)
    for i in range(n + 1):
        seen.append(pool.acquire(f"exe-{i}", ["alice"])["alice"].fed)
        pool.release(f"exe-{i}")
    assert len(set(seen[:n])) == n  # every port once before any comes back
    assert seen[n] == seen[0]
