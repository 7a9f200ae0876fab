"""Apply stored deliveries again: re-matching the ``unmatched`` ones, replaying any by hand.

A webhook can beat its submission into the database (a job created before the import ran,
a submission added by hand later): it is stored as ``unmatched`` and, once a submission
with its job id or submission id exists, applied the way the webhook would have been. On
call, ``events replay`` applies any stored delivery again. Both go through one function,
:func:`settle_stored`, and through the same ``apply_job_state`` as a live delivery, so a
state already recorded comes back ``duplicate`` and changes nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from receiver.core.jobstate import InvalidPayload, JobState, NotAJob, normalise, parse_json
from receiver.core.transitions import Change, SubmissionRow, decide_transition
from receiver.flows.apply import apply_job_state
from receiver.flows.delivery import match_stored
from receiver.flows.outbox import Outbox
from receiver.store.inbox import set_outcome
from receiver.store.models import Outcome, Submission, WebhookEvent, is_row_id

__all__ = [
    "RematchReport",
    "ReplayError",
    "Replayed",
    "rematch_event",
    "rematch_for",
    "rematch_unmatched",
    "replay_event",
    "replay_one",
    "settle_stored",
]

log = logging.getLogger(__name__)

_events = WebhookEvent.__table__  # type: ignore[attr-defined]
_submissions = Submission.__table__  # type: ignore[attr-defined]
_STORED = (
    _events.c.id,
    _events.c.outcome,
    _events.c.source,
    _events.c.submission_id,
    _events.c.body,
    _events.c.claimed_user_id,
)

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
_LOCK_UNMATCHED = (
    sa.select(*_STORED)
    .where(_events.c.id == sa.bindparam("event_id"), _events.c.outcome == Outcome.UNMATCHED.value)
    .with_for_update(skip_locked=True)
)
_LOCK_ANY = sa.select(*_STORED).where(_events.c.id == sa.bindparam("event_id")).with_for_update()
#: What a new outcome's reason starts with, by the outcome it replaces.
_PREFIX = {Outcome.UNMATCHED.value: "matched later", Outcome.REJECTED.value: "replayed"}


class ReplayError(Exception):
    """An event cannot be replayed; the message says why."""


@dataclass(frozen=True, slots=True)
class Replayed:
    """What applying one stored event did (or, in a dry run, would do)."""

    event_id: int
    previous: str
    outcome: str
    submission_id: str | None
    status: str | None
    reason: str | None
    changed: bool


def _apply_stored(
    conn: Connection,
    event_id: int,
    submission: SubmissionRow,
    state: JobState,
    prefix: str | None,
    *,
    now: datetime,
    outbox: Outbox,
) -> Change:
    """Apply a stored delivery's state and, when it was held back, record its new outcome."""
    change = apply_job_state(conn, submission, state, now=now, outbox=outbox)
    assert change is not None  # no inbox row given, so no key can be taken
    if prefix is not None:
        set_outcome(
            conn,
            event_id,
            outcome=change.outcome,
            reason=f"{prefix}: {change.reason or change.outcome.value}",
            submission_id=submission.submission_id,
        )
    return change


def settle_stored(
    conn: Connection, stored: Any, *, now: datetime, outbox: Outbox, write: bool = True
) -> Replayed:
    """Apply one stored delivery (a row of ``_STORED``) as it would be applied now.

    The shared step of re-matching and replaying, inside the caller's transaction. A
    delivery that was not applied when it arrived (``unmatched`` or ``rejected``) takes
    its new outcome; the others keep the outcome recorded when they arrived. Raises
    InvalidPayload or NotAJob when the stored body can no longer be read.
    """
    event_id, previous, source, wanted, body, claimed_user_id = stored
    state = normalise(parse_json(body.encode("utf-8")))
    submission, conflict = match_stored(
        conn, state, source=source, wanted=wanted, claimed_user_id=claimed_user_id
    )
    if submission is None:
        reason = "no submission matches the job yet"
        return Replayed(event_id, previous, Outcome.UNMATCHED.value, wanted, None, reason, False)
    prefix = _PREFIX.get(previous)
    if conflict is not None:
        if write and previous == Outcome.UNMATCHED.value:
            set_outcome(
                conn,
                event_id,
                outcome=Outcome.REJECTED,
                reason=f"{prefix}, refused: {conflict}",
                submission_id=submission.submission_id,
            )
        return Replayed(
            event_id,
            previous,
            Outcome.REJECTED.value,
            submission.submission_id,
            None,
            conflict,
            False,
        )
    if write:
        change = _apply_stored(conn, event_id, submission, state, prefix, now=now, outbox=outbox)
    else:
        change = decide_transition(submission, state)
    log.info(
        "applied stored event %d job=%s submission=%s outcome=%s",
        event_id,
        state.job_id,
        submission.submission_id,
        change.outcome.value,
    )
    return Replayed(
        event_id,
        previous,
        change.outcome.value,
        submission.submission_id,
        change.new_status or submission.status,
        change.reason,
        write and change.values is not None,
    )


def rematch_event(
    conn: Connection, event_id: int, *, now: datetime, outbox: Outbox, write: bool = True
) -> Replayed | None:
    """Match one unmatched event inside the caller's transaction.

    ``None`` means another process holds it, or it is no longer unmatched.
    """
    if not is_row_id(event_id):
        return None
    row = conn.execute(_LOCK_UNMATCHED, {"event_id": event_id}).first()
    if row is None:
        return None
    return settle_stored(conn, row, now=now, outbox=outbox, write=write)


def replay_event(
    conn: Connection, event_id: int, *, now: datetime, outbox: Outbox, write: bool = True
) -> Replayed:
    """Apply one stored delivery again, inside the caller's transaction.

    Raise ReplayError when it cannot be replayed.
    """
    row = conn.execute(_LOCK_ANY, {"event_id": event_id}).first() if is_row_id(event_id) else None
    if row is None:
        message = f"no event {event_id}"
        raise ReplayError(message)
    _, previous, source, _, _, claimed_user_id = row
    if previous == Outcome.REJECTED.value and source == "url" and claimed_user_id is None:
        message = (
            f"event {event_id} was rejected on a signed webhook URL before its owner was "
            "stored, so it cannot be checked again: fix the cause and let ittybit resend it"
        )
        raise ReplayError(message)
    try:
        return settle_stored(conn, row, now=now, outbox=outbox, write=write)
    except (InvalidPayload, NotAJob) as exc:
        message = f"event {event_id} can no longer be read: {exc}"
        raise ReplayError(message) from None


def replay_one(
    engine: Engine, event_id: int, *, now: datetime, outbox: Outbox, dry_run: bool
) -> Replayed:
    """Replay one event in a transaction of its own (rolled back in a dry run)."""
    try:
        with engine.connect() as conn, conn.begin() as transaction:
            result = replay_event(conn, event_id, now=now, outbox=outbox, write=not dry_run)
            if dry_run:
                transaction.rollback()
            return result
    except IntegrityError:
        message = f"event {event_id}: its job id belongs to another submission"
        raise ReplayError(message) from None


@dataclass(slots=True)
class RematchReport:
    """What re-matching did: events matched (applied, duplicate or stale) or rejected."""

    matched: int = 0
    rejected: int = 0
    errors: int = 0

    def count(self, outcome: str | None) -> None:
        """Count one event's re-match: its new outcome, None (left alone) or unreadable."""
        if outcome is _UNREADABLE:
            self.errors += 1
        elif outcome == Outcome.REJECTED.value:
            self.rejected += 1
        elif outcome not in (None, Outcome.UNMATCHED.value):
            self.matched += 1


def rematch_unmatched(
    engine: Engine, *, now: datetime, outbox: Outbox, batch: int = 100, dry_run: bool = False
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
            report.count(_rematch_one(engine, event_id, now=now, outbox=outbox, dry_run=dry_run))
        if len(ids) < batch:
            return report


def rematch_for(
    engine: Engine,
    *,
    job_id: str | None,
    submission_id: str,
    now: datetime,
    outbox: Outbox,
    limit: int = 100,
) -> RematchReport:
    """Match the unmatched deliveries stored for one job or submission id, now.

    For a submission just registered through the API: its webhooks that arrived first
    are applied at once instead of at the worker's next pass (which takes any left over).
    """
    wanted = _events.c.submission_id == submission_id
    if job_id is not None:
        wanted = sa.or_(wanted, _events.c.job_id == job_id)
    statement = (
        sa.select(_events.c.id)
        .where(_events.c.outcome == Outcome.UNMATCHED.value, wanted)
        .order_by(_events.c.id)
        .limit(limit)
    )
    with engine.connect() as conn:
        ids = list(conn.execute(statement).scalars())
    report = RematchReport()
    for event_id in ids:
        report.count(_rematch_one(engine, event_id, now=now, outbox=outbox, dry_run=False))
    return report


#: The outcome of an event whose stored body can no longer be read.
_UNREADABLE = "unreadable"


def _rematch_one(
    engine: Engine, event_id: int, *, now: datetime, outbox: Outbox, dry_run: bool
) -> str | None:
    try:
        with engine.connect() as conn, conn.begin() as transaction:
            result = rematch_event(conn, event_id, now=now, outbox=outbox, write=not dry_run)
            if dry_run:
                transaction.rollback()
            return None if result is None else result.outcome
    except (InvalidPayload, NotAJob) as exc:
        # It was readable when it arrived; a change in the normaliser must not stop the pass.
        log.warning("event %d can no longer be read: %s", event_id, exc)
        return _UNREADABLE
    except IntegrityError:
        # Filling in the job id collided with another submission that already owns it.
        if not dry_run:
            with engine.begin() as conn:
                set_outcome(
                    conn,
                    event_id,
                    outcome=Outcome.REJECTED,
                    reason="matched later, refused: job id belongs to another submission",
                )
        return Outcome.REJECTED.value
