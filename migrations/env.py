"""Alembic environment: the database URL comes from the app settings (or the caller's config)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import text

from app.store.db import make_engine
from app.store.models import Base
from app.settings import get_settings

config = context.config
target_metadata = Base.metadata
MIGRATION_LOCK_KEY = 0x5F6E7661  # any fixed 64-bit number, the same for every sfgeval process


def _url() -> str:
    # `app.store.db.upgrade_database(url)` passes the URL explicitly; the `alembic` CLI falls back to
    # DATABASE_URL through the settings object.
    return config.attributes.get("database_url") or get_settings().database_url


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = make_engine(_url())
    try:
        with engine.connect() as connection:
            if connection.dialect.name == "sqlite":
                # Batch mode rebuilds a table (copy, drop, rename). With foreign keys on, dropping
                # `studies` would cascade deletes to its trials and ratings: SQLite's own recipe for
                # altering tables turns them off around the change (outside any transaction).
                connection.connection.driver_connection.execute("PRAGMA foreign_keys=OFF")  # no BEGIN yet
            context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
            with context.begin_transaction():
                if connection.dialect.name == "postgresql":
                    # Several servers may start at once on one database (behind a load balancer):
                    # one migrates, the others wait here and then find nothing left to do.
                    connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
