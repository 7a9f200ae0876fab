"""Which submissions the reconciler polls, and the leases that keep reconcilers apart.

A claim leases a batch in one short transaction and commits: ``FOR UPDATE SKIP LOCKED``
on PostgreSQL lets concurrent claimers pass each other by; on SQLite every transaction
begins IMMEDIATE, so claimers simply take turns. A crashed reconciler's lease runs out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection

from receiver.models import FINAL_STATUSES, Status, Submission

__all__ = [
    "ACTIVE_STATUSES",
    "StuckSubmission",
    "claim_named",
    "claim_stuck",
    "count_stuck",
    "peek_named",
    "peek_stuck",
    "release",
    "unsubmitted",
]

#: Statuses the reconciler still polls.
ACTIVE_STATUSES = tuple(status.value for status in Status if status not in FINAL_STATUSES)

_table = Submission.__table__  # type: ignore[attr-defined]
_c = _table.c


@dataclass(frozen=True, slots=True)
class StuckSubmission:
    """A submission picked for polling, as it was when picked."""

    id: int
    submission_id: str
    user_id: str
    job_id: str
    status: str
    created_at: datetime
    submitted_at: datetime | None
    poll_attempts: int

    @property
    def started_at(self) -> datetime:
        """When its job was sent to ittybit (or the submission created, if unknown)."""
        return self.submitted_at or self.created_at


_FIELDS = [_c[name] for name in StuckSubmission.__slots__]


def _lease_free(now: datetime) -> Any:
    return sa.or_(_c.lease_until.is_(None), _c.lease_until <= now)


def _due(now: datetime, stuck_before: datetime) -> Any:
    return sa.and_(
        _c.status.in_(ACTIVE_STATUSES),
        _c.job_id.is_not(None),
        _c.updated_at <= stuck_before,
        sa.or_(_c.next_poll_at.is_(None), _c.next_poll_at <= now),
        _lease_free(now),
    )


def _lease(
    conn: Connection, chosen: sa.Select[Any], *, now: datetime, owner: str, lease_seconds: float
) -> list[StuckSubmission]:
    due = chosen.with_for_update(skip_locked=True).cte("due")
    statement = (
        sa.update(_table)
        .where(_c.id == due.c.id)
        .values(lease_owner=owner, lease_until=now + timedelta(seconds=lease_seconds))
        .returning(*_FIELDS)
    )
    rows = [StuckSubmission(*row) for row in conn.execute(statement)]
    rows.sort(key=lambda row: row.id)
    return rows


def claim_stuck(
    conn: Connection,
    *,
    now: datetime,
    stuck_before: datetime,
    after_id: int,
    limit: int,
    owner: str,
    lease_seconds: float,
) -> list[StuckSubmission]:
    """Lease up to ``limit`` due submissions with ids above ``after_id``; return them by id.

    Due: not final, with a job id, unchanged since ``stuck_before``, its next poll time
    reached and no live lease held by anyone.
    """
    chosen = (
        sa.select(_c.id)
        .where(_due(now, stuck_before), _c.id > after_id)
        .order_by(_c.id)
        .limit(limit)
    )
    return _lease(conn, chosen, now=now, owner=owner, lease_seconds=lease_seconds)


def claim_named(
    conn: Connection,
    submission_ids: Sequence[str],
    *,
    now: datetime,
    owner: str,
    lease_seconds: float,
) -> list[StuckSubmission]:
    """Lease the named submissions that have a job id and no live lease, stuck or not."""
    chosen = sa.select(_c.id).where(
        _c.submission_id.in_(list(submission_ids)), _c.job_id.is_not(None), _lease_free(now)
    )
    return _lease(conn, chosen, now=now, owner=owner, lease_seconds=lease_seconds)


def peek_stuck(
    conn: Connection, *, now: datetime, stuck_before: datetime, after_id: int, limit: int
) -> list[StuckSubmission]:
    """Return what :func:`claim_stuck` would lease, leasing nothing (dry runs)."""
    statement = (
        sa.select(*_FIELDS)
        .where(_due(now, stuck_before), _c.id > after_id)
        .order_by(_c.id)
        .limit(limit)
    )
    return [StuckSubmission(*row) for row in conn.execute(statement)]


def peek_named(conn: Connection, submission_ids: Sequence[str]) -> list[StuckSubmission]:
    """Return the named submissions that have a job id, leasing nothing (dry runs)."""
    statement = (
        sa.select(*_FIELDS)
        .where(_c.submission_id.in_(list(submission_ids)), _c.job_id.is_not(None))
        .order_by(_c.id)
    )
    return [StuckSubmission(*row) for row in conn.execute(statement)]


def release(conn: Connection, ids: Sequence[int], *, owner: str) -> None:
    """Give back leases ``owner`` holds on ``ids`` without polling them."""
    if ids:
        conn.execute(
            sa.update(_table)
            .where(_c.id.in_(list(ids)), _c.lease_owner == owner)
            .values(lease_owner=None, lease_until=None)
        )


def count_stuck(conn: Connection, *, now: datetime, stuck_before: datetime) -> int:
    """Return how many submissions are due for polling now."""
    statement = sa.select(sa.func.count()).select_from(_table).where(_due(now, stuck_before))
    return int(conn.execute(statement).scalar_one())


def unsubmitted(
    conn: Connection, *, stuck_before: datetime, sample: int = 5
) -> tuple[int, list[str]]:
    """Return how many ``pending`` submissions never got a job, and a few of their ids."""
    where = sa.and_(
        _c.status == Status.PENDING.value, _c.job_id.is_(None), _c.updated_at <= stuck_before
    )
    count = int(
        conn.execute(sa.select(sa.func.count()).select_from(_table).where(where)).scalar_one()
    )
    ids: list[str] = []
    if count:
        statement = sa.select(_c.submission_id).where(where).order_by(_c.id).limit(sample)
        ids = list(conn.execute(statement).scalars())
    return count, ids
