"""Process one verified delivery: match it to a submission, apply it, store it, in one go."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy import Connection

from receiver.core.jobstate import JobState
from receiver.core.signing import TokenClaims
from receiver.core.transitions import SubmissionRow, output_url_refusal
from receiver.flows.apply import apply_job_state, find_submission
from receiver.flows.outbox import Outbox
from receiver.store.inbox import (
    Delivery,
    dedupe_key,
    event_values,
    key_stored,
    recent_refusals,
    record_event,
    record_rejected,
)
from receiver.store.models import Outcome, Submission

__all__ = [
    "REFUSAL_CAP",
    "REFUSAL_WINDOW",
    "DeliveryResult",
    "claims_conflict",
    "match_stored",
    "over_refusal_cap",
    "owner_conflict",
    "process_delivery",
]

#: Rejected and unmatched deliveries stored per submission (a webhook URL's token names
#: one) in REFUSAL_WINDOW. Past it they are answered alike but not stored, and counted
#: (``jobhooks_webhook_deliveries_unstored_total``): a leaked token or a broken sender
#: cannot fill the inbox with refusals.
REFUSAL_CAP = 100
REFUSAL_WINDOW = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """What was done with a delivery, and the submission's status afterwards."""

    outcome: Outcome
    submission_id: str | None = None
    status: str | None = None
    reason: str | None = None
    #: False when the delivery was answered but, past the refusal cap, not stored.
    stored: bool = True


_SEEN = "this delivery was stored before"
_submissions = Submission.__table__  # type: ignore[attr-defined]
_OTHER_JOB = "job id does not match the submission's job"


def claims_conflict(claims: TokenClaims | None, state: JobState) -> str | None:
    """Return why the payload's metadata disagrees with the webhook URL, if it does."""
    if claims is None:
        return None
    meta_submission = state.meta_str("submission_id")
    if meta_submission is not None and meta_submission != claims.submission_id:
        return "metadata submission_id does not match the webhook URL"
    meta_user = state.meta_str("user_id")
    if meta_user is not None and meta_user != claims.user_id:
        return "metadata user_id does not match the webhook URL"
    return None


def owner_conflict(
    claims: TokenClaims | None, state: JobState, submission: SubmissionRow
) -> str | None:
    """Return why the delivery may not touch ``submission``, if it may not."""
    if claims is not None and claims.user_id != submission.user_id:
        return "webhook URL was not made for this submission's owner"
    meta_user = state.meta_str("user_id")
    if meta_user is not None and meta_user != submission.user_id:
        return "metadata user_id does not match the submission's owner"
    meta_submission = state.meta_str("submission_id")
    if meta_submission is not None and meta_submission != submission.submission_id:
        return "metadata submission_id does not match the job's submission"
    if submission.job_id is not None and submission.job_id != state.job_id:
        return _OTHER_JOB
    return None


def _locate(conn: Connection, state: JobState, *, named: str | None) -> SubmissionRow | None:
    """Find (and lock) the submission a delivery is for.

    A signed URL ``named`` its submission, and the job id cannot redirect it elsewhere;
    otherwise the job id decides, else the metadata's submission_id.
    """
    if named is not None:
        return find_submission(conn, submission_id=named)
    return find_submission(conn, job_id=state.job_id, submission_id=state.meta_str("submission_id"))


def match_stored(
    conn: Connection,
    state: JobState,
    *,
    source: str,
    wanted: str | None,
    claimed_user_id: str | None,
) -> tuple[SubmissionRow | None, str | None]:
    """Find the submission a stored delivery belongs to, and why it may not touch it.

    For re-matching and replaying inbox rows: a delivery on a signed URL goes to the
    submission that URL named (the job id cannot redirect it) and is checked against the
    owner the URL named; one on the project URL is matched as a new delivery would be.
    """
    claims = None
    if source == "url" and wanted is not None and claimed_user_id is not None:
        claims = TokenClaims(submission_id=wanted, user_id=claimed_user_id)
    submission = _locate(conn, state, named=wanted if source == "url" else None)
    if submission is None:
        return None, None
    conflict = owner_conflict(claims, state, submission)
    if conflict is None and wanted is not None and wanted != submission.submission_id:
        conflict = "the delivery named another submission"
    return submission, conflict


def over_refusal_cap(conn: Connection, submission_id: str | None, now: datetime) -> bool:
    """Tell whether a submission's refusals of the last window reached the cap."""
    if submission_id is None:
        return False
    since = now - REFUSAL_WINDOW
    return recent_refusals(conn, submission_id, since=since, limit=REFUSAL_CAP) >= REFUSAL_CAP


def _job_taken(conn: Connection, job_id: str, submission_id: str) -> str | None:
    """Return why a job may not be bound to ``submission_id``: another submission has it.

    Only a signed URL can name a submission other than the job's; without this check the
    job id's unique index would refuse the change, after the inbox row was written.
    """
    holder = conn.execute(
        sa.select(_submissions.c.submission_id).where(_submissions.c.job_id == job_id)
    ).scalar()
    if holder is not None and holder != submission_id:
        return "job id belongs to another submission"
    return None


def _keep_unmatched(
    conn: Connection,
    *,
    key: str,
    delivery: Delivery,
    state: JobState,
    wanted: str | None,
    now: datetime,
    capped: bool,
) -> DeliveryResult:
    """Store a delivery no submission matches yet, to be applied when one is registered."""
    reason = "no submission matches the job yet"
    if capped and over_refusal_cap(conn, wanted, now):
        if key_stored(conn, key):  # a retry is answered as it was before the cap
            return DeliveryResult(Outcome.DUPLICATE, wanted, reason=_SEEN)
        return DeliveryResult(Outcome.UNMATCHED, wanted, reason=reason, stored=False)
    stored = record_event(
        conn,
        key=key,
        delivery=delivery,
        state=state,
        submission_id=wanted,
        outcome=Outcome.UNMATCHED,
        reason=reason,
        now=now,
    )
    if stored is None:
        return DeliveryResult(Outcome.DUPLICATE, wanted, reason=_SEEN)
    return DeliveryResult(Outcome.UNMATCHED, wanted, reason=reason)


def _keep_ignored(
    conn: Connection, *, key: str, delivery: Delivery, state: JobState, now: datetime
) -> DeliveryResult:
    reason = "a run about another job than the submission's"
    stored = record_event(
        conn,
        key=key,
        delivery=delivery,
        state=state,
        submission_id=None,
        outcome=Outcome.IGNORED,
        reason=reason,
        now=now,
    )
    outcome = Outcome.IGNORED if stored is not None else Outcome.DUPLICATE
    return DeliveryResult(outcome, reason=reason if stored is not None else _SEEN)


def process_delivery(
    conn: Connection,
    *,
    delivery: Delivery,
    state: JobState,
    claims: TokenClaims | None,
    now: datetime,
    outbox: Outbox,
    capped: bool = False,
) -> DeliveryResult:
    """Match, store and apply one delivery inside the caller's transaction.

    The inbox row goes in before anything else is written: a delivery whose key is already
    stored writes nothing and comes back ``duplicate``, so nothing needs rolling back. A new
    key whose state is already recorded is kept, with outcome ``duplicate``. ``capped``
    (webhooks; not ittybit's event list) stores no refusal past :data:`REFUSAL_CAP`.
    """
    named = claims.submission_id if claims else None
    key = dedupe_key(delivery.delivery_id, state, named=named)
    submission = _locate(conn, state, named=named)

    if submission is None:
        wanted = claims.submission_id if claims else state.meta_str("submission_id")
        return _keep_unmatched(
            conn, key=key, delivery=delivery, state=state, wanted=wanted, now=now, capped=capped
        )

    sid = submission.submission_id
    conflict = owner_conflict(claims, state, submission)
    if conflict == _OTHER_JOB and (state.event_kind or "").startswith("run."):
        # A run that names no task of this submission's job: kept, but it changes nothing.
        return _keep_ignored(conn, key=key, delivery=delivery, state=state, now=now)
    if conflict is None and named is not None and submission.job_id is None:
        conflict = _job_taken(conn, state.job_id, sid)
    if capped:
        refusal = conflict or output_url_refusal(state.output_url)
        if refusal is not None and over_refusal_cap(conn, sid, now):
            return DeliveryResult(Outcome.REJECTED, sid, reason=refusal, stored=False)
    if conflict is not None:
        record_rejected(
            conn,
            key=key,
            delivery=delivery,
            state=state,
            submission_id=sid,
            reason=conflict,
            now=now,
        )
        return DeliveryResult(Outcome.REJECTED, sid, reason=conflict)

    event = event_values(key=key, delivery=delivery, state=state, submission_id=sid, now=now)
    change = apply_job_state(conn, submission, state, now=now, outbox=outbox, event=event)
    if change is None:
        return DeliveryResult(Outcome.DUPLICATE, sid, submission.status, reason=_SEEN)
    return DeliveryResult(
        change.outcome,
        sid,
        change.new_status or submission.status,
        change.reason,
    )
