"""CoordinatorSettings refuses placeholder secrets and unknown databases."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from coordinator.settings import CoordinatorSettings


@pytest.mark.parametrize("token", ["changeme", "", "secret", "short-token"])
def test_placeholder_or_short_api_token_refused(token):
    with pytest.raises(ValidationError, match="COORD_API_TOKEN"):
        CoordinatorSettings(api_token=token)


def test_database_url_must_be_sqlite_or_postgresql():
    with pytest.raises(ValidationError, match="database_url"):
        CoordinatorSettings(api_token="a-real-token-of-enough-length", database_url="mysql://x")


def test_from_environment(monkeypatch):
    monkeypatch.setenv("COORD_API_TOKEN", "a-real-token-of-enough-length")
    monkeypatch.setenv("COORD_DATABASE_URL", "postgresql+psycopg://u:p@db/partyline")
    s = CoordinatorSettings()
    assert s.database_url.startswith("postgresql+psycopg://")
    assert s.max_attempts == 2
