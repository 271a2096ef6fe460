"""Fixtures of the party-registry tests: passwords in the environment, a directory with a CA."""

from __future__ import annotations

from pathlib import Path

import pytest

from coordinator.topology import load_topology
from tests.coordinator.topology.helpers import BASE, PASSWORDS, write


@pytest.fixture()
def env(monkeypatch):
    for name, value in PASSWORDS.items():
        monkeypatch.setenv(name, value)


@pytest.fixture()
def workdir(tmp_path, env) -> Path:
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    return tmp_path


@pytest.fixture()
def topo(workdir):
    return load_topology(write(workdir, BASE.replace("21049", "21002").replace("21149", "21101")))
