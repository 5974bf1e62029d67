"""The one settings object of the web app, read from the environment.

`DATABASE_URL` has no prefix (the usual name for deployments and docker-compose); everything else
is `SFGEVAL_*`. `get_settings()` caches one instance per process; tests build their own
`Settings(...)` and pass it to `create_app`.
"""

from __future__ import annotations

from functools import lru_cache

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite:///./sfgeval.sqlite3"
# Used only when no secret is configured; `sfgeval serve`/`demo` replace it with a random one
# per run, and the app logs a warning when it is still in use.
INSECURE_DEV_SECRET = "sfgeval-insecure-development-secret-change-me"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SFGEVAL_", extra="ignore", populate_by_name=True)

    database_url: str = Field(
        default=DEFAULT_DATABASE_URL,
        validation_alias=AliasChoices("DATABASE_URL", "SFGEVAL_DATABASE_URL", "database_url"),
        description="SQLAlchemy URL; PostgreSQL (postgresql+psycopg://...) is the database of record",
    )
    secret_key: str = Field(default=INSECURE_DEV_SECRET, description="signs admin session cookies")
    admin_user: str | None = Field(default=None, description="bootstrap admin created at start-up")
    admin_password: str | None = None
    hold_minutes: float = Field(
        default=30.0, gt=0, description="default minutes a trial stays reserved for its participant"
    )
    secure_cookies: bool = Field(default=False, description="mark cookies Secure (serve over HTTPS)")
    base_url: str = Field(default="http://127.0.0.1:8000", description="public URL used in printed links")
    db_pool_size: int = Field(default=10, ge=1, description="PostgreSQL connection pool size per worker")
    db_max_overflow: int = Field(default=20, ge=0)
    threads: int = Field(
        # Measured on 2 cores (benchmarks/load.py): 4 instead of anyio's 40 cuts CPU per rating (less
        # GIL contention, no pool overflow connections opened and closed). A long admin export holds one.
        default=4, ge=1, description="threads per worker process running request handlers"
    )
    trusted_proxies: str = Field(
        default="",
        validation_alias=AliasChoices("SFGEVAL_TRUSTED_PROXIES", "FORWARDED_ALLOW_IPS", "trusted_proxies"),
        description="comma-separated addresses/networks of reverse proxies whose X-Forwarded-For and "
                    "X-Forwarded-Proto are believed ('' = none: the TCP peer is the client)",
    )
    signup_rate_per_minute: float = Field(
        default=30.0, ge=0, description="sign-ups per minute from one client address after the burst (0 = no limit)"
    )
    signup_burst: int = Field(default=60, ge=1, description="sign-ups at once from one client address")
    max_upload_bytes: int = Field(
        default=2 << 30, ge=1, description="largest pair-set zip or config upload accepted (413 above)"
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
