"""Leases: who works on a row right now, written the same way for every table that has one.

A lease is a pair of columns, ``lease_owner`` and ``lease_until``. It is taken by a
conditional UPDATE (the row free, its lease run out, or already the taker's), so of
several takers only one gets a row: on PostgreSQL a batch is chosen ``FOR UPDATE SKIP
LOCKED``, so concurrent takers pass each other by, and a lone row's lock makes the others
re-check the condition after the winner commits; on SQLite a writer's transaction begins
IMMEDIATE, so takers take turns. A dead holder's lease runs out; a live one renews it.
Submissions (polled, or their job created), notifications and the event cursor use it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection

__all__ = ["free", "given_back", "held_by", "lease_one", "lease_rows", "release", "renew", "taken"]


def free(table: sa.Table, now: Any) -> Any:
    """Return the condition: nobody holds a live lease on the row."""
    c = table.c
    return sa.or_(c.lease_until.is_(None), c.lease_until <= now)


def held_by(table: sa.Table, owner: Any) -> Any:
    """Return the condition: ``owner`` holds the row's lease (live or run out)."""
    return table.c.lease_owner == owner


def taken(owner: str, *, now: datetime, lease_seconds: float) -> dict[str, Any]:
    """Return the values that give the row's lease to ``owner`` for ``lease_seconds``."""
    return {"lease_owner": owner, "lease_until": now + timedelta(seconds=lease_seconds)}


def given_back() -> dict[str, Any]:
    """Return the values that free the row's lease (with an outcome written by its holder)."""
    return {"lease_owner": None, "lease_until": None}


def lease_rows(
    conn: Connection,
    table: sa.Table,
    chosen: sa.Select[Any],
    *,
    returning: list[Any],
    now: datetime,
    owner: str,
    lease_seconds: float,
) -> list[Any]:
    """Lease the rows ``chosen`` selects (their ``id``) for ``owner``; return them by id.

    ``chosen`` must select only rows that are free (see :func:`free`): the batch is locked
    ``FOR UPDATE SKIP LOCKED`` and leased in one statement. ``returning`` must name ``id``.
    """
    due_rows = chosen.with_for_update(skip_locked=True).cte("due")
    statement = (
        sa.update(table)
        .where(table.c.id == due_rows.c.id)
        .values(taken(owner, now=now, lease_seconds=lease_seconds))
        .returning(*returning)
    )
    return sorted(conn.execute(statement), key=lambda row: row.id)


def lease_one(
    conn: Connection,
    table: sa.Table,
    where: Any,
    *,
    returning: list[Any],
    now: datetime,
    owner: str,
    lease_seconds: float,
) -> Any:
    """Lease the row ``where`` selects if it is free, run out or already ``owner``'s.

    Return the ``returning`` columns of the row, or None when another holds it.
    """
    statement = (
        sa.update(table)
        .where(where, sa.or_(free(table, now), held_by(table, owner)))
        .values(taken(owner, now=now, lease_seconds=lease_seconds))
        .returning(*returning)
    )
    return conn.execute(statement).first()


def renew(
    conn: Connection,
    table: sa.Table,
    where: Any,
    *,
    owner: str,
    now: datetime,
    lease_seconds: float,
    live_only: bool = False,
    also: dict[str, Any] | None = None,
) -> int:
    """Extend the leases ``owner`` holds on the rows ``where`` selects; return how many.

    ``live_only``: only leases that have not run out (one that ran out may be another's
    by now). ``also``: more values written in the same statement.
    """
    condition = sa.and_(where, held_by(table, owner))
    if live_only:
        condition = sa.and_(condition, table.c.lease_until > now)
    values = {"lease_until": now + timedelta(seconds=lease_seconds), **(also or {})}
    result = conn.execute(sa.update(table).where(condition).values(values))
    return int(result.rowcount)


def release(conn: Connection, table: sa.Table, where: Any, *, owner: str) -> int:
    """Give back the leases ``owner`` holds on the rows ``where`` selects; return how many."""
    result = conn.execute(sa.update(table).where(where, held_by(table, owner)).values(given_back()))
    return int(result.rowcount)
