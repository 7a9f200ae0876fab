"""Apply a job state to a submission: the one write path shared by webhook and reconciler.

SQLAlchemy Core statements, built once: this is the webhook's hot path.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from functools import cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection
from sqlalchemy.dialects import postgresql

from receiver.inbox import insert_event
from receiver.jobstate import JobState
from receiver.models import Submission, WebhookEvent
from receiver.transitions import Change, SubmissionRow, decide_transition

__all__ = ["apply_change", "apply_job_state", "find_submission"]

_submissions = Submission.__table__  # type: ignore[attr-defined]
_events = WebhookEvent.__table__  # type: ignore[attr-defined]
_columns = [_submissions.c[name] for name in SubmissionRow.__slots__]
_BY_JOB_ID = (
    sa.select(*_columns).where(_submissions.c.job_id == sa.bindparam("key")).with_for_update()
)
_BY_SUBMISSION_ID = (
    sa.select(*_columns)
    .where(_submissions.c.submission_id == sa.bindparam("key"))
    .with_for_update()
)
_EVENT_COLUMNS = tuple(column.key for column in _events.c if column.key != "id")


@cache
def _update(names: tuple[str, ...]) -> sa.Update:
    """Return the UPDATE that sets exactly ``names`` (and ``updated_at``) on one row.

    Built once per set of columns, so SQLAlchemy reuses its compiled form; setting only
    the columns that change keeps the indexes on the others untouched.
    """
    return (
        sa.update(_submissions)
        .where(_submissions.c.id == sa.bindparam("_id"))
        .values({name: sa.bindparam(f"_{name}") for name in (*names, "updated_at")})
    )


@cache
def _update_with_event(names: tuple[str, ...]) -> sa.Update:
    """Return :func:`_update` with the inbox row inserted in the same statement (PostgreSQL).

    ``WITH event AS (INSERT … ON CONFLICT DO NOTHING RETURNING id) UPDATE … WHERE … AND
    EXISTS (SELECT FROM event) RETURNING (SELECT id FROM event)``: one round trip instead
    of two, and a delivery whose key is taken changes nothing, so nothing is rolled back.
    """
    event = (
        postgresql.insert(_events)
        .values({name: sa.bindparam(f"event_{name}") for name in _EVENT_COLUMNS})
        .on_conflict_do_nothing(index_elements=[_events.c.dedupe_key])
        .returning(_events.c.id)
        .cte("event")
    )
    return (
        _update(names)
        .where(sa.exists(sa.select(event.c.id)))
        .returning(sa.select(event.c.id).scalar_subquery())
        .add_cte(event)
    )


def find_submission(
    conn: Connection, *, job_id: str | None = None, submission_id: str | None = None
) -> SubmissionRow | None:
    """Return the submission with ``job_id``, else the one with ``submission_id``, locked.

    The row stays locked (PostgreSQL ``FOR UPDATE``; SQLite holds the write lock from
    ``BEGIN IMMEDIATE``) until the transaction ends, so deciding and writing cannot race.
    """
    for statement, key in ((_BY_JOB_ID, job_id), (_BY_SUBMISSION_ID, submission_id)):
        if key is None:
            continue
        row = conn.execute(statement, {"key": key}).first()
        if row is not None:
            return SubmissionRow(*row)
    return None


def apply_change(
    conn: Connection,
    submission: SubmissionRow,
    change: Change,
    *,
    now: datetime,
    event: Mapping[str, Any] | None = None,
) -> int | None:
    """Write ``change`` (from :func:`decide_transition`) on ``submission``.

    With ``event`` (an inbox row, see ``receiver.inbox.event_values``) the row is inserted
    too, and its id returned, or ``None`` when its key was already stored: the caller must
    then roll back. On PostgreSQL a change and its inbox row go in one statement (and a
    taken key writes nothing at all).
    """
    if change.values is None:
        return None if event is None else insert_event(conn, dict(event))
    names = tuple(sorted(change.values))
    params = {f"_{name}": value for name, value in change.values.items()}
    params["_id"] = submission.id
    params["_updated_at"] = now
    if event is None:
        conn.execute(_update(names), params)
        return None
    if conn.dialect.name == "postgresql":
        params.update({f"event_{name}": event[name] for name in _EVENT_COLUMNS})
        stored = conn.execute(_update_with_event(names), params).scalar_one_or_none()
        return None if stored is None else int(stored)
    # SQLite has no INSERT inside WITH: two statements, and on a taken key the caller
    # rolls the change back with the transaction.
    conn.execute(_update(names), params)
    return insert_event(conn, dict(event))


def apply_job_state(
    conn: Connection, submission: SubmissionRow, state: JobState, *, now: datetime
) -> Change:
    """Write what ``state`` changes on ``submission`` and return the verdict.

    ``submission`` must come from :func:`find_submission` in the same transaction.
    """
    change = decide_transition(submission, state)
    apply_change(conn, submission, change, now=now)
    return change
