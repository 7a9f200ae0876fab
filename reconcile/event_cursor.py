"""The event list's cursor and lease: one row per ittybit API, one reader at a time.

The lease is taken by one conditional UPDATE (free, run out, or already ours), so of
several reconcilers only one gets it, on PostgreSQL (the row lock makes the others
re-check the condition after the winner commits) as on SQLite (one writer at a time).
The cursor is moved only by the lease's holder, and only after the changes of the page
it ends were committed: a reconciler that dies in between leaves the cursor where it was,
and the page is read again, its events coming back as duplicates.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy import Connection
from sqlalchemy.dialects import postgresql, sqlite

from receiver.store.models import EventCursor

__all__ = ["FeedPosition", "acquire", "move_cursor", "release", "renew"]

_table = EventCursor.__table__  # type: ignore[attr-defined]
_c = _table.c


@dataclass(frozen=True, slots=True)
class FeedPosition:
    """Where the list is read from: ``started`` False until a first pass placed the cursor."""

    cursor: str | None
    cursor_at: datetime | None
    started: bool


def _ensure_row(conn: Connection, api_url: str) -> None:
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    conn.execute(
        insert(_table).values(api_url=api_url).on_conflict_do_nothing(index_elements=["api_url"])
    )


def acquire(
    conn: Connection, api_url: str, *, owner: str, now: datetime, lease_seconds: float
) -> FeedPosition | None:
    """Lease the feed of ``api_url`` for ``owner``; return its position, or None if held.

    The row is made on first use. A lease that ran out (its holder died) is taken over.
    """
    _ensure_row(conn, api_url)
    statement = (
        sa.update(_table)
        .where(
            _c.api_url == api_url,
            sa.or_(_c.lease_until.is_(None), _c.lease_until <= now, _c.lease_owner == owner),
        )
        .values(lease_owner=owner, lease_until=now + timedelta(seconds=lease_seconds))
        .returning(_c.cursor, _c.cursor_at, _c.started_at)
    )
    row = conn.execute(statement).first()
    if row is None:
        return None
    return FeedPosition(
        cursor=row.cursor, cursor_at=row.cursor_at, started=row.started_at is not None
    )


def renew(
    conn: Connection, api_url: str, *, owner: str, now: datetime, lease_seconds: float
) -> bool:
    """Extend ``owner``'s live lease; False when it no longer holds one."""
    result = conn.execute(
        sa.update(_table)
        .where(_c.api_url == api_url, _c.lease_owner == owner, _c.lease_until > now)
        .values(lease_until=now + timedelta(seconds=lease_seconds))
    )
    return int(result.rowcount) == 1


def move_cursor(
    conn: Connection,
    api_url: str,
    *,
    owner: str,
    cursor: str | None,
    cursor_at: datetime | None,
    now: datetime,
    lease_seconds: float,
) -> bool:
    """Move the cursor (and renew the lease) if ``owner`` still holds the feed; tell which.

    Call it in a transaction of its own, after the page's changes were committed.
    """
    result = conn.execute(
        sa.update(_table)
        .where(_c.api_url == api_url, _c.lease_owner == owner, _c.lease_until > now)
        .values(
            cursor=cursor,
            cursor_at=cursor_at,
            started_at=sa.func.coalesce(_c.started_at, sa.literal(now, _c.started_at.type)),
            updated_at=now,
            lease_until=now + timedelta(seconds=lease_seconds),
        )
    )
    return int(result.rowcount) == 1


def release(conn: Connection, api_url: str, *, owner: str) -> None:
    """Give the feed's lease back, if ``owner`` holds it."""
    conn.execute(
        sa.update(_table)
        .where(_c.api_url == api_url, _c.lease_owner == owner)
        .values(lease_owner=None, lease_until=None)
    )
