"""Shared test data and helpers for the party-registry tests (coordinator/topology/)."""

from __future__ import annotations

from pathlib import Path

import pytest

from coordinator.topology import TopologyError, load_topology

REPO_ROOT = Path(__file__).resolve().parents[3]
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
