"""The schema comes only from the Alembic migrations, and they match the models."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from app.store.db import alembic_config, upgrade_database
from app.store.models import Base

ROOT = Path(__file__).resolve().parent.parent


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


@pytest.mark.postgres
def test_servers_starting_together_migrate_once(postgres_url):
    # Several `sfgeval serve` processes on one database each migrate at start-up: on PostgreSQL an
    # advisory lock lets one run the migrations while the others wait and then find nothing to do.
    command.downgrade(alembic_config(postgres_url), "base")
    script = "import sys; from app.store.db import upgrade_database; upgrade_database(sys.argv[1])"
    procs = [subprocess.Popen([sys.executable, "-c", script, postgres_url], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(3)]
    outputs = [p.communicate(timeout=180)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outputs
    engine = create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            assert conn.scalar(text("SELECT count(*) FROM alembic_version")) == 1
            assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    finally:
        engine.dispose()


def test_downgrading_study_columns_keeps_every_trial_and_rating(db_url, client, study_factory):
    """Dropping a column of `studies` (monitoring, datasheet, code_when_full) on the way down must not
    lose data: a batch rebuild of `studies` on SQLite cascaded deletes to trials and ratings."""
    import uuid

    study = study_factory(n_pairs=3, pairs_per_participant=2)
    token = client.post(f"/api/studies/{study.slug}/participants", json=None).json()["participant"]
    while not (t := client.get(f"/api/participants/{token}/next").json()).get("done"):
        r = client.post(f"/api/trials/{t['trial']}/answer", headers={"X-Participant": token},
                        json={"choice": 2, "request_id": str(uuid.uuid4())})
        assert r.status_code == 200
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            before = [conn.execute(text(f"SELECT count(*) FROM {t}")).scalar() for t in ("studies", "trials", "ratings")]
        assert before[2] == 2
        command.downgrade(alembic_config(db_url), "13_monitoring")
        with engine.connect() as conn:
            assert [conn.execute(text(f"SELECT count(*) FROM {t}")).scalar() for t in ("studies", "trials", "ratings")] == before
        upgrade_database(db_url)
        with engine.connect() as conn:
            assert [conn.execute(text(f"SELECT count(*) FROM {t}")).scalar() for t in ("studies", "trials", "ratings")] == before
    finally:
        engine.dispose()
