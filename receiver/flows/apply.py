"""Apply a job state to a submission: the one write path of every status change.

Webhook deliveries, re-matched and replayed deliveries, reconciler polls (and their
``expired`` verdict), submits and the application API all change a submission through
:func:`apply_job_state`: the rules decide (``receiver.core.transitions``), the inbox row of a
delivery is stored first, and the notifications the change owes are written in the same
transaction (``receiver.flows.outbox``).

SQLAlchemy Core statements, built once: this is the webhook's hot path.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection
from sqlalchemy.dialects import postgresql

from receiver.core.jobstate import JobState, clamp_future
from receiver.core.transitions import Change, SubmissionRow, decide_transition
from receiver.flows.outbox import ENDPOINTS_VALUE, Outbox
from receiver.store.hotsql import HotStatement
from receiver.store.inbox import EVENT_COLUMNS, insert_event
from receiver.store.models import Submission, WebhookEvent

__all__ = ["apply_job_state", "find_submission", "is_lookup"]

log = logging.getLogger(__name__)

_submissions = Submission.__table__  # type: ignore[attr-defined]
_events = WebhookEvent.__table__  # type: ignore[attr-defined]
_columns = [_submissions.c[name] for name in SubmissionRow.__slots__]
_BY_JOB_ID = HotStatement(
    sa.select(*_columns).where(_submissions.c.job_id == sa.bindparam("key")).with_for_update()
)
_BY_SUBMISSION_ID = HotStatement(
    sa.select(*_columns)
    .where(_submissions.c.submission_id == sa.bindparam("key"))
    .with_for_update()
)


def _update_statement(names: tuple[str, ...]) -> sa.Update:
    return (
        sa.update(_submissions)
        .where(_submissions.c.id == sa.bindparam("_id"))
        .values({name: sa.bindparam(f"_{name}") for name in (*names, "updated_at")})
    )


@cache
def _update(names: tuple[str, ...]) -> HotStatement:
    """Return the UPDATE that sets exactly ``names`` (and ``updated_at``) on one row.

    Built and compiled once per set of columns; setting only the columns that change keeps
    the indexes on the others untouched.
    """
    return HotStatement(_update_statement(names))


@cache
def _update_with_event(names: tuple[str, ...]) -> HotStatement:
    """Return :func:`_update` with the inbox row inserted first, in the same statement.

    ``WITH event AS (INSERT … ON CONFLICT DO NOTHING RETURNING id) UPDATE … WHERE … AND
    EXISTS (SELECT FROM event) RETURNING (SELECT id FROM event), <the endpoints>``: one
    round trip on PostgreSQL, and a delivery whose key is taken changes nothing. The
    endpoints a status change is announced to come back with it (``ENDPOINTS_VALUE``), so
    announcing it needs no read of its own.
    """
    event = (
        postgresql.insert(_events)
        .values({name: sa.bindparam(f"event_{name}") for name in EVENT_COLUMNS})
        .on_conflict_do_nothing(index_elements=[_events.c.dedupe_key])
        .returning(_events.c.id)
        .cte("event")
    )
    return HotStatement(
        _update_statement(names)
        .where(sa.exists(sa.select(event.c.id)))
        .returning(sa.select(event.c.id).scalar_subquery(), ENDPOINTS_VALUE)
        .add_cte(event)
    )


def is_lookup(sql: str | None) -> bool:
    """Tell whether a failed statement was :func:`find_submission`'s, a delivery's first."""
    return _BY_JOB_ID.ran(sql) or _BY_SUBMISSION_ID.ran(sql)


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
        rows = statement.execute(conn, {"key": key})
        if rows:
            return SubmissionRow(*rows[0])
    return None


def apply_job_state(
    conn: Connection,
    submission: SubmissionRow,
    state: JobState,
    *,
    now: datetime,
    outbox: Outbox,
    event: Mapping[str, Any] | None = None,
) -> Change | None:
    """Decide what ``state`` does to ``submission``, write it and return the verdict.

    ``submission`` must come from :func:`find_submission` in the same transaction. With
    ``event`` (an inbox row, see ``receiver.store.inbox.event_values``; its outcome and reason
    are the verdict's) the row is inserted *before* anything else is written, and when its
    key was already stored nothing is written at all and ``None`` is returned: no rollback
    is needed to undo a change that was never made. A provider timestamp too far in the
    future is clamped first (``clamp_future``), and logged.
    """
    state = _clamped(state, now)
    change = decide_transition(submission, state)
    endpoints = None
    if event is not None:
        stored = {
            **event,
            "outcome": change.outcome.value,
            "reason": change.reason[:500] if change.reason else None,
        }
        written, endpoints = _store_with_event(conn, submission, change, now=now, event=stored)
        if not written:
            return None
    elif change.values is not None:
        _update(tuple(sorted(change.values))).execute(conn, _params(submission, change, now))
    new_status = change.new_status
    if new_status is not None and new_status != submission.status:
        outbox.announce(
            conn,
            submission.id,
            old_status=submission.status,
            new_status=new_status,
            is_test=submission.is_test,
            now=now,
            endpoints=endpoints,
        )
    return change


def _clamped(state: JobState, now: datetime) -> JobState:
    clamped = clamp_future(state, now=now)
    if clamped is not state:
        log.warning(
            "provider timestamp %s of job %s is in the future; clamped to %s",
            state.updated_at.isoformat() if state.updated_at else None,
            state.job_id,
            clamped.updated_at.isoformat() if clamped.updated_at else None,
            extra={"data": {"event": "future_timestamp_clamped", "job_id": state.job_id}},
        )
    return clamped


def _params(submission: SubmissionRow, change: Change, now: datetime) -> dict[str, Any]:
    assert change.values is not None
    params = {f"_{name}": value for name, value in change.values.items()}
    params["_id"] = submission.id
    params["_updated_at"] = now
    return params


def _store_with_event(
    conn: Connection,
    submission: SubmissionRow,
    change: Change,
    *,
    now: datetime,
    event: Mapping[str, Any],
) -> tuple[bool, Sequence[Sequence[Any]] | None]:
    """Insert the inbox row, then the change only if the row was new.

    Returns whether they were written, and the notification endpoints when the statement
    read them too (PostgreSQL), else None.
    """
    if change.values is None:
        return insert_event(conn, dict(event)) is not None, None
    names = tuple(sorted(change.values))
    params = _params(submission, change, now)
    if conn.dialect.name == "postgresql":
        params.update({f"event_{name}": event[name] for name in EVENT_COLUMNS})
        rows = _update_with_event(names).execute(conn, params)
        if not rows or rows[0][0] is None:
            return False, None
        return True, rows[0][1]
    # SQLite has no INSERT inside WITH: the inbox row goes first, and guards the change.
    if insert_event(conn, dict(event)) is None:
        return False, None
    _update(names).execute(conn, params)
    return True, None
