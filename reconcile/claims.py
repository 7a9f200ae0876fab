"""Leases that keep reconcilers apart while they poll the submissions due.

A claim leases a batch in one short transaction and commits (``receiver.store.leases``:
concurrent claimers pass each other by on PostgreSQL, take turns on SQLite). A crashed
reconciler's lease runs out; a live one renews the leases of the rows it still holds.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from receiver.flows.polling import PolledJob
from receiver.store import leases
from receiver.store.models import Submission
from receiver.store.stuck import awaiting_job, due

__all__ = [
    "PendingJob",
    "claim_awaiting_job",
    "claim_stuck",
    "lease_named",
    "peek_awaiting_job",
    "peek_named",
    "peek_stuck",
    "release",
    "renew",
]

log = logging.getLogger("reconcile.passes")

_table = Submission.__table__  # type: ignore[attr-defined]
_c = _table.c
_FIELDS = [_c[name] for name in PolledJob.__slots__]


def _lease(
    conn: Connection, chosen: sa.Select[Any], *, now: datetime, owner: str, lease_seconds: float
) -> list[PolledJob]:
    rows = leases.lease_rows(
        conn, _table, chosen, returning=_FIELDS, now=now, owner=owner, lease_seconds=lease_seconds
    )
    return [PolledJob(*row) for row in rows]


def claim_stuck(
    conn: Connection,
    *,
    now: datetime,
    stuck_before: datetime,
    after_id: int,
    limit: int,
    owner: str,
    lease_seconds: float,
) -> list[PolledJob]:
    """Lease up to ``limit`` due submissions with ids above ``after_id``; return them by id.

    Due: not final, not a test, with a job id, unchanged since ``stuck_before``, its next
    poll time reached and no live lease held by anyone.
    """
    chosen = (
        sa.select(_c.id)
        .where(due(now, stuck_before), _c.id > after_id)
        .order_by(_c.id)
        .limit(limit)
    )
    return _lease(conn, chosen, now=now, owner=owner, lease_seconds=lease_seconds)


def _named(submission_ids: Sequence[str]) -> Any:
    return sa.and_(
        _c.submission_id.in_(list(submission_ids)), _c.job_id.is_not(None), _c.is_test.is_(False)
    )


@contextmanager
def lease_named(
    engine: Engine, submission_id: str, *, now: datetime, owner: str, lease_seconds: float
) -> Iterator[bool]:
    """Lease one named submission for the ``with`` block and yield True, or yield False
    when another reconciler holds its live lease; the lease is given back after.

    The guard ``reconcile --submission`` gives "ask ittybit now"
    (``receiver.flows.polling.ask_ittybit_now``): the same lease a pass takes on the rows it
    polls, so the command never polls a job a running worker has in hand.
    """
    with engine.begin() as conn:
        row = leases.lease_one(
            conn,
            _table,
            _c.submission_id == submission_id,
            returning=[_c.id],
            now=now,
            owner=owner,
            lease_seconds=lease_seconds,
        )
    if row is None:
        yield False
        return
    try:
        yield True
    finally:
        try:
            with engine.begin() as conn:
                release(conn, [row.id], owner=owner)
        except SQLAlchemyError as exc:
            log.warning("could not release the lease on %s; it expires: %s", submission_id, exc)


def peek_stuck(
    conn: Connection, *, now: datetime, stuck_before: datetime, after_id: int, limit: int
) -> list[PolledJob]:
    """Return what :func:`claim_stuck` would lease, leasing nothing (dry runs)."""
    statement = (
        sa.select(*_FIELDS)
        .where(due(now, stuck_before), _c.id > after_id)
        .order_by(_c.id)
        .limit(limit)
    )
    return [PolledJob(*row) for row in conn.execute(statement)]


def peek_named(conn: Connection, submission_ids: Sequence[str]) -> list[PolledJob]:
    """Return the named submissions that have a job id, leasing nothing (dry runs)."""
    statement = sa.select(*_FIELDS).where(_named(submission_ids)).order_by(_c.id)
    return [PolledJob(*row) for row in conn.execute(statement)]


def release(conn: Connection, ids: Sequence[int], *, owner: str) -> None:
    """Give back leases ``owner`` holds on ``ids`` without polling them."""
    if ids:
        leases.release(conn, _table, _c.id.in_(list(ids)), owner=owner)


def renew(
    conn: Connection, ids: Sequence[int], *, owner: str, now: datetime, lease_seconds: float
) -> int:
    """Extend the leases ``owner`` still holds on ``ids``; return how many it held."""
    if not ids:
        return 0
    where = _c.id.in_(list(ids))
    return leases.renew(conn, _table, where, owner=owner, now=now, lease_seconds=lease_seconds)


@dataclass(frozen=True, slots=True)
class PendingJob:
    """A pending submission whose asked-for job is still to be created."""

    id: int
    submission_id: str
    user_id: str
    input_url: str
    job_kind: str
    job_options: dict[str, Any] | None
    poll_attempts: int


_PENDING_FIELDS = [_c[name] for name in PendingJob.__slots__]


def claim_awaiting_job(
    conn: Connection,
    *,
    now: datetime,
    requested_before: datetime,
    limit: int,
    owner: str,
    lease_seconds: float,
) -> list[PendingJob]:
    """Lease up to ``limit`` submissions whose job the worker should create now, by id.

    Leased like the polled ones, so two workers never both create the same job (and the
    idempotency key would make ittybit answer the same job anyway).
    """
    chosen = (
        sa.select(_c.id).where(awaiting_job(now, requested_before)).order_by(_c.id).limit(limit)
    )
    rows = leases.lease_rows(
        conn,
        _table,
        chosen,
        returning=_PENDING_FIELDS,
        now=now,
        owner=owner,
        lease_seconds=lease_seconds,
    )
    return [PendingJob(*row) for row in rows]


def peek_awaiting_job(
    conn: Connection, *, now: datetime, requested_before: datetime, limit: int
) -> list[PendingJob]:
    """Return what :func:`claim_awaiting_job` would lease, leasing nothing (dry runs)."""
    statement = (
        sa.select(*_PENDING_FIELDS)
        .where(awaiting_job(now, requested_before))
        .order_by(_c.id)
        .limit(limit)
    )
    return [PendingJob(*row) for row in conn.execute(statement)]
