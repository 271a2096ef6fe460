"""Loading topology files (coordinator/topology/loading.py): the example, ${VAR}, and errors
that name file:line: field."""

from __future__ import annotations

import shutil

import pytest

from coordinator.topology import PortRange, TopologyError, load_topology, parse_topology
from tests.coordinator.topology.helpers import (
    BASE,
    EXAMPLE,
    PASSWORDS,
    edit,
    expect_error,
    line_of,
    write,
)


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
