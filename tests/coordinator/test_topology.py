"""The party registry (coordinator/topology.py): loading, errors with file:line: field, ports."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from coordinator.topology import (
    JobPorts,
    PortPool,
    PortRange,
    PortsExhausted,
    TopologyError,
    load_topology,
    parse_topology,
    pick_ports,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = REPO_ROOT / "examples" / "topology.yaml"

PASSWORDS = {
    "ALICE_REDIS_PASSWORD": "s3cret-alice-Zq81",
    "BOB_REDIS_PASSWORD": "s3cret-bob-Kp27",
    "CAROL_REDIS_PASSWORD": "s3cret-carol-Wm55",
}

BASE = """\
federation: test
defaults:
  redis_ca_file: certs/ca.crt
parties:
  alice:
    broker_url: rediss://coordinator:${ALICE_REDIS_PASSWORD}@alice.example:6380/0
    fed_host: alice.example
    fed_ports: 21000-21049
    spu_ports: 21100-21149
  bob:
    broker_url: rediss://coordinator:${BOB_REDIS_PASSWORD}@bob.example:6380/0
    fed_host: bob.example
    fed_ports: 21000-21049
    spu_ports: 21100-21149
"""


@pytest.fixture()
def env(monkeypatch):
    for name, value in PASSWORDS.items():
        monkeypatch.setenv(name, value)


@pytest.fixture()
def workdir(tmp_path, env) -> Path:
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    return tmp_path


def write(workdir: Path, text: str) -> Path:
    path = workdir / "topology.yaml"
    path.write_text(text)
    return path


def line_of(text: str, needle: str, nth: int = 1) -> int:
    hits = [i for i, line in enumerate(text.splitlines(), 1) if needle in line]
    assert len(hits) >= nth, f"{needle!r} not in the test YAML"
    return hits[nth - 1]


def edit(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


def expect_error(workdir: Path, text: str, line: int, path: str, fragment: str) -> str:
    with pytest.raises(TopologyError) as info:
        load_topology(write(workdir, text))
    msg = str(info.value)
    assert f"topology.yaml:{line}: {path}: " in msg, msg
    assert fragment in msg, msg
    for secret in PASSWORDS.values():
        assert secret not in msg
    return msg


# --- the example and a good file -----------------------------------------------------------
def test_example_loads(tmp_path, env):
    shutil.copy(EXAMPLE, tmp_path / "topology.yaml")
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "ca.crt").write_text("ca")
    topo = load_topology(tmp_path / "topology.yaml")

    assert topo.federation == "demo"
    assert topo.names == ("alice", "bob", "carol")
    assert topo.slots == {"alice": 1, "bob": 2, "carol": 1}
    assert topo.source == tmp_path / "topology.yaml"
    alice = topo.party("alice")
    assert alice.spu_host == alice.fed_host == "127.0.0.1"  # spu_host defaults to fed_host
    assert alice.redis_ca_file == tmp_path / "certs" / "ca.crt"  # relative to the file
    assert alice.fed_ports == PortRange(21000, 21049) and len(alice.fed_ports) == 50
    assert alice.broker_tls and alice.broker_host == "127.0.0.1" and alice.broker_port == 6380
    assert PASSWORDS["ALICE_REDIS_PASSWORD"] in alice.broker_url.get_secret_value()
    assert alice.broker_url_redacted == "rediss://coordinator:***@127.0.0.1:6380/0"
    assert alice.description == "Retail bank, customers table"
    # secrets stay out of reprs and dumps
    for secret in PASSWORDS.values():
        assert secret not in repr(topo)
        assert secret not in str(topo.model_dump(mode="json"))


def test_env_mapping_overrides_os_environ(workdir, monkeypatch):
    monkeypatch.delenv("ALICE_REDIS_PASSWORD")
    topo = load_topology(
        write(workdir, BASE), env={"ALICE_REDIS_PASSWORD": "pw-1-xyz", "BOB_REDIS_PASSWORD": "p2"}
    )
    assert "pw-1-xyz@" in topo.party("alice").broker_url.get_secret_value()


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


def test_literal_dollar_brace_and_plain_redis(workdir):
    text = edit(
        BASE,
        "rediss://coordinator:${ALICE_REDIS_PASSWORD}@alice.example:6380/0",
        "redis://coordinator:a$${b}c@alice.example:6380/0\n    allow_plaintext_redis: true",
    )
    topo = load_topology(write(workdir, text))
    alice = topo.party("alice")
    assert alice.broker_url.get_secret_value().startswith("redis://coordinator:a${b}c@")
    assert not alice.broker_tls


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


def test_parse_topology_from_text(workdir):
    topo = parse_topology(BASE, base_dir=workdir)
    assert topo.names == ("alice", "bob") and topo.source is None


# --- bad files: every error names file:line: field ------------------------------------------
BAD_CASES = [
    # id, old, new, field path, line needle, message fragment
    (
        "unknown party field",
        "    spu_ports: 21100-21149\n  bob:",
        "    spu_ports: 21100-21149\n    colour: red\n  bob:",
        "parties.alice.colour",
        "colour: red",
        "unknown field (allowed: allow_plaintext_redis, broker_url, description,",
    ),
    (
        "unknown top-level field",
        "federation: test",
        "federation: test\nowner: me",
        "owner",
        "owner:",
        "unknown field",
    ),
    ("bad party name", "  bob:", "  Bob:", "parties.Bob", "Bob:", "invalid party name 'Bob'"),
    (
        "party name with a dot",
        "  bob:",
        "  bob.corp:",
        "parties.bob.corp",
        "bob.corp:",
        "invalid party name",
    ),
    (
        "one party only",
        BASE[BASE.index("  bob:") :],
        "",
        "parties",
        "parties:",
        "at least 2 parties, found 1 (alice)",
    ),
    (
        "unset env var",
        "${BOB_REDIS_PASSWORD}",
        "${BOB_REDIS_PASSWORDX}",
        "parties.bob.broker_url",
        "BOB_REDIS_PASSWORDX",
        "environment variable BOB_REDIS_PASSWORDX is not set",
    ),
    (
        "placeholder password",
        "${BOB_REDIS_PASSWORD}",
        "changeme",
        "parties.bob.broker_url",
        "changeme",
        "placeholder",
    ),
    (
        "placeholder password 'secret'",
        "${BOB_REDIS_PASSWORD}",
        "Secret",
        "parties.bob.broker_url",
        "Secret@",
        "placeholder",
    ),
    (
        "empty password",
        ":${BOB_REDIS_PASSWORD}@",
        ":@",
        "parties.bob.broker_url",
        "coordinator:@",
        "no password",
    ),
    (
        "no user name",
        "coordinator:${BOB_REDIS_PASSWORD}",
        ":${BOB_REDIS_PASSWORD}",
        "parties.bob.broker_url",
        "rediss://:",
        "no user name",
    ),
    (
        "wrong scheme",
        "rediss://coordinator:${BOB",
        "amqp://coordinator:${BOB",
        "parties.bob.broker_url",
        "amqp://",
        "scheme must be redis:// or rediss://",
    ),
    (
        "rediss without CA",
        "defaults:\n  redis_ca_file: certs/ca.crt\n",
        "",
        "parties.alice.redis_ca_file",
        "alice:",
        "required when broker_url is rediss://",
    ),
    (
        "missing CA file",
        "    fed_host: bob.example",
        "    fed_host: bob.example\n    redis_ca_file: certs/nope.crt",
        "parties.bob.redis_ca_file",
        "nope.crt",
        "nope.crt does not exist",
    ),
    (
        "missing CA file in defaults",
        "redis_ca_file: certs/ca.crt",
        "redis_ca_file: certs/nope.crt",
        "defaults.redis_ca_file",
        "nope.crt",
        "does not exist",
    ),
    (
        "reversed range",
        "    fed_ports: 21000-21049",
        "    fed_ports: 21050-21000",
        "parties.alice.fed_ports",
        "21050-21000",
        "parties.alice.fed_ports: range 21050-21000 is empty (start > end)",
    ),
    (
        "range below 1024",
        "    spu_ports: 21100-21149",
        "    spu_ports: 80-90",
        "parties.alice.spu_ports",
        "80-90",
        "outside 1024-65535",
    ),
    (
        "one-port range",
        "    spu_ports: 21100-21149",
        "    spu_ports: 21100-21100",
        "parties.alice.spu_ports",
        "21100-21100",
        "at least 2",
    ),
    (
        "not a range",
        "    spu_ports: 21100-21149",
        "    spu_ports: 21100",
        "parties.alice.spu_ports",
        "spu_ports: 21100",
        "expected a port range",
    ),
    (
        "overlapping fed and spu ranges",
        "    spu_ports: 21100-21149",
        "    spu_ports: 21040-21089",
        "parties.alice.spu_ports",
        "21040-21089",
        "21040-21089 overlaps fed_ports 21000-21049 (ports 21040-21049)",
    ),
    (
        "overlap between parties on the same host",
        "    fed_host: bob.example",
        "    fed_host: alice.example",
        "parties.bob.fed_ports",
        ("fed_ports", 2),
        "overlaps party alice's fed_ports 21000-21049 on the same host",
    ),
    (
        "slots 0",
        "    fed_host: bob.example",
        "    fed_host: bob.example\n    slots: 0",
        "parties.bob.slots",
        "slots: 0",
        "must be at least 1",
    ),
    (
        "slots beyond the range",
        "    fed_ports: 21000-21049\n    spu_ports: 21100-21149\n  bob",
        "    fed_ports: 21000-21001\n    spu_ports: 21100-21149\n    slots: 3\n  bob",
        "parties.alice.fed_ports",
        "21000-21001",
        "has 2 ports but slots is 3",
    ),
    (
        "listen-all host",
        "    fed_host: bob.example",
        "    fed_host: 0.0.0.0",
        "parties.bob.fed_host",
        "0.0.0.0",
        "listen-all",
    ),
    (
        "host with a port",
        "    fed_host: bob.example",
        "    fed_host: bob.example:21000",
        "parties.bob.fed_host",
        "bob.example:21000",
        "not a host name",
    ),
    (
        "missing field",
        "    fed_host: bob.example\n",
        "",
        "parties.bob.fed_host",
        "bob:",
        "required field is missing",
    ),
    (
        "duplicate party",
        "  bob:",
        "  alice:",
        "parties.alice",
        ("alice:", 2),
        "duplicate key (first defined on line 5)",
    ),
]


@pytest.mark.parametrize(
    ("old", "new", "path", "needle", "fragment"),
    [case[1:] for case in BAD_CASES],
    ids=[case[0] for case in BAD_CASES],
)
def test_bad_topology(workdir, old, new, path, needle, fragment):
    text = edit(BASE, old, new)
    needle, nth = needle if isinstance(needle, tuple) else (needle, 1)
    expect_error(workdir, text, line_of(text, needle, nth), path, fragment)


def test_bad_default_is_reported_once_at_defaults(workdir):
    text = edit(BASE, "defaults:\n", "defaults:\n  slots: 0\n")
    msg = expect_error(workdir, text, line_of(text, "slots: 0"), "defaults.slots", "at least 1")
    assert msg.count("must be at least 1") == 1, msg


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


def test_yaml_syntax_error_has_line(workdir):
    text = edit(BASE, "    fed_host: bob.example", "    fed_host: [bob.example")
    with pytest.raises(TopologyError) as info:
        load_topology(write(workdir, text))
    msg = str(info.value)
    assert "YAML syntax error" in msg
    line = int(msg.split("topology.yaml:")[1].split(":")[0])
    assert line in (line_of(text, "[bob.example"), line_of(text, "[bob.example") + 1), msg


def test_yaml_bad_indentation_has_line(workdir):
    text = edit(BASE, "    fed_ports: 21000-21049\n    spu", "    fed_ports: 21000-21049\n   spu")
    with pytest.raises(TopologyError, match=r"topology\.yaml:\d+: YAML syntax error"):
        load_topology(write(workdir, text))


def test_missing_and_empty_files(workdir):
    with pytest.raises(TopologyError, match=r"nope\.yaml: cannot read"):
        load_topology(workdir / "nope.yaml")
    with pytest.raises(TopologyError, match="the file is empty"):
        load_topology(write(workdir, "# nothing\n"))


def test_unsupported_version(workdir):
    text = "version: 2\n" + BASE
    expect_error(workdir, text, 1, "version", "unsupported version")


# --- per-job ports ----------------------------------------------------------------------------
@pytest.fixture()
def topo(workdir):
    return load_topology(write(workdir, BASE.replace("21049", "21002").replace("21149", "21101")))


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


def test_issues_are_structured_and_sorted(workdir):
    text = edit(BASE, "    fed_ports: 21000-21049", "    fed_ports: 21050-21000")
    text = edit(text, "    fed_host: bob.example", "    fed_host: bob.example\n    slots: 0")
    with pytest.raises(TopologyError) as info:
        load_topology(write(workdir, text))
    issues = info.value.issues
    assert [(i.line, i.path) for i in issues] == [
        (line_of(text, "21050-21000"), "parties.alice.fed_ports"),
        (line_of(text, "slots: 0"), "parties.bob.slots"),
    ]
    assert all(i.file.endswith("topology.yaml") for i in issues)


def test_rotating_pool_hands_a_port_out_again_only_after_the_whole_range(topo):
    pool = PortPool(topo, rotate=True)
    seen = []
    n = len(topo.party("alice").fed_ports)
    for i in range(n + 1):
        seen.append(pool.acquire(f"exe-{i}", ["alice"])["alice"].fed)
        pool.release(f"exe-{i}")
    assert len(set(seen[:n])) == n  # every port once before any comes back
    assert seen[n] == seen[0]
