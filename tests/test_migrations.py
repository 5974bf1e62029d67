"""The schema comes only from the Alembic migrations, and they match the models."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from app.db import alembic_config, upgrade_database
from app.models import Base


def test_migrations_match_the_models_and_downgrade_cleanly(db_url):
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == [], diff
        command.downgrade(alembic_config(db_url), "base")
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        upgrade_database(db_url)
        assert {"studies", "pairs", "trials", "ratings", "admin_users"} <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
