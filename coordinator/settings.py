"""CoordinatorSettings: one pydantic-settings class for the coordinator process (env prefix COORD_)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER_SECRETS = {"", "changeme", "change-me", "changethis", "secret", "password", "token"}


class CoordinatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="COORD_", env_file=None, extra="ignore")

    database_url: str = Field(
        default="sqlite:///var/coordinator.db",
        description="SQLAlchemy URL: sqlite:///path (default) or postgresql+psycopg://user:pw@host/db",
    )
    topology_file: Path = Field(default=Path("topology.yaml"), description="the party registry")
    api_token: str = Field(description="bearer token for the REST API and the UI login")
    start_timeout_s: float = 120.0
    default_deadline_s: float = 6 * 3600.0
    max_attempts: int = 2

    @field_validator("api_token")
    @classmethod
    def _token(cls, v: str) -> str:
        if v.strip().lower() in PLACEHOLDER_SECRETS or len(v) < 16:
            raise ValueError("COORD_API_TOKEN must be a real secret of at least 16 characters")
        return v

    @field_validator("database_url")
    @classmethod
    def _db(cls, v: str) -> str:
        if not (v.startswith("sqlite") or v.startswith("postgresql")):
            raise ValueError("database_url must be sqlite:///… or postgresql+psycopg://…")
        return v


@lru_cache(maxsize=1)
def get_settings() -> CoordinatorSettings:
    return CoordinatorSettings()
