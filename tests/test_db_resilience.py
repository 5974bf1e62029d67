"""A database restart or a dropped connection costs requests a wait, never a 500 (issue 8)."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import create_engine, event, text

from tests.test_api import answer, join, next_

pytestmark = pytest.mark.postgres


@pytest.fixture
def db_url(postgres_url):  # this module runs on PostgreSQL only
    return postgres_url


def _kill(url: str, pid: int | None = None) -> int:
    """Terminate the backend `pid`, or every other backend of this database; returns how many."""
    admin = create_engine(url, isolation_level="AUTOCOMMIT", pool_size=1, max_overflow=0)
    with admin.connect() as conn:
        where = "pid = :pid" if pid else "datname = current_database() AND pid <> pg_backend_pid()"
        n = len(conn.execute(text(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE {where}"),
                             {"pid": pid}).all())
    admin.dispose()
    return n


def test_stale_pooled_connections_are_replaced(client, study_factory, db_url):
    study = study_factory(n_pairs=4, pairs_per_participant=2)
    token = join(client, study.slug)
    assert next_(client, token).status_code == 200
    assert _kill(db_url) >= 1  # every pooled connection dies, as in a restart
    statuses = [next_(client, token).status_code for _ in range(5)]
    statuses.append(answer(client, token, next_(client, token).json()["trial"], 3).status_code)
    assert statuses == [200] * 6


def test_a_connection_dropped_mid_request_is_retried(client, app, study_factory, db_url, caplog):
    study = study_factory(n_pairs=4, pairs_per_participant=2)
    token = join(client, study.slug)
    trial = next_(client, token).json()["trial"]
    armed = {"on": True}

    def kill_once(conn, _cursor, statement, *_):
        # The answer's write: an UPDATE, or on PostgreSQL one WITH ... statement (issue 21).
        if armed["on"] and statement.lstrip().upper().startswith(("UPDATE", "WITH")):
            armed["on"] = False
            _kill(db_url, conn.connection.dbapi_connection.info.backend_pid)

    event.listen(app.state.engine, "before_cursor_execute", kill_once)
    caplog.set_level(logging.WARNING, logger="app.web.resilience")
    try:
        r = answer(client, token, trial, 4, request_id="rid-1")
    finally:
        event.remove(app.state.engine, "before_cursor_execute", kill_once)
    assert not armed["on"] and "trying again" in caplog.text
    assert r.status_code == 200 and r.json()["choice"] == 4
    again = answer(client, token, trial, 4, request_id="rid-1")
    assert again.headers.get("X-Idempotent-Replay") == "true"  # stored exactly once


def test_a_dead_pooled_connection_is_replaced_at_checkout_without_a_ping(db_url):
    """The checkout check (`app.store.db._alive`) finds a connection the server closed by looking at its
    socket: the pool hands out a fresh one, and a live connection is handed out with no statement
    sent (no `pool_pre_ping` round trip)."""
    import select

    from app.store.db import make_engine

    engine = make_engine(db_url, pool_size=1, max_overflow=0)
    admin = create_engine(db_url, isolation_level="AUTOCOMMIT", pool_size=1, max_overflow=0)
    sent = []

    def last_statement(pid: int) -> str:
        with admin.connect() as c:
            return c.scalar(text("SELECT query FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid})

    try:
        with engine.connect() as conn:
            old = conn.connection.dbapi_connection
            old_pid = old.info.backend_pid
            conn.execute(text("SELECT 1"))
            conn.commit()
        assert last_statement(old_pid) == "COMMIT"
        # A live pooled connection: checkout sends nothing (a ping would be the last statement).
        with engine.connect() as conn:
            assert conn.connection.dbapi_connection is old
        assert last_statement(old_pid) == "COMMIT"
        assert _kill(db_url, old_pid) == 1
        assert select.select([old.fileno()], [], [], 5)[0]  # the server's goodbye arrived
        event.listen(engine, "before_cursor_execute", lambda *a: sent.append(a[2]))
        with engine.connect() as conn:  # no OperationalError: the dead one was discarded
            assert conn.connection.dbapi_connection is not old
            assert conn.scalar(text("SELECT pg_backend_pid()")) != old_pid
        assert sent == ["SELECT pg_backend_pid()"]
    finally:
        engine.dispose()
        admin.dispose()
