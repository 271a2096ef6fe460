"""CoordinatorSettings refuses placeholder secrets and unknown databases."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from coordinator.settings import CoordinatorSettings


@pytest.fixture(autouse=True)
def signing_files(tmp_path, monkeypatch):
    """The settings need the coordinator's signing key and certificate to exist."""
    for name in ("coordinator.key", "coordinator.crt"):
        (tmp_path / name).write_text("x")
    monkeypatch.setenv("COORD_SIGNING_KEY_FILE", str(tmp_path / "coordinator.key"))
    monkeypatch.setenv("COORD_SIGNING_CERT_FILE", str(tmp_path / "coordinator.crt"))
    monkeypatch.setenv("COORD_TRUSTED_NODE_CERTS", str(tmp_path / "*.crt"))


@pytest.mark.parametrize("token", ["changeme", "", "secret", "short-token"])
def test_placeholder_or_short_api_token_refused(token):
    with pytest.raises(ValidationError, match="COORD_API_TOKEN"):
        CoordinatorSettings(api_token=token)


@pytest.mark.parametrize("secret", ["changeme", "", "secret", "short"])
def test_placeholder_or_short_session_secret_refused(secret):
    """The session secret signs UI cookies: checked like the token."""
    with pytest.raises(ValidationError, match="COORD_SESSION_SECRET"):
        CoordinatorSettings(api_token="a-real-token-of-enough-length", session_secret=secret)


def test_database_url_must_be_sqlite_or_postgresql():
    with pytest.raises(ValidationError, match="database_url"):
        CoordinatorSettings(api_token="a-real-token-of-enough-length", database_url="mysql://x")


def test_from_environment(monkeypatch):
    monkeypatch.setenv("COORD_API_TOKEN", "a-real-token-of-enough-length")
    monkeypatch.setenv("COORD_DATABASE_URL", "postgresql+psycopg://u:p@db/partyline")
    s = CoordinatorSettings()
    assert s.database_url.startswith("postgresql+psycopg://")
    assert s.max_attempts == 2


def test_missing_signing_key_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv("COORD_SIGNING_KEY_FILE", str(tmp_path / "nope.key"))
    with pytest.raises(ValidationError, match=r"nope\.key does not exist"):
        CoordinatorSettings(api_token="a-real-token-of-enough-length")


def test_warm_sessions_are_on_by_default_and_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("COORD_API_TOKEN", "a-real-token-of-enough-length")
    s = CoordinatorSettings()
    assert (s.warm_sessions, s.warm_session_idle_s) == (True, 600.0)
    monkeypatch.setenv("COORD_WARM_SESSIONS", "false")
    assert CoordinatorSettings().warm_sessions is False
    monkeypatch.setenv("COORD_WARM_SESSIONS", "true")
    monkeypatch.setenv("COORD_WARM_SESSION_IDLE_S", "1200")
    s = CoordinatorSettings()
    assert (s.warm_sessions, s.warm_session_idle_s) == (True, 1200.0)
    monkeypatch.setenv("COORD_WARM_SESSION_IDLE_S", "100")  # under 120 s: never reused
    with pytest.raises(ValidationError, match="warm_session_idle_s"):
        CoordinatorSettings()
