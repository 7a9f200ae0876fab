"""Hot statements run on the driver's cursor must behave as ``Connection.execute`` would:
the same rows and Python values, SQLAlchemy's exceptions, statement listeners informed, and
never outside the caller's transaction."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from receiver.store.hotsql import HotStatement
from receiver.store.models import Submission, WebhookEvent
from tests.helpers import add_submission

_submissions = Submission.__table__  # type: ignore[attr-defined]
_events = WebhookEvent.__table__  # type: ignore[attr-defined]

_SELECT = sa.select(
    _submissions.c.submission_id,
    _submissions.c.provider_updated_at,
    _submissions.c.is_test,
    _submissions.c.meta,
    _submissions.c.error,
).where(_submissions.c.submission_id == sa.bindparam("key"))


def test_rows_and_values_are_what_sqlalchemy_gives(engine: Engine) -> None:
    add_submission(engine)
    stamp = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    update = HotStatement(
        sa.update(_submissions)
        .where(_submissions.c.submission_id == sa.bindparam("key"))
        .values(provider_updated_at=sa.bindparam("stamp"), meta=sa.bindparam("meta"))
    )
    with engine.begin() as conn:
        assert update.execute(conn, {"key": "sub_1", "stamp": stamp, "meta": {"a": [1]}}) == []
    with engine.begin() as conn:
        hot = HotStatement(_SELECT).execute(conn, {"key": "sub_1"})
        core = [tuple(row) for row in conn.execute(_SELECT, {"key": "sub_1"})]
    assert hot == core
    assert hot == [("sub_1", stamp, False, {"a": [1]}, None)]
    assert hot[0][1].tzinfo is not None


def test_values_the_statement_holds_itself_are_sent_with_the_callers(engine: Engine) -> None:
    add_submission(engine, "sub_1")
    add_submission(engine, "sub_2")
    # `poll_attempts >= 0` and (on SQLite) `LIMIT ? OFFSET ?` hold anonymous parameters.
    newest = HotStatement(
        sa.select(_submissions.c.submission_id)
        .where(_submissions.c.poll_attempts >= 0, _submissions.c.user_id == sa.bindparam("user"))
        .order_by(_submissions.c.id.desc())
        .limit(sa.bindparam("limit", type_=sa.Integer))
    )
    with engine.begin() as conn:
        assert newest.execute(conn, {"user": "user_1", "limit": 1}) == [("sub_2",)]
        assert newest.execute(conn, {"user": "user_1", "limit": 5}) == [("sub_2",), ("sub_1",)]
        assert newest.execute(conn, {"user": "nobody", "limit": 5}) == []


def test_an_insert_returns_its_id_and_a_taken_key_returns_nothing(engine: Engine) -> None:
    dialect = sa.dialects.postgresql if engine.dialect.name == "postgresql" else sa.dialects.sqlite
    insert = HotStatement(
        dialect.insert(_events)
        .on_conflict_do_nothing(index_elements=[_events.c.dedupe_key])
        .returning(_events.c.id),
        keys=["dedupe_key", "received_at", "source", "body", "headers", "outcome"],
    )
    row = {
        "dedupe_key": "k1",
        "received_at": datetime.now(UTC),
        "source": "url",
        "body": "{}",
        "headers": {"webhook-id": "msg_1"},
        "outcome": "applied",
    }
    with engine.begin() as conn:
        first = insert.execute(conn, row)
        again = insert.execute(conn, row)
    assert len(first) == 1 and isinstance(first[0][0], int)
    assert again == []
    with engine.connect() as conn:
        stored = conn.execute(sa.select(_events.c.headers, _events.c.delivery_id)).one()
    assert stored == ({"webhook-id": "msg_1"}, None)


def test_a_driver_error_comes_back_as_sqlalchemys(engine: Engine) -> None:
    add_submission(engine, "sub_1", job_id="job_1")
    add_submission(engine, "sub_2")
    update = HotStatement(
        sa.update(_submissions)
        .where(_submissions.c.submission_id == sa.bindparam("key"))
        .values(job_id=sa.bindparam("job"))
    )
    with pytest.raises(IntegrityError), engine.begin() as conn:
        update.execute(conn, {"key": "sub_2", "job": "job_1"})


def test_statement_listeners_hear_every_statement(engine: Engine) -> None:
    add_submission(engine)
    heard: list[tuple[str, str]] = []

    def before(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        heard.append(("before", statement.split()[0]))

    def after(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        heard.append(("after", statement.split()[0]))

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    try:
        with engine.begin() as conn:
            HotStatement(_SELECT).execute(conn, {"key": "sub_1"})
    finally:
        event.remove(engine, "before_cursor_execute", before)
        event.remove(engine, "after_cursor_execute", after)
    assert heard == [("before", "SELECT"), ("after", "SELECT")]


def test_a_hot_statement_needs_the_callers_transaction(engine: Engine) -> None:
    with engine.connect() as conn, pytest.raises(AssertionError, match="transaction"):
        HotStatement(_SELECT).execute(conn, {"key": "sub_1"})


def test_a_connection_runs_its_hot_statements_on_one_cursor_until_one_fails(
    engine: Engine,
) -> None:
    add_submission(engine, "sub_1", job_id="job_1")
    add_submission(engine, "sub_2")
    taken = HotStatement(
        sa.update(_submissions)
        .where(_submissions.c.submission_id == sa.bindparam("key"))
        .values(job_id=sa.bindparam("job"))
    )
    cursors: list[Any] = []

    def before(_conn: Any, cursor: Any, *_: Any) -> None:
        cursors.append(cursor)

    event.listen(engine, "before_cursor_execute", before)
    try:
        with engine.connect() as conn:
            with conn.begin():
                first = HotStatement(_SELECT).execute(conn, {"key": "sub_1"})
                HotStatement(_SELECT).execute(conn, {"key": "sub_2"})
            with pytest.raises(IntegrityError), conn.begin():
                taken.execute(conn, {"key": "sub_2", "job": "job_1"})
            with conn.begin():  # a failed statement's cursor is not used again
                again = HotStatement(_SELECT).execute(conn, {"key": "sub_1"})
    finally:
        event.remove(engine, "before_cursor_execute", before)
    assert cursors[0] is cursors[1] is cursors[2]
    assert cursors[3] is not cursors[2]
    assert again == first
