"""Shared fixtures: real redis-server processes, stopped even when a test fails."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from deploy.local.ports import PortAllocator
from deploy.local.servers import PostgresServer, RedisServer

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def ports() -> PortAllocator:
    return PortAllocator()


@pytest.fixture()
def redis_server(tmp_path, ports):
    server = RedisServer(tmp_path / "redis", ports.one())
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory, ports):
    import tempfile

    # not under pytest's 0700 tmp tree: the server runs as the postgres user when we are root
    base = Path(tempfile.mkdtemp(prefix="partyline-pg-"))
    os.chmod(base, 0o755)
    server = None
    try:
        server = PostgresServer(base / "cluster", ports.one())
        yield server
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(base, ignore_errors=True)
