"""Match inbox events kept as ``unmatched`` to submissions that exist now, and apply them.

A webhook can beat its submission into the database (a job created before the
import ran, a submission added by hand later). The event was stored as
``unmatched``; once a submission with its job id or submission id exists, it is
applied the way the webhook would have applied it, and its outcome updated.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy import Connection
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from receiver.apply import apply_job_state
from receiver.deliveries import match_stored
from receiver.inbox import set_outcome
from receiver.jobstate import InvalidPayload, NotAJob, normalise, parse_json
from receiver.models import Outcome, Submission, WebhookEvent
from receiver.transitions import decide_transition

__all__ = ["RematchReport", "rematch_event", "rematch_unmatched"]

log = logging.getLogger(__name__)

_events = WebhookEvent.__table__  # type: ignore[attr-defined]
_submissions = Submission.__table__  # type: ignore[attr-defined]

# Only events some submission now answers to: the rest stay put without being read.
_CANDIDATES = (
    sa.select(_events.c.id)
    .where(
        _events.c.outcome == Outcome.UNMATCHED.value,
        _events.c.id > sa.bindparam("after_id"),
        sa.or_(
            sa.exists().where(_submissions.c.job_id == _events.c.job_id),
            sa.exists().where(_submissions.c.submission_id == _events.c.submission_id),
        ),
    )
    .order_by(_events.c.id)
    .limit(sa.bindparam("limit"))
)
_LOCK_EVENT = (
    sa.select(_events.c.body, _events.c.source, _events.c.submission_id, _events.c.claimed_user_id)
    .where(_events.c.id == sa.bindparam("event_id"), _events.c.outcome == Outcome.UNMATCHED.value)
    .with_for_update(skip_locked=True)
)


@dataclass(slots=True)
class RematchReport:
    """What re-matching did: events matched (applied, duplicate or stale) or rejected."""

    matched: int = 0
    rejected: int = 0
    errors: int = 0


def rematch_event(
    conn: Connection, event_id: int, *, now: datetime, write: bool = True
) -> Outcome | None:
    """Match one unmatched event inside the caller's transaction; return its new outcome.

    ``None`` means it stays unmatched (or another reconciler holds it). With
    ``write=False`` nothing is written: the outcome is what would happen.
    """
    row = conn.execute(_LOCK_EVENT, {"event_id": event_id}).first()
    if row is None:
        return None
    body, source, wanted, claimed_user_id = row
    state = normalise(parse_json(body.encode("utf-8")))
    submission, conflict = match_stored(
        conn, state, source=source, wanted=wanted, claimed_user_id=claimed_user_id
    )
    if submission is None:
        return None
    if conflict is not None:
        if write:
            set_outcome(
                conn,
                event_id,
                outcome=Outcome.REJECTED,
                reason=f"matched later, refused: {conflict}",
                submission_id=submission.submission_id,
            )
        return Outcome.REJECTED
    if write:
        change = apply_job_state(conn, submission, state, now=now)
        set_outcome(
            conn,
            event_id,
            outcome=change.outcome,
            reason=f"matched later: {change.reason or 'applied'}",
            submission_id=submission.submission_id,
        )
    else:
        change = decide_transition(submission, state)
    log.info(
        "re-matched event %d job=%s submission=%s outcome=%s",
        event_id,
        state.job_id,
        submission.submission_id,
        change.outcome.value,
    )
    return change.outcome


def rematch_unmatched(
    engine: Engine, *, now: datetime, batch: int = 100, dry_run: bool = False
) -> RematchReport:
    """Re-match every unmatched event a submission now answers to, one transaction each."""
    report = RematchReport()
    after_id = 0
    while True:
        with engine.connect() as conn:
            ids = list(conn.execute(_CANDIDATES, {"after_id": after_id, "limit": batch}).scalars())
        if not ids:
            return report
        after_id = ids[-1]
        for event_id in ids:
            outcome = _rematch_one(engine, event_id, now=now, dry_run=dry_run, report=report)
            if outcome is Outcome.REJECTED:
                report.rejected += 1
            elif outcome is not None:
                report.matched += 1
        if len(ids) < batch:
            return report


def _rematch_one(
    engine: Engine, event_id: int, *, now: datetime, dry_run: bool, report: RematchReport
) -> Outcome | None:
    try:
        with engine.connect() as conn, conn.begin() as transaction:
            outcome = rematch_event(conn, event_id, now=now, write=not dry_run)
            if dry_run:
                transaction.rollback()
            return outcome
    except (InvalidPayload, NotAJob) as exc:
        # It was readable when it arrived; a change in the normaliser must not stop the pass.
        log.warning("event %d can no longer be read: %s", event_id, exc)
        report.errors += 1
        return None
    except IntegrityError:
        # Filling in the job id collided with another submission that already owns it.
        with engine.begin() as conn:
            conn.execute(
                sa.update(_events)
                .where(_events.c.id == event_id)
                .values(
                    outcome=Outcome.REJECTED.value,
                    reason="matched later, refused: job id belongs to another submission",
                )
            )
        return Outcome.REJECTED
