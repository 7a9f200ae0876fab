"""Database engine per app: SQLite tuned for several writers, PostgreSQL with a pool."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from flask import Flask, current_app
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from config.settings import Settings

__all__ = [
    "MAX_OVERFLOW",
    "POOL_SIZE",
    "create_db_engine",
    "database_unavailable",
    "get_engine",
    "get_read_engine",
    "init_app",
    "migration_state",
    "read_only",
]

_EXTENSION = "jobhooks.engine"
_READ_EXTENSION = "jobhooks.read_engine"
#: Execution option of connections that only read (see :func:`read_only`).
_READ_ONLY = "jobhooks_read_only"


#: Connections one process's PostgreSQL pool keeps, and may open beyond them under load.
POOL_SIZE = 5
MAX_OVERFLOW = 5


def create_db_engine(settings: Settings) -> Engine:
    """Return an engine for ``settings.database_url``.

    Its errors never quote a statement's parameters (``hide_parameters``): they hold bodies,
    tokens and password hashes, and an error's text ends up in logs.
    """
    url = sa.make_url(settings.database_url)
    if url.get_backend_name() == "sqlite":
        return _sqlite_engine(url, settings.sqlite_busy_timeout_ms)
    engine = sa.create_engine(
        url,
        hide_parameters=True,
        pool_size=POOL_SIZE,
        max_overflow=MAX_OVERFLOW,
        pool_timeout=5,
        connect_args={"connect_timeout": 5},
    )
    _ping_when_idle(engine)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # A row lock held elsewhere must not outlast ittybit's 5 s answer window: give up
        # after 3 s with an error that answers 503, as SQLite's busy timeout does.
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '3s'")
        dbapi_connection.commit()

    return engine


#: A pooled PostgreSQL connection unused for this long is pinged before it is handed out.
PING_AFTER_IDLE = 1.0


def _ping_when_idle(engine: Engine) -> None:
    """Check a pooled connection with a round trip only when it has been idle a while.

    ``pool_pre_ping`` pings on every checkout: a round trip (about 50 µs here) and 25 µs of
    CPU on every webhook. A connection in steady use has just proved itself; one idle for
    ``PING_AFTER_IDLE`` may have been cut by a restart or failover, and a failed ping makes
    the pool replace it (SQLAlchemy's documented ``DisconnectionError`` in a checkout
    listener). A connection cut while in steady use fails its next statement instead: it
    is invalidated, the webhook path retries once on a new one (``receiver.web.webhooks``), and
    any other request answers 503.
    """
    dialect = engine.dialect

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("idle_since")
        if since is None or time.monotonic() - since < PING_AFTER_IDLE:
            return
        try:
            dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as exc:
            raise DisconnectionError(str(exc)) from exc


def _sqlite_engine(url: sa.URL, busy_timeout_ms: int) -> Engine:
    if url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    # The driver's own transaction handling is off: a writer's transaction begins
    # IMMEDIATE, so it queues for the lock (up to the busy timeout) instead of failing on a
    # lock upgrade; a reader's (read_only) begins DEFERRED and never waits for the lock.
    timeout = busy_timeout_ms / 1000
    engine = sa.create_engine(url, connect_args={"timeout": timeout}, hide_parameters=True)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        # Every wait for the lock happens at BEGIN IMMEDIATE, which _on_begin retries
        # itself; SQLite's own busy handler would sleep 1, 2, 5, 10, 15… ms between tries,
        # leaving the lock idle long after the other writer let it go.
        cursor.execute("PRAGMA busy_timeout=0")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        # Straight to the driver: this runs once per webhook, and exec_driver_sql costs
        # several times the statement. A failure (locked past the busy timeout) is raised
        # as SQLAlchemy's own error, as exec_driver_sql would, so callers answer 503.
        driver = connection.connection.driver_connection
        assert driver is not None
        if connection.get_execution_options().get(_READ_ONLY):
            # WAL readers see the last commit and neither take nor wait for the write lock.
            driver.execute("BEGIN")
            return
        started = time.monotonic()
        try:
            writers.enter(timeout)
            try:
                _begin_immediate(driver, timeout - (time.monotonic() - started))
            except BaseException:
                writers.leave()
                raise
        except sqlite3.Error as exc:
            raise DBAPIError.instance(
                "BEGIN IMMEDIATE", None, exc, sqlite3.Error, dialect=connection.dialect
            ) from exc

    writers = _ProcessWriters()
    event.listen(engine, "commit", writers.leave)
    event.listen(engine, "rollback", writers.leave)
    # Whatever ends the transaction, the connection goes back to the pool in its thread.
    event.listen(engine.pool, "checkin", writers.leave)
    return engine


class _ProcessWriters:
    """This process's writers take SQLite's write lock one at a time, queued on a lock.

    gthread workers run several threads a process; each spinning on ``BEGIN IMMEDIATE``
    while another thread of the same process held the lock cost the GIL and the commit's
    time (the threaded workers answered a third fewer webhooks than sync ones on SQLite).
    A thread now waits on a Python lock for its process's turn and spins only against
    other processes. It only orders writers: SQLite's own lock still decides, so a thread
    that gives its turn back early (a read-only transaction of its own ending) costs some
    spinning, never a wrong write.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holding = threading.local()

    def enter(self, timeout: float) -> None:
        if not self._lock.acquire(timeout=max(timeout, 0.0)):
            message = "database is locked (another writer of this process held it)"
            raise sqlite3.OperationalError(message)
        self._holding.turn = True

    def leave(self, *_: Any) -> None:
        """Hand the turn on, if this thread holds it (also an event listener's signature)."""
        if getattr(self._holding, "turn", False):
            self._holding.turn = False
            self._lock.release()


def _begin_immediate(driver: sqlite3.Connection, timeout: float) -> None:
    """Take SQLite's write lock, retrying every 0.1 to 1 ms while another writer holds it."""
    deadline = time.monotonic() + timeout
    pause = 0.0001
    while True:
        try:
            driver.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
            busy = code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
            if not busy or time.monotonic() + pause > deadline:
                raise
        else:
            return
        time.sleep(pause)
        pause = min(pause * 2, 0.001)


def read_only(engine: Engine) -> Engine:
    """Return ``engine`` for transactions that only read.

    On SQLite they begin DEFERRED, so a page, a probe or a scrape answers while a long write
    (a reconcile claim, a prune batch) holds the write lock; writing through it fails. It
    shares the engine's pool. On PostgreSQL each statement runs in autocommit: under READ
    COMMITTED a statement sees its own snapshot whether or not a transaction wraps it, so
    the ``BEGIN`` and ``ROLLBACK`` round trips around a read would buy nothing.
    """
    if engine.dialect.name == "postgresql":
        return engine.execution_options(isolation_level="AUTOCOMMIT", **{_READ_ONLY: True})
    return engine.execution_options(**{_READ_ONLY: True})


def init_app(app: Flask, settings: Settings) -> None:
    """Create the app's engine; it is disposed of with the process."""
    engine = app.extensions[_EXTENSION] = create_db_engine(settings)
    app.extensions[_READ_EXTENSION] = read_only(engine)


def get_engine(app: Flask | None = None) -> Engine:
    """Return the engine of ``app`` (default: the current app), for transactions that write."""
    engine: Engine = (app or current_app).extensions[_EXTENSION]
    return engine


def get_read_engine(app: Flask | None = None) -> Engine:
    """Return the read-only view of ``app``'s engine (see :func:`read_only`)."""
    engine: Engine = (app or current_app).extensions[_READ_EXTENSION]
    return engine


def database_unavailable(exc: BaseException) -> bool:
    """Tell whether an error means the database is down, locked, unreachable or saturated."""
    # A pool with no free connection in time is as unavailable as a database that is down.
    if isinstance(exc, OperationalError | PoolTimeoutError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def migration_state(engine: Engine) -> tuple[str | None, str | None]:
    """Return (current revision in the database, head revision of the migrations)."""
    # Here, not at the top: alembic costs commands that never check migrations (test_startup).
    from receiver.store.migrate import head_revision

    # Read alembic's table directly: a MigrationContext logs at INFO on every probe.
    with read_only(engine).connect() as connection:
        current = None
        if sa.inspect(connection).has_table("alembic_version"):
            current = connection.execute(
                sa.text("SELECT version_num FROM alembic_version")
            ).scalar()
    return current, head_revision()
