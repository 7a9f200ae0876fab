"""SQLite: a process's writer threads queue for the write lock, and always hand it on."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from config.settings import Settings
from receiver.store.engines import create_db_engine


@pytest.fixture
def engine(tmp_path: Path) -> sa.Engine:
    settings = Settings.from_env(
        {
            "APP_ENV": "test",
            "SECRET_KEY": "x",
            "DATABASE_URL": f"sqlite:///{tmp_path}/writers.db",
            "SQLITE_BUSY_TIMEOUT_MS": "300",
        }
    )
    made = create_db_engine(settings)
    with made.begin() as conn:
        conn.execute(sa.text("CREATE TABLE t (n INTEGER)"))
    return made


def write(engine: sa.Engine, n: int) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO t VALUES (:n)"), {"n": n})


@pytest.mark.parametrize("end", ["commit", "rollback", "close", "invalidate"])
def test_the_turn_is_handed_on_however_a_write_ends(engine: sa.Engine, end: str) -> None:
    conn = engine.connect()
    conn.execute(sa.text("INSERT INTO t VALUES (1)"))  # begins the write, taking the turn
    getattr(conn, end)()
    if end != "close":
        conn.close()
    # Another thread writes at once: a turn kept past the write would make it wait 300 ms
    # and fail as locked.
    failed: list[BaseException] = []

    def other() -> None:
        try:
            write(engine, 2)
        except BaseException as exc:  # reported below
            failed.append(exc)

    thread = threading.Thread(target=other)
    started = time.monotonic()
    thread.start()
    thread.join()
    assert failed == [] and time.monotonic() - started < 0.25


def test_a_writer_waits_for_its_turn_then_gives_up_as_locked(engine: sa.Engine) -> None:
    holder = engine.connect()
    holder.execute(sa.text("INSERT INTO t VALUES (1)"))
    failed: list[BaseException] = []

    def other() -> None:
        try:
            write(engine, 2)
        except BaseException as exc:  # checked below
            failed.append(exc)

    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
    holder.rollback()
    holder.close()
    assert len(failed) == 1 and isinstance(failed[0], DBAPIError)  # answered 503 by the web
    assert "locked" in str(failed[0])
    write(engine, 3)  # and the turn is free again
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT n FROM t")).scalars().all() == [3]
