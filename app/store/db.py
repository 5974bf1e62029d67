"""Engine, sessions and schema upgrades.

The schema is created only by the Alembic migrations in `migrations/` (`upgrade_database`), never by
`create_all`. On SQLite every transaction starts with `BEGIN IMMEDIATE`, which takes the write lock
up front: that serialises writers (the assignment code relies on it) and avoids the
deadlock-prone read-then-upgrade pattern; WAL keeps readers going meanwhile.
"""

from __future__ import annotations

import select
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

from app.settings import Settings

from app.resources import resource_dir

MIGRATIONS_DIR = resource_dir("migrations")


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def make_engine(url: str, *, pool_size: int = 10, max_overflow: int = 20, read_only: bool = False) -> Engine:
    """An engine for `url`; SQLite gets WAL, foreign keys, a busy timeout and BEGIN IMMEDIATE.

    `read_only` (SQLite): transactions are plain deferred BEGINs on `query_only` connections, so
    they never take the write lock: under WAL a long read (a researcher's page) runs beside the
    participants' writes instead of queueing them (see `read_session_factory`)."""
    if is_sqlite(url):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_conn, _record) -> None:  # pragma: no cover - driver hook
            # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's implicit BEGIN is
            # deferred, which is what we want to avoid).
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            if make_url(url).database not in (None, "", ":memory:"):
                cur.execute("PRAGMA journal_mode=WAL")
            if read_only:
                cur.execute("PRAGMA query_only=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn) -> None:  # pragma: no cover - driver hook
            conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

        return engine
    # A pooled connection that died with a database restart is replaced before use (`_alive`), and
    # new connections are retried while the server comes back (`_connect_with_retry`), so a restart
    # costs requests a short wait, not a 500.
    engine = create_engine(url, pool_recycle=1800, pool_size=pool_size, max_overflow=max_overflow)
    event.listen(engine, "do_connect", _connect_with_retry)
    event.listen(engine, "connect", _generic_plans)
    event.listen(engine, "checkout", _alive)
    return engine


def _alive(dbapi_conn, _conn_rec, _conn_proxy) -> None:
    """`pool_pre_ping` without its round trip (which costs each request a statement): an idle
    connection has nothing to read, so a socket that is readable means the server closed it or
    sent its last words ("terminating connection due to administrator command"). The pool then
    discards it and connects again. A connection that dies while in use is `app.web.resilience`'s."""
    if dbapi_conn.closed or dbapi_conn.broken or select.select([dbapi_conn.fileno()], [], [], 0)[0]:
        raise DisconnectionError("the database closed this pooled connection")


def _generic_plans(dbapi_conn, _conn_rec) -> None:
    """Plan each prepared statement once per connection. psycopg prepares the statements a
    connection runs often; PostgreSQL would still re-plan some of them on every execution (its
    "auto" mode keeps custom plans when their estimate looks cheaper), and planning the allocation's
    ranking costs more than running it. The statements on the participant path are all shaped
    alike whatever their parameters (one study, one participant, one pair), so one plan fits all.
    A plain SET on connect, not a startup option, so that PgBouncer passes it through."""
    with dbapi_conn.cursor() as cur:
        cur.execute("SET plan_cache_mode = force_generic_plan")
    dbapi_conn.commit()  # SET is transactional: keep it


CONNECT_RETRY_S = 15.0


def _connect_with_retry(dialect, _conn_rec, cargs, cparams):
    """Open a DBAPI connection, retrying for up to CONNECT_RETRY_S while the server refuses."""
    deadline = time.monotonic() + CONNECT_RETRY_S
    delay = 0.05
    while True:
        try:
            return dialect.connect(*cargs, **cparams)
        except dialect.loaded_dbapi.OperationalError:
            if time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 1.0)


def engine_from_settings(settings: Settings) -> Engine:
    return make_engine(
        settings.database_url, pool_size=settings.db_pool_size, max_overflow=settings.db_max_overflow
    )


def end_reads(session: Session) -> None:
    """End a transaction that wrote nothing (or whose writes are committed) with COMMIT, not the
    ROLLBACK that closing the session would send: on ROLLBACK psycopg drops every statement it has
    prepared on that connection, so they would all be parsed and planned afresh. A COMMIT of reads
    changes nothing. After a failed statement the transaction is already rolled back: no-op."""
    if session.in_transaction():
        session.commit()


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


def read_session_factory(settings: Settings, write_factory: sessionmaker[Session]) -> sessionmaker[Session]:
    """Sessions for requests that only read (an admin's GET pages, exports, images): on SQLite a
    second engine whose transactions never take the write lock (`make_engine(read_only=True)`), so
    nothing a researcher browses can stall participants; elsewhere the ordinary sessions."""
    if not is_sqlite(settings.database_url):
        return write_factory
    return session_factory(make_engine(settings.database_url, read_only=True))


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A session on a throwaway engine for command-line use: commit on success, roll back on error."""
    engine = make_engine(url)
    try:
        with session_factory(engine)() as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise
    finally:
        engine.dispose()


def alembic_config(url: str):
    """A programmatic Alembic config (no alembic.ini needed) pointing at `migrations/` (the
    repository's folder, or the copy an installed wheel ships)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser interpolation: a literal % in a password must be doubled.
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["database_url"] = url
    return cfg


def upgrade_database(url: str) -> None:
    """Bring the database at `url` to the newest schema (`alembic upgrade head`)."""
    from alembic import command

    if is_sqlite(url):
        db = make_url(url).database
        if db and db != ":memory:":
            Path(db).parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(url), "head")
