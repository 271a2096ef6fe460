"""The Ansible content without hosts: ansible-lint (production profile) and yamllint clean, every
playbook parses, the example inventory is what the writer makes of the topology file, every
prefixed variable a role uses is declared in its defaults or vars."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from deploy.ansible import inventory
from deploy.ansible.__main__ import main as ansible_main
from deploy.local.topology import EXAMPLE_REGISTRY

ANSIBLE = Path(__file__).resolve().parents[3] / "deploy" / "ansible"
BIN = Path(sys.executable).parent
ROLES = sorted(p.name for p in (ANSIBLE / "roles").iterdir())
PLAYBOOKS = [
    "site.yml",
    *sorted(f"playbooks/{p.name}" for p in (ANSIBLE / "playbooks").glob("*.yml")),
]


def _run(*cmd: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, ANSIBLE_CONFIG=str(ANSIBLE / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    env["PATH"] = f"{BIN}:{env['PATH']}"
    return subprocess.run(cmd, cwd=ANSIBLE, env=env, capture_output=True, text=True, timeout=600)


def test_ansible_lint_production_profile_is_clean():
    out = _run(str(BIN / "ansible-lint"), "--nocolor", "--profile", "production")
    assert out.returncode == 0, out.stdout + out.stderr


def test_yamllint_is_clean():
    out = _run(str(BIN / "yamllint"), "--strict", "-c", ".yamllint", ".")
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("playbook", PLAYBOOKS)
def test_every_playbook_parses(playbook):
    out = _run(
        str(BIN / "ansible-playbook"),
        "--syntax-check",
        "-i",
        "inventory/example/hosts.yml",
        playbook,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_example_inventory_is_what_the_writer_makes_of_the_topology(tmp_path):
    example = ANSIBLE / "inventory" / "example"
    hosts = yaml.safe_load((example / "hosts.yml").read_text())["all"]["children"]
    parties = hosts[inventory.PARTIES_GROUP]["hosts"]
    coordinator = hosts[inventory.COORDINATOR_GROUP]["hosts"]["coordinator"]
    args = ["inventory", "--topology", str(EXAMPLE_REGISTRY), "--out", str(tmp_path)]
    for name, entry in parties.items():
        args += ["--host", f"{name}={entry['ansible_host']}"]
    assert ansible_main([*args, "--coordinator", coordinator["ansible_host"]]) == 0
    for f in ("hosts.yml", "group_vars/all.yml"):
        assert (tmp_path / f).read_text() == (example / f).read_text(), f
    # and the registry has the topology's ports: the same federation as make demo and compose
    reg = yaml.safe_load((example / "group_vars" / "all.yml").read_text())["partyline_parties"]
    topo = yaml.safe_load(EXAMPLE_REGISTRY.read_text())["parties"]
    for name, entry in reg.items():
        assert f":{entry['redis_port']}/" in topo[name]["broker_url"]
        assert (entry["fed_ports"], entry["spu_ports"]) == (
            topo[name]["fed_ports"],
            topo[name]["spu_ports"],
        )


def test_the_inventory_writer_refuses_a_host_name_where_the_firewall_needs_an_ip(tmp_path, capsys):
    code = ansible_main(
        ["inventory", "--host", "alice=alice.example", "--host", "bob=192.0.2.12",
         "--coordinator", "192.0.2.10", "--out", str(tmp_path)]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "alice" in err and "not an IP address" in err
    assert "Traceback" not in err and not (tmp_path / "hosts.yml").exists()


def test_the_inventory_writer_names_a_party_the_topology_lacks(tmp_path, capsys):
    code = ansible_main(
        [
            "inventory",
            "--host",
            "dave=192.0.2.14",
            "--coordinator",
            "192.0.2.10",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 2 and "no party dave" in capsys.readouterr().err


@pytest.mark.parametrize("role", ROLES)
def test_every_prefixed_variable_a_role_uses_is_declared(role):
    """The geerlingguy convention: a role's own variables are all in defaults/ (or vars/ when
    derived), so an operator finds every knob in one file."""
    root = ANSIBLE / "roles" / role
    declared = set()
    for f in ("defaults/main.yml", "vars/main.yml"):
        if (root / f).exists():
            declared |= set(yaml.safe_load((root / f).read_text()) or {})
    text = ""
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink() and path.suffix in (".yml", ".j2"):
            text += path.read_text()
    name = re.escape(role) + r"_\w+"
    assigned = set(re.findall(rf"register:\s*({name})", text))  # registered results
    assigned |= set(re.findall(rf"^\s+({name}):", text, re.MULTILINE))  # set_fact / task vars
    used = set(re.findall(rf"\b({name})\b", text))
    missing = sorted(used - declared - assigned)
    assert not missing, f"{role} uses undeclared variables: {', '.join(missing)}"
