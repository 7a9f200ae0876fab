"""The queries behind the API's lists: keyset pages, newest change first, on indexes.

Submissions are ordered by (updated_at, id) descending and a page starts after the last
row of the one before, so a row never shows up twice in one walk through the pages, and
rows inserted or changed meanwhile move to the front instead of shifting the rest. Every
filter has its index (migration 0005): status (status, updated_at), user_id (user_id,
updated_at), none or updated_after (updated_at), ``meta.KEY=VALUE`` the metadata pairs
(key, value, submission). ``tests/test_api_plans.py`` reads the plans on both databases.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import sqlalchemy as sa
from sqlalchemy import Connection
from sqlalchemy.dialects import postgresql

from receiver.flows.outbox import list_attempts, list_notifications
from receiver.store.hotsql import HotStatement
from receiver.store.models import (
    Submission,
    SubmissionMeta,
    json_reader,
    utc_reader,
    utc_text_reader,
)

__all__ = [
    "get_submission_object",
    "list_attempts_page",
    "list_notifications_page",
    "list_submissions_page",
    "submission_objects",
    "submissions_statement",
]

_submissions = Submission.__table__  # type: ignore[attr-defined]
_meta = SubmissionMeta.__table__  # type: ignore[attr-defined]
_c = _submissions.c
#: What the submission object shows (``receiver.flows.records.submission_json``), and the id:
#: reading only these keeps a page's rows (and SQLite's sort of them) small.
SHOWN_COLUMNS = (
    "id",
    "submission_id",
    "user_id",
    "input_url",
    "job_id",
    "status",
    "provider_status",
    "output_url",
    "error",
    "meta",
    "is_test",
    "provider_updated_at",
    "created_at",
    "updated_at",
)
_SHOWN = [_c[name] for name in SHOWN_COLUMNS]
_BY_SUBMISSION_ID = HotStatement(
    sa.select(*_SHOWN).where(_c.submission_id == sa.bindparam("submission_id")), raw=True
)


def submission_objects(rows: Sequence[Sequence[Any]], dialect: str) -> list[dict[str, Any]]:
    """Return rows of the shown columns, as the driver gave them, as submission objects.

    Each is what ``receiver.flows.records.submission_json`` makes of the submission (a test
    holds them equal), built from the tuple with the column types' conversions in one call
    each (``utc_text_reader``, ``json_reader``): SQLAlchemy's processors, a named tuple and
    ``submission_json``'s lookups cost an owner's page of 100 2.6 million instructions more
    (19.1 million for the whole request, 16.5 million this way; bench/README.md).
    """
    stamp = utc_text_reader(dialect)
    document = json_reader(dialect)
    objects = []
    for row in rows:
        (_, submission_id, user_id, input_url, job_id, status, provider_status) = row[:7]
        (output_url, error, meta, is_test, provider_updated_at, created_at, updated_at) = row[7:]
        objects.append(
            {
                "submission_id": submission_id,
                "user_id": user_id,
                "input_url": input_url,
                "job_id": job_id,
                "status": status,
                "provider_status": provider_status,
                "output_url": output_url,
                "error": error,
                "metadata": document(meta),
                "test": bool(is_test),
                "provider_updated_at": stamp(provider_updated_at),
                "created_at": stamp(created_at),
                "updated_at": stamp(updated_at),
            }
        )
    return objects


def _has_pair(key: Any, value: Any, dialect: str) -> Any:
    """Return the condition: the submission has metadata ``key`` = ``value``.

    The pairs drive: the matching ids from their index, each row by primary key, at a
    cost that follows the matches, not the table. PostgreSQL, given a plain
    IN (…), may instead read every submission through another index for a hash join;
    ``id = ANY(<the ids as one array>)`` leaves it the id lookups. SQLite plans IN (…) so.
    """
    pairs = sa.select(_meta.c.submission_pk).where(_meta.c.key == key, _meta.c.value == value)
    if dialect != "postgresql":
        return _c.id.in_(pairs)
    ids = sa.select(sa.func.array_agg(_meta.c.submission_pk)).where(
        _meta.c.key == key, _meta.c.value == value
    )
    return _c.id == sa.any_(sa.cast(ids.scalar_subquery(), postgresql.ARRAY(sa.Integer)))


def submissions_statement(
    *,
    dialect: str,
    status: str | None = None,
    user_id: str | None = None,
    updated_after: datetime | None = None,
    meta: Mapping[str, str] | None = None,
    after: tuple[datetime, int] | None = None,
    limit: int = 100,
) -> sa.Select[Any]:
    """Return the SELECT of one page: every filter given, after ``after``, newest first."""
    return _page_select(
        dialect,
        status=status is not None,
        user_id=user_id is not None,
        updated_after=updated_after is not None,
        meta=len(meta or {}),
        after=after is not None,
    ).params(_page_params(status, user_id, updated_after, meta, after, limit))


def _page_params(
    status: str | None,
    user_id: str | None,
    updated_after: datetime | None,
    meta: Mapping[str, str] | None,
    after: tuple[datetime, int] | None,
    limit: int,
) -> dict[str, Any]:
    """Return the values of one page's parameters, named as ``_page_select`` binds them."""
    params: dict[str, Any] = {
        "status": status,
        "user_id": user_id,
        "updated_after": updated_after,
        "limit": limit,
    }
    for number, (key, value) in enumerate((meta or {}).items()):
        params[f"meta_key_{number}"] = key
        params[f"meta_value_{number}"] = value
    if after is not None:
        params["after_moment"], params["after_id"] = after
    return params


def _page_select(
    dialect: str, *, status: bool, user_id: bool, updated_after: bool, meta: int, after: bool
) -> sa.Select[Any]:
    """Return the SELECT of one shape of page, its values left as named parameters."""
    statement = sa.select(*([_c.id] if meta else _SHOWN)).where(_c.is_test.is_(False))
    if status:
        statement = statement.where(_c.status == sa.bindparam("status"))
    if user_id:
        statement = statement.where(_c.user_id == sa.bindparam("user_id"))
    if updated_after:
        statement = statement.where(_c.updated_at > sa.bindparam("updated_after"))
    for number in range(meta):
        key = sa.bindparam(f"meta_key_{number}", type_=sa.String)
        value = sa.bindparam(f"meta_value_{number}", type_=sa.String)
        statement = statement.where(_has_pair(key, value, dialect))
    if after:
        moment = sa.bindparam("after_moment", type_=_c.updated_at.type)
        last_id = sa.bindparam("after_id", type_=sa.Integer)
        # The first condition bounds the index range on both databases; the second
        # breaks ties between rows changed in the same microsecond.
        statement = statement.where(
            _c.updated_at <= moment, sa.or_(_c.updated_at < moment, _c.id < last_id)
        )
    limit = sa.bindparam("limit", type_=sa.Integer)
    statement = statement.order_by(_c.updated_at.desc(), _c.id.desc()).limit(limit)
    if not meta:
        return statement
    # The pairs give every match, in no useful order: the matches are sorted by their
    # (updated_at, id) alone, then only the page's rows are read whole. Sorting the whole
    # rows took SQLite 18.2 million instructions for a campaign of 1,000, this 9.7.
    page = _submissions.alias("page")
    return (
        sa.select(*[page.c[name] for name in SHOWN_COLUMNS])
        .where(page.c.id.in_(statement))
        .order_by(page.c.updated_at.desc(), page.c.id.desc())
    )


@functools.lru_cache(maxsize=64)
def _page_statement(
    dialect: str, status: bool, user_id: bool, updated_after: bool, meta: int, after: bool
) -> HotStatement:
    """Return the hot statement of one shape of page (a few shapes serve every request)."""
    select = _page_select(
        dialect, status=status, user_id=user_id, updated_after=updated_after, meta=meta, after=after
    )
    return HotStatement(select, raw=True)


def get_submission_object(conn: Connection, submission_id: str) -> dict[str, Any] | None:
    """Return one submission's object, or None; ``conn`` is in a transaction."""
    rows = _BY_SUBMISSION_ID.execute(conn, {"submission_id": submission_id})
    return submission_objects(rows, conn.dialect.name)[0] if rows else None


def list_submissions_page(
    conn: Connection,
    *,
    limit: int,
    after: tuple[datetime, int] | None = None,
    status: str | None = None,
    user_id: str | None = None,
    updated_after: datetime | None = None,
    meta: Mapping[str, str] | None = None,
) -> tuple[list[dict[str, Any]], tuple[datetime, int] | None]:
    """Return one page of submission objects and the position the next page starts after.

    The page's statement is compiled once per shape (which filters are given) and runs on
    the driver's cursor (``receiver.store.hotsql``): through ``Connection.execute`` building
    and running it cost more than reading its 100 rows.
    """
    statement = _page_statement(
        conn.dialect.name,
        status is not None,
        user_id is not None,
        updated_after is not None,
        len(meta or {}),
        after is not None,
    )
    params = _page_params(status, user_id, updated_after, meta, after, limit + 1)
    rows = statement.execute(conn, params)
    dialect = conn.dialect.name
    if len(rows) <= limit:
        return submission_objects(rows, dialect), None
    last = rows[limit - 1]
    last_moment = utc_reader(dialect)(last[-1])
    assert last_moment is not None  # updated_at is NOT NULL
    return submission_objects(rows[:limit], dialect), (last_moment, last[0])


def list_notifications_page(
    conn: Connection,
    *,
    limit: int,
    status: str | None = None,
    submission_id: str | None = None,
    before_id: int | None = None,
) -> tuple[list[dict[str, Any]], int | None]:
    """Return one page of the outbox, newest first, and the id the next page starts below."""
    rows = list_notifications(
        conn, status=status, submission_id=submission_id, before_id=before_id, limit=limit + 1
    )
    if len(rows) <= limit:
        return rows, None
    return rows[:limit], int(rows[limit - 1]["id"])


def list_attempts_page(
    conn: Connection, notification_id: int, *, limit: int, after_id: int | None = None
) -> tuple[list[dict[str, Any]], int | None]:
    """Return one page of a notification's attempts, oldest first, and the id it ends on."""
    rows = list_attempts(conn, notification_id, after_id=after_id, limit=limit + 1)
    if len(rows) <= limit:
        return rows, None
    return rows[:limit], int(rows[limit - 1]["id"])


def public_endpoint(url: str) -> str:
    """Return a notification endpoint without a query string or credentials it may carry."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
