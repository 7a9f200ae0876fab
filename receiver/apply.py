"""Apply a job state to a submission: the one write path shared by webhook and reconciler.

SQLAlchemy Core statements, built once: this is the webhook's hot path.
"""

from __future__ import annotations

from datetime import datetime
from functools import cache

import sqlalchemy as sa
from sqlalchemy import Connection

from receiver.jobstate import JobState
from receiver.models import Submission
from receiver.transitions import Change, SubmissionRow, decide_transition

__all__ = ["apply_job_state", "find_submission"]

_submissions = Submission.__table__  # type: ignore[attr-defined]
_columns = [_submissions.c[name] for name in SubmissionRow.__slots__]
_BY_JOB_ID = (
    sa.select(*_columns).where(_submissions.c.job_id == sa.bindparam("key")).with_for_update()
)
_BY_SUBMISSION_ID = (
    sa.select(*_columns)
    .where(_submissions.c.submission_id == sa.bindparam("key"))
    .with_for_update()
)


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


def apply_job_state(
    conn: Connection, submission: SubmissionRow, state: JobState, *, now: datetime
) -> Change:
    """Write what ``state`` changes on ``submission`` and return the verdict.

    ``submission`` must come from :func:`find_submission` in the same transaction.
    """
    change = decide_transition(submission, state)
    if change.values is not None:
        names = tuple(sorted(change.values))
        params = {f"_{name}": value for name, value in change.values.items()}
        params["_id"] = submission.id
        params["_updated_at"] = now
        conn.execute(_update(names), params)
    return change
