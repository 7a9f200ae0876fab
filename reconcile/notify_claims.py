"""Leases that keep notifiers apart, and the order they keep per submission and endpoint.

A notification is due when it is pending, its next attempt time has come, nobody holds a
live lease on it, and no earlier notification of the same submission to the same endpoint
is still pending: the application never gets ``succeeded`` before the ``processing`` that
came first. A claim leases due rows in one short transaction and commits
(``receiver.store.leases``). A crashed notifier's lease runs out and the row is sent
again, with the same ``webhook-id``. Recording an attempt's outcome writes only over the
recorder's own lease.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from receiver.store import leases
from receiver.store.models import (
    Notification,
    NotificationAttempt,
    NotificationStatus,
    NotifyEndpoint,
)

__all__ = [
    "RESPONSE_KEPT",
    "Ended",
    "Leased",
    "claim_due",
    "due_endpoints",
    "peek_due",
    "record_attempts",
    "record_delivered",
    "record_failed",
]

_table = Notification.__table__  # type: ignore[attr-defined]
_c = _table.c
_earlier = _table.alias("earlier")
_PENDING = NotificationStatus.PENDING.value
_endpoints = NotifyEndpoint.__table__  # type: ignore[attr-defined]
_attempts = NotificationAttempt.__table__  # type: ignore[attr-defined]
#: The first kilobyte of an answer is kept with its attempt.
RESPONSE_KEPT = 1024


@dataclass(frozen=True, slots=True)
class Leased:
    """A notification in a notifier's hands: what to send, where, and since when it is owed."""

    id: int
    message_id: str
    submission_id: str
    endpoint: str
    endpoint_id: str
    event_type: str
    payload: str
    attempts: int
    created_at: datetime


_FIELDS = [_c[name] for name in Leased.__slots__]


class _Unindexed(FunctionElement[Any]):
    """A column's value as it is, in a term SQLite must not answer through an index.

    SQLite, without statistics, read every due notification through the index on
    ``(status, next_attempt_at)`` and sorted them, rather than an endpoint's pending ones
    in order through ``(endpoint_id, status, id)`` and stopping at the few a claim leases.
    A unary ``+`` is SQLite's own way to keep a term off the indexes (its query planner's
    page, https://sqlite.org/optoverview.html, "Disqualifying WHERE clause terms using
    unary-+"); other databases get the column.
    """

    inherit_cache = True
    name = "unindexed"


@compiles(_Unindexed)
def _as_it_is(element: _Unindexed, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.clauses, **kw)


@compiles(_Unindexed, "sqlite")
def _unary_plus(element: _Unindexed, compiler: SQLCompiler, **kw: Any) -> str:
    return "+" + compiler.process(element.clauses, **kw)


#: When a notification is next due, compared without SQLite's index on it (above).
_next_attempt_at = sa.type_coerce(_Unindexed(_c.next_attempt_at), _c.next_attempt_at.type)


def _first_of_its_queue() -> Any:
    """Return the condition: no earlier notification of the row's queue is pending.

    A queue is one submission's notifications to one endpoint, and the row must be its
    first pending one, looked up per row through the index on ``(submission_id, id)`` (a
    submission has a few). Not written as ``NOT EXISTS``: on a table without statistics (a
    new database) PostgreSQL ran the anti-join's inner side as a scan of the endpoint's
    pending rows for every row: 9 million rows for a backlog of 3,000, 1.5 s a claim. The
    lookup compares the endpoint and the status as ``… || ''``, which no index answers, so
    the submission's index is the only one left to it: without statistics, or with
    statistics taken before a burst (every row delivered then), PostgreSQL otherwise read
    the lookup through the endpoint's or the status's index and filtered the thousands of
    pending rows there at each lookup (a claim of four, 280 ms for a burst of 2,700).
    """
    first = (
        sa.select(_earlier.c.id)
        .where(
            _earlier.c.submission_id == _c.submission_id,
            _earlier.c.endpoint_id.concat("") == _c.endpoint_id,
            _earlier.c.status.concat("") == _PENDING,
        )
        .order_by(_earlier.c.submission_id, _earlier.c.id)
        .limit(1)
        .scalar_subquery()
    )
    return _c.id == first


def _waiting(now: Any, due_before: Any) -> Any:
    """Return the condition: pending, its time come, and nobody holding a live lease on it.

    ``due_before``: its next attempt time must have come by then (``now``, or earlier for
    a run that sends only what was due when it started).
    """
    return sa.and_(_c.status == _PENDING, _next_attempt_at <= due_before, leases.free(_table, now))


def _ready(now: Any, due_before: Any) -> Any:
    """Return the condition a row must meet to be sent now, its endpoint aside: waiting
    (:func:`_waiting`), and the first pending one of its submission to its endpoint."""
    return sa.and_(_waiting(now, due_before), _first_of_its_queue())


def _due(now: Any, due_before: Any) -> Any:
    """Return the condition a row must meet to be sent now (:func:`_ready`).

    Its endpoint must be active too: a disabled endpoint's notifications wait, neither sent
    nor dead.
    """
    active = (
        sa.select(_endpoints.c.id)
        .where(_endpoints.c.id == _c.endpoint_id, _endpoints.c.status == "active")
        .exists()
    )
    return sa.and_(_ready(now, due_before), active)


# Built once: the idle worker runs this every poll.
_PEEK = sa.select(_c.id).where(_due(sa.bindparam("now"), sa.bindparam("due_before"))).limit(1)


def peek_due(
    conn: Connection,
    *,
    now: datetime,
    due_before: datetime | None = None,
    busy: Sequence[str] = (),
) -> bool:
    """Tell whether any notification is due, leasing nothing (a cheap read).

    Not counting those of the ``busy`` endpoints (no room for more of theirs now).
    """
    params = {"now": now, "due_before": now if due_before is None else due_before}
    query = _PEEK if not busy else _PEEK.where(_c.endpoint_id.not_in(list(busy)))
    return conn.execute(query, params).first() is not None


def due_endpoints(
    conn: Connection, *, now: datetime, due_before: datetime | None = None
) -> list[str]:
    """Return the endpoints that have notifications due now.

    Each active endpoint is asked whether it has a pending one whose time has come and
    that nobody leases: the search stops at the first. Whether it is the first of its
    queue is left to the claim (its endpoint's rows in order): an endpoint whose due rows
    all wait behind earlier ones is named, and its claim leases nothing.
    """
    waiting = _waiting(now, now if due_before is None else due_before)
    has_due = sa.select(_c.id).where(_c.endpoint_id == _endpoints.c.id, waiting).exists()
    query = sa.select(_endpoints.c.id).where(_endpoints.c.status == "active", has_due)
    return [str(row[0]) for row in conn.execute(query)]


def claim_due(
    conn: Connection,
    *,
    now: datetime,
    limit: int,
    owner: str,
    lease_seconds: float,
    due_before: datetime | None = None,
    endpoint_id: str | None = None,
) -> list[Leased]:
    """Lease up to ``limit`` due notifications (of one endpoint), oldest first, by id."""
    where = _due(now, now if due_before is None else due_before)
    if endpoint_id is not None:
        where = sa.and_(_c.endpoint_id == endpoint_id, where)
    chosen = sa.select(_c.id).where(where).order_by(_c.id).limit(limit)
    rows = leases.lease_rows(
        conn, _table, chosen, returning=_FIELDS, now=now, owner=owner, lease_seconds=lease_seconds
    )
    return [Leased(*row) for row in rows]


def _mine(notification_id: int, owner: str) -> Any:
    return sa.and_(_c.id == notification_id, leases.held_by(_table, owner), _c.status == _PENDING)


@dataclass(frozen=True, slots=True)
class Ended:
    """One attempt's outcome to record: its notification, when it started, status, error."""

    row: Leased
    attempted_at: datetime
    status: int | None
    error: str | None
    seconds: float
    response: str | None


_HELD = (
    sa.select(_c.id)
    .where(
        _c.id.in_(sa.bindparam("ids", expanding=True)),
        leases.held_by(_table, sa.bindparam("owner")),
        _c.status == _PENDING,
    )
    .with_for_update()
)
_DELIVERED = (
    sa.update(_table)
    .where(_c.id == sa.bindparam("_id"))
    .values(
        status=NotificationStatus.DELIVERED.value,
        attempts=_c.attempts + 1,
        last_attempt_at=sa.bindparam("_attempted_at"),
        last_status=sa.bindparam("_status"),
        last_error=None,
        delivered_at=sa.bindparam("_now"),
        **leases.given_back(),
    )
)


def record_delivered(
    conn: Connection, delivered: Sequence[Ended], *, owner: str, now: datetime
) -> set[int]:
    """Mark notifications delivered where ``owner`` still holds them; return those ids.

    Two statements for the whole batch: the rows still held are read and locked, then
    each is written with its own attempt's time and status.
    """
    if not delivered:
        return set()
    ids = [ended.row.id for ended in delivered]
    held = set(conn.execute(_HELD, {"ids": ids, "owner": owner}).scalars())
    if held:
        conn.execute(
            _DELIVERED,
            [
                {
                    "_id": ended.row.id,
                    "_attempted_at": ended.attempted_at,
                    "_status": ended.status,
                    "_now": now,
                }
                for ended in delivered
                if ended.row.id in held
            ],
        )
    return held


def record_failed(
    conn: Connection,
    notification_id: int,
    *,
    owner: str,
    attempted_at: datetime,
    status: int | None,
    error: str,
    next_attempt_at: datetime | None,
) -> bool:
    """Record a failed attempt: retry at ``next_attempt_at``, or ``dead`` when it is None.

    Only over ``owner``'s own lease; tell whether it held it.
    """
    values: dict[str, Any] = {
        "attempts": _c.attempts + 1,
        "last_attempt_at": attempted_at,
        "last_status": status,
        "last_error": error[:500],
        **leases.given_back(),
    }
    if next_attempt_at is None:
        values["status"] = NotificationStatus.DEAD.value
    else:
        values["next_attempt_at"] = next_attempt_at
    result = conn.execute(sa.update(_table).where(_mine(notification_id, owner)).values(values))
    return bool(result.rowcount)


def record_attempts(conn: Connection, ended: Sequence[Ended]) -> None:
    """Keep each attempt: when, the status or error, how long, the answer's first kilobyte.

    One INSERT of many rows for the batch.
    """
    if not ended:
        return
    conn.execute(
        sa.insert(_attempts),
        [
            {
                "notification_id": item.row.id,
                "endpoint_id": item.row.endpoint_id,
                "attempted_at": item.attempted_at,
                "status_code": item.status,
                "error": item.error[:500] if item.error else None,
                "seconds": item.seconds,
                "response": item.response[:RESPONSE_KEPT] if item.response else None,
            }
            for item in ended
        ],
    )
