"""The webhook's write path as tuned for speed: one statement per change and inbox row on
PostgreSQL, and SQLite's write lock taken by retrying BEGIN IMMEDIATE ourselves."""

from __future__ import annotations

import sqlite3
import threading
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from config.settings import Settings
from receiver.core.jobstate import normalise
from receiver.core.transitions import Change
from receiver.flows.apply import apply_job_state, find_submission
from receiver.store.engines import _begin_immediate, create_db_engine
from receiver.store.inbox import Delivery, event_values
from receiver.store.models import Outcome, Submission, WebhookEvent, utcnow
from tests.helpers import SECRET_KEY, add_submission, job_payload, quiet_outbox

_submissions = Submission.__table__  # type: ignore[attr-defined]
_events = WebhookEvent.__table__  # type: ignore[attr-defined]


def _stored(engine: Engine) -> tuple[str, list[str]]:
    with engine.connect() as conn:
        status = conn.execute(sa.select(_submissions.c.status)).scalar_one()
        keys = list(conn.execute(sa.select(_events.c.dedupe_key).order_by(_events.c.id)).scalars())
    return status, keys


def _apply(engine: Engine, key: str) -> Change | None:
    """Apply a succeeded job to sub_1 with its inbox row ``key`` and commit, whatever happens.

    No rollback: a taken key must leave nothing written by itself.
    """
    state = normalise(job_payload())
    now = utcnow()
    delivery = Delivery(source="url", body="{}", headers={}, delivery_id=key)
    with engine.begin() as conn:
        submission = find_submission(conn, submission_id="sub_1")
        assert submission is not None
        event = event_values(
            key=key, delivery=delivery, state=state, submission_id="sub_1", now=now
        )
        return apply_job_state(conn, submission, state, now=now, outbox=quiet_outbox(), event=event)


def test_a_change_and_its_inbox_row_are_written_together(engine: Engine) -> None:
    add_submission(engine)
    first = _apply(engine, "wh:one")
    assert first is not None and first.outcome is Outcome.APPLIED
    assert _stored(engine) == ("succeeded", ["wh:one"])


def test_a_taken_key_writes_nothing(engine: Engine) -> None:
    add_submission(engine)
    with engine.begin() as conn:
        conn.execute(
            sa.insert(_events).values(
                dedupe_key="wh:taken",
                received_at=utcnow(),
                source="url",
                body="{}",
                headers={},
                outcome=Outcome.APPLIED.value,
            )
        )
    assert _apply(engine, "wh:taken") is None
    assert _stored(engine) == ("pending", ["wh:taken"])


def _hold_sqlite_lock(
    path: str, seconds: float
) -> tuple[threading.Thread, threading.Event, threading.Event]:
    """Hold SQLite's write lock from another connection for ``seconds``, or until the
    returned ``release`` is set; ``taken`` is set once it is held."""
    taken, release = threading.Event(), threading.Event()

    def hold() -> None:
        holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        holder.execute("BEGIN IMMEDIATE")
        taken.set()
        release.wait(seconds)
        holder.execute("ROLLBACK")
        holder.close()

    thread = threading.Thread(target=hold)
    thread.start()
    return thread, taken, release


def _sqlite_engine(database_url: str, busy_timeout_ms: int) -> Engine:
    settings = Settings.from_env(
        {
            "APP_ENV": "test",
            "SECRET_KEY": SECRET_KEY,
            "DATABASE_URL": database_url,
            "SQLITE_BUSY_TIMEOUT_MS": str(busy_timeout_ms),
        }
    )
    return create_db_engine(settings)


def _sqlite_only(database_url: str) -> str:
    if not database_url.startswith("sqlite"):
        pytest.skip("SQLite's write lock")
    return sa.make_url(database_url).database or ""


def test_a_writer_waits_for_the_sqlite_lock_and_then_writes(database_url: str) -> None:
    path = _sqlite_only(database_url)
    engine = _sqlite_engine(database_url, busy_timeout_ms=10_000)
    thread, taken, _ = _hold_sqlite_lock(path, 0.2)
    try:
        assert taken.wait(5)
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE waited (x INTEGER)"))
    finally:
        thread.join()
        engine.dispose()
    with sqlite3.connect(path) as check:
        tables = {row[0] for row in check.execute("SELECT name FROM sqlite_master")}
    assert "waited" in tables


def test_a_writer_gives_up_after_the_busy_timeout(database_url: str) -> None:
    path = _sqlite_only(database_url)
    engine = _sqlite_engine(database_url, busy_timeout_ms=50)
    thread, taken, release = _hold_sqlite_lock(path, 10.0)
    try:
        assert taken.wait(5)
        with pytest.raises(OperationalError, match="locked"), engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE never (x INTEGER)"))
    finally:
        release.set()  # held until the writer gave up, not a moment longer
        thread.join()
        engine.dispose()


def test_other_sqlite_errors_at_begin_are_not_retried() -> None:
    calls: list[str] = []

    class Broken:
        def execute(self, sql: str) -> Any:
            calls.append(sql)
            raise sqlite3.OperationalError("disk I/O error")

    with pytest.raises(sqlite3.OperationalError, match="disk I/O error"):
        _begin_immediate(Broken(), 10.0)  # type: ignore[arg-type]
    assert calls == ["BEGIN IMMEDIATE"]
