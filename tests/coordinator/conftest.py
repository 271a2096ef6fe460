"""Fixtures shared by the coordinator tests: databases, and real redis-servers per party."""

from __future__ import annotations

import pytest
import yaml

from certs.authority import init_federation
from coordinator.db import make_engine
from deploy.local.servers import RedisServer

from .helpers import PARTIES, _rng


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'coordinator.db'}"
    server = request.getfixturevalue("postgres_server")
    url = server.url
    engine = make_engine(url)
    with engine.begin() as conn:  # a clean schema per test
        for table in ("task_status_logs", "secretflow_tasks", "jobs", "alembic_version"):
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table} CASCADE")
    engine.dispose()
    return url


@pytest.fixture()
def env(tmp_path, ports):
    certs = tmp_path / "certs"
    init_federation(certs, [*PARTIES, "coordinator"])
    servers = {p: RedisServer(tmp_path / f"redis-{p}", ports.one()) for p in PARTIES}
    try:
        topo = {
            "version": 1,
            "federation": "test",
            "parties": {
                p: {
                    "broker_url": servers[p].url,
                    "fed_host": "127.0.0.1",
                    "fed_ports": _rng(ports.block(8)),
                    "spu_ports": _rng(ports.block(8)),
                }
                for i, p in enumerate(PARTIES)
            },
        }
        path = tmp_path / "topology.yaml"
        path.write_text(yaml.safe_dump(topo))
        yield {"servers": servers, "topology": path, "certs": certs, "tmp": tmp_path}
    finally:
        for s in servers.values():
            s.stop()
