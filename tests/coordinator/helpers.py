"""Helpers shared by the coordinator tests that run the app against real redis-servers."""

from __future__ import annotations

from pathlib import Path

from coordinator.settings import CoordinatorSettings

TOKEN = "test-token-0123456789abcdef"
PARTIES = ("alice", "bob", "carol")


def _rng(r: range) -> str:
    return f"{r.start}-{r.stop - 1}"


def _settings(env, **kw) -> CoordinatorSettings:
    certs: Path = env["certs"]
    base = {
        "api_token": TOKEN,
        "database_url": f"sqlite:///{env['tmp'] / 'coord.db'}",
        "topology_file": env["topology"],
        "signing_key_file": certs / "coordinator.key",
        "signing_cert_file": certs / "coordinator.crt",
        "trusted_node_certs": str(certs / "*.crt"),
        "reconcile_interval_s": 0.5,
    }
    return CoordinatorSettings(**{**base, **kw})
