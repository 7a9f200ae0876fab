"""Which submissions the reconciler polls: not final, with a job, unchanged for a while.

Shared by the worker (which leases them, ``reconcile.claims``) and the pages and commands
that say how many are stuck right now.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection

from receiver.store import leases
from receiver.store.models import FINAL_STATUSES, Status, Submission

__all__ = [
    "ACTIVE_STATUSES",
    "awaiting_job",
    "count_not_due",
    "count_stuck",
    "due",
    "lease_free",
    "unsubmitted",
]

#: Statuses the reconciler still polls.
ACTIVE_STATUSES = tuple(status.value for status in Status if status not in FINAL_STATUSES)

_table = Submission.__table__  # type: ignore[attr-defined]
_c = _table.c


def lease_free(now: datetime) -> Any:
    """Return the condition: no reconciler holds a live lease on the row."""
    return leases.free(_table, now)


def _pollable() -> Any:
    # Test submissions (made by `trigger`) have no real job: nothing to ask ittybit.
    return sa.and_(_c.status.in_(ACTIVE_STATUSES), _c.job_id.is_not(None), _c.is_test.is_(False))


def due(now: datetime, stuck_before: datetime) -> Any:
    """Return the condition of a submission due for a poll now."""
    return sa.and_(
        _pollable(),
        _c.updated_at <= stuck_before,
        sa.or_(_c.next_poll_at.is_(None), _c.next_poll_at <= now),
        lease_free(now),
    )


def count_stuck(conn: Connection, *, now: datetime, stuck_before: datetime) -> int:
    """Return how many submissions are due for polling now."""
    statement = sa.select(sa.func.count()).select_from(_table).where(due(now, stuck_before))
    return int(conn.execute(statement).scalar_one())


def count_not_due(conn: Connection, *, now: datetime, stuck_before: datetime) -> tuple[int, int]:
    """Return how many running jobs are too recent to poll, and how many wait for a re-poll."""
    recent = sa.select(sa.func.count()).where(_pollable(), _c.updated_at > stuck_before)
    backing_off = sa.select(sa.func.count()).where(
        _pollable(), _c.updated_at <= stuck_before, _c.next_poll_at > now
    )
    return (
        int(conn.execute(recent.select_from(_table)).scalar_one()),
        int(conn.execute(backing_off.select_from(_table)).scalar_one()),
    )


def awaiting_job(now: datetime, requested_before: datetime) -> Any:
    """Return the condition of a pending submission whose asked-for job the worker creates.

    A job was asked for (``submit`` or the API) before ``requested_before`` and none was
    made yet; not a test; its next try is due and no one holds a live lease on it.
    """
    return sa.and_(
        _c.status == Status.PENDING.value,
        _c.job_id.is_(None),
        _c.job_requested_at.is_not(None),
        _c.job_requested_at <= requested_before,
        _c.is_test.is_(False),
        sa.or_(_c.next_poll_at.is_(None), _c.next_poll_at <= now),
        lease_free(now),
    )


def unsubmitted(
    conn: Connection, *, stuck_before: datetime, sample: int = 5
) -> tuple[int, list[str]]:
    """Return how many ``pending`` submissions have no job and none asked for, and a few ids.

    Added or registered without a job (its job made elsewhere, or never): the worker does
    not create those; ``submit`` does, or their webhooks match them.
    """
    where = sa.and_(
        _c.status == Status.PENDING.value,
        _c.job_id.is_(None),
        _c.job_requested_at.is_(None),
        _c.updated_at <= stuck_before,
        _c.is_test.is_(False),
    )
    count = int(
        conn.execute(sa.select(sa.func.count()).select_from(_table).where(where)).scalar_one()
    )
    ids: list[str] = []
    if count:
        statement = sa.select(_c.submission_id).where(where).order_by(_c.id).limit(sample)
        ids = list(conn.execute(statement).scalars())
    return count, ids
