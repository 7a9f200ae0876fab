"""The event list's cursor and lease: one row per ittybit API, one reader at a time.

The lease is taken by one conditional UPDATE (free, run out, or already ours:
``receiver.store.leases``), so of several reconcilers only one gets it.
The cursor is moved only by the lease's holder, and only after the changes of the page
it ends were committed: a reconciler that dies in between leaves the cursor where it was,
and the page is read again, its events coming back as duplicates.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection
from sqlalchemy.dialects import postgresql, sqlite

from receiver.store import leases
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
    row = leases.lease_one(
        conn,
        _table,
        _c.api_url == api_url,
        returning=[_c.cursor, _c.cursor_at, _c.started_at],
        now=now,
        owner=owner,
        lease_seconds=lease_seconds,
    )
    if row is None:
        return None
    return FeedPosition(
        cursor=row.cursor, cursor_at=row.cursor_at, started=row.started_at is not None
    )


def renew(
    conn: Connection,
    api_url: str,
    *,
    owner: str,
    now: datetime,
    lease_seconds: float,
    also: dict[str, Any] | None = None,
) -> bool:
    """Extend ``owner``'s live lease (writing ``also`` with it); False when it holds none."""
    where = _c.api_url == api_url
    held = leases.renew(
        conn,
        _table,
        where,
        owner=owner,
        now=now,
        lease_seconds=lease_seconds,
        live_only=True,
        also=also,
    )
    return held == 1


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
    moved = {
        "cursor": cursor,
        "cursor_at": cursor_at,
        "started_at": sa.func.coalesce(_c.started_at, sa.literal(now, _c.started_at.type)),
        "updated_at": now,
    }
    return renew(conn, api_url, owner=owner, now=now, lease_seconds=lease_seconds, also=moved)


def release(conn: Connection, api_url: str, *, owner: str) -> None:
    """Give the feed's lease back, if ``owner`` holds it."""
    leases.release(conn, _table, _c.api_url == api_url, owner=owner)
