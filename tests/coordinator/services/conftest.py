"""Fixtures of the coordinator's service tests: a migrated database (SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest

from coordinator.db import make_engine, migrate, session_factory


@pytest.fixture
def sessions(db_url):
    """A session factory on a freshly migrated database."""
    migrate(db_url)
    engine = make_engine(db_url)
    yield session_factory(engine)
    engine.dispose()
