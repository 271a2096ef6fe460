"""Redis configuration shared by every deployment (local demo, compose, Ansible)."""

from __future__ import annotations

from pathlib import Path

ACL_FILE = Path(__file__).with_name("coordinator.acl")


def coordinator_acl_rules(path: Path = ACL_FILE) -> str:
    """The coordinator user's ACL rules (without user name and password), on one line."""
    rules: list[str] = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            rules.extend(line.split())
    return " ".join(rules)
