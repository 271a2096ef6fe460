"""The compose files as compose itself reads them, and the Dockerfiles as hadolint reads them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from deploy.compose import config

HERE = config.HERE
HADOLINT = Path(sys.executable).with_name("hadolint")


def _compose(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.fail("docker-compose is not installed (make system-deps installs Debian's 1.29)")
    return subprocess.run([exe, *args], capture_output=True, text=True, env={**os.environ, **env})


@pytest.mark.parametrize("parties", [["alice", "bob"], ["alice", "bob", "carol"]])
def test_compose_accepts_the_files_and_no_party_shares_another_partys_network(tmp_path, parties):
    gen = config.generate(tmp_path / "c", parties)
    files = [a for f in config.compose_files(parties) for a in ("-f", str(f))]
    env = {"PARTYLINE_COMPOSE_DIR": str(gen.dir)}
    assert _compose([*files, "config", "-q"], env).returncode == 0
    resolved = yaml.safe_load(_compose([*files, "config"], env).stdout)
    services = resolved["services"]
    for p in parties:
        for s in (f"{p}-redis", f"{p}-node"):
            assert set(services[s]["networks"]) == {p}, s
        assert set(services[f"{p}-gw"]["networks"]) == {p, "wan"}
        aliases = services[f"{p}-gw"]["networks"][p]["aliases"]
        assert sorted(aliases) == sorted(f"{q}.peer" for q in parties)
        assert services[f"{p}-node"]["healthcheck"]["test"][-2:] == ["health", "--no-links"]
        for m in services[f"{p}-node"]["volumes"]:
            if m.startswith(str(gen.dir)):
                assert m.endswith(":ro"), m  # certificates and secrets: read-only
    assert set(services["coordinator"]["networks"]) == {"wan", "db", "front"}
    (port,) = services["coordinator"]["ports"]  # 1.29 prints "IP:HOST:CONTAINER", v2 a mapping
    assert (port if isinstance(port, str) else port["host_ip"]).startswith("127.0.0.1")
    assert set(services["coordinator"]["depends_on"]) >= {f"{p}-node" for p in parties}
    for name, net in resolved["networks"].items():
        assert bool(net.get("internal")) is (name != "front"), name


def test_a_missing_config_dir_is_named_with_what_to_run(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PARTYLINE_COMPOSE_DIR"}
    exe = shutil.which("docker-compose") or "docker-compose"
    done = subprocess.run(
        [exe, "-f", str(config.COMPOSE_FILE), "config", "-q"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode != 0
    assert "run python -m deploy.compose init first" in done.stderr


def test_hadolint_finds_nothing_in_the_dockerfiles():
    dockerfiles = sorted(HERE.glob("Dockerfile.*"))
    assert len(dockerfiles) == 3
    done = subprocess.run(
        [str(HADOLINT), "--no-color", "--failure-threshold", "info", *map(str, dockerfiles)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
