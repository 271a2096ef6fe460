"""Fixtures shared by the coordinator's database tests."""

from __future__ import annotations

import pytest

from coordinator.db import make_engine


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
