"""Send a submission's job to ittybit with its metadata and signed webhook URL.

Safe to repeat: the ``Idempotency-Key`` comes from the submission id, so a retried
or re-run submit never makes a second job, and a submission that already has a job
is left as it is.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from config.settings import Settings
from receiver.core.jobstate import JobState
from receiver.flows.apply import apply_job_state, find_submission
from receiver.flows.delivery import owner_conflict
from receiver.flows.outbox import Outbox
from receiver.flows.polling import poll_delay
from receiver.flows.records import (
    InvalidSubmission,
    create_submission,
    get_submission,
    validate_submission,
    webhook_url,
)
from receiver.ittybit.client import RETRYABLE_STATUSES, ApiError, IttybitClient, idempotency_key
from receiver.store.models import Status, Submission

__all__ = [
    "RESERVED_METADATA",
    "SubmitResult",
    "defer_job",
    "refused",
    "request_job",
    "submit_job",
]

log = logging.getLogger(__name__)

#: Metadata keys the service sets itself, so a job can always be matched back.
RESERVED_METADATA = frozenset({"submission_id", "user_id"})

_submissions = Submission.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class SubmitResult:
    """The submission after a submit, and what happened on the way."""

    submission: Submission
    created: bool
    sent: bool
    error: str | None = None
    #: The API's failure, when the error came from ittybit.
    api_error: ApiError | None = None


def refused(error: ApiError) -> bool:
    """Tell whether ittybit refused the job itself: asking again the same way cannot help.

    Its 4xx answers, but not 429 or a request still in progress (409), and not a refused
    API key, which the operator can fix: those stay worth another try.
    """
    status = error.status
    return (
        status is not None
        and 400 <= status < 500
        and status not in RETRYABLE_STATUSES
        and status not in (401, 403, 409)
    )


def _prepare(
    engine: Engine,
    *,
    submission_id: str,
    user_id: str,
    input_url: str,
    metadata: Mapping[str, Any],
    job: Mapping[str, Any],
) -> tuple[Submission, bool]:
    """Create the submission, or check the existing one agrees and merge new metadata.

    ``job`` (kind, options, when it was asked for) is stored on a submission without a
    job, so that the worker can create that job later exactly as it was asked.
    """
    with Session(engine, expire_on_commit=False) as session:
        submission = get_submission(session, submission_id)
        if submission is None:
            try:
                return (
                    create_submission(
                        session,
                        job=job,
                        submission_id=submission_id,
                        user_id=user_id,
                        input_url=input_url,
                        metadata=dict(metadata),
                    ),
                    True,
                )
            except InvalidSubmission:
                # Lost a race with a concurrent submit of the same id: use that one.
                submission = get_submission(session, submission_id)
                if submission is None:
                    raise
        clean = validate_submission(
            {"submission_id": submission_id, "user_id": user_id, "input_url": input_url}
        )
        if submission.user_id != clean["user_id"]:
            message = f"submission {submission_id!r} belongs to another user"
            raise InvalidSubmission(message)
        if submission.input_url != clean["input_url"]:
            message = f"submission {submission_id!r} has another input: {submission.input_url}"
            raise InvalidSubmission(message)
        if submission.job_id is None and submission.status != Status.PENDING:
            message = f"submission {submission_id!r} is {submission.status} without a job"
            raise InvalidSubmission(message)
        if submission.job_id is None:
            submission.meta = {**submission.meta, **metadata}
            for name, value in job.items():
                setattr(submission, name, value)
            session.add(submission)
            session.commit()
        return submission, False


def _check_reserved(metadata: Mapping[str, Any]) -> dict[str, Any]:
    extra = dict(metadata)
    reserved = RESERVED_METADATA & set(extra)
    if reserved:
        message = f"metadata {', '.join(sorted(reserved))} is set by the service"
        raise InvalidSubmission(message)
    return extra


def request_job(
    engine: Engine,
    *,
    submission_id: str,
    user_id: str,
    input_url: str,
    now: datetime,
    kind: str = "video",
    options: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> SubmitResult:
    """Store the submission and that its job is asked for, without asking ittybit now.

    The worker's next pass creates the job (see ``reconcile.passes``), with the same
    idempotency key as :func:`submit_job`. Raises InvalidSubmission as it does.
    """
    submission, created = _prepare(
        engine,
        submission_id=submission_id,
        user_id=user_id,
        input_url=input_url,
        metadata=_check_reserved(metadata or {}),
        job={
            "job_kind": kind,
            "job_options": dict(options) if options else None,
            "job_requested_at": now,
        },
    )
    return SubmitResult(submission, created=created, sent=False)


def submit_job(
    engine: Engine,
    client: IttybitClient,
    settings: Settings,
    *,
    submission_id: str,
    user_id: str,
    input_url: str,
    now: datetime,
    outbox: Outbox,
    kind: str = "video",
    options: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> SubmitResult:
    """Create or reuse a submission and create its ittybit job, once.

    On an API failure the submission stays ``pending`` with the error stored, and
    the same call later completes it. Raises InvalidSubmission when the arguments
    disagree with an existing submission.
    """
    extra = _check_reserved(metadata or {})
    job = {"job_kind": kind, "job_options": dict(options) if options else None}
    submission, created = _prepare(
        engine,
        submission_id=submission_id,
        user_id=user_id,
        input_url=input_url,
        metadata=extra,
        job={**job, "job_requested_at": now},
    )
    if submission.job_id is not None:
        log.info("%s already has job %s; nothing sent", submission_id, submission.job_id)
        return SubmitResult(submission, created=created, sent=False)

    sid, owner = submission.submission_id, submission.user_id
    try:
        state = client.create_job(
            input_url=submission.input_url,
            kind=kind,
            options=options,
            metadata={**submission.meta, "submission_id": sid, "user_id": owner},
            webhook_url=webhook_url(settings, submission_id=sid, user_id=owner),
            idempotency_key=idempotency_key(sid),
        )
    except ApiError as exc:
        api_error: ApiError | None = exc
        error: str | None = exc.message
    else:
        api_error = None
        error = _store_job(engine, submission_id=sid, state=state, now=now, outbox=outbox)
    if error is not None:
        _record_failure(
            engine, sid, error, refused_job=api_error is not None and refused(api_error), now=now
        )
    with Session(engine) as session:
        stored = get_submission(session, sid)
        assert stored is not None  # submissions are never deleted here
        return SubmitResult(stored, created=created, sent=True, error=error, api_error=api_error)


def defer_job(
    conn: sa.Connection, row_id: int, *, attempts: int, error: str, now: datetime
) -> None:
    """Try to create a pending submission's job again after a backoff (the worker's retry)."""
    conn.execute(
        sa.update(_submissions)
        .where(_submissions.c.id == row_id)
        .values(
            poll_attempts=attempts,
            next_poll_at=now + timedelta(seconds=poll_delay(attempts)),
            poll_error=error[:500],
        )
    )


def _record_failure(
    engine: Engine, submission_id: str, error: str, *, refused_job: bool, now: datetime
) -> None:
    """Store why the job was not made; the submission stays ``pending`` for a retry."""
    log.warning("submit %s failed: %s", submission_id, error)
    values: dict[str, Any] = {"error": f"submit failed: {error}"[:2000], "updated_at": now}
    if refused_job:
        # ittybit said no to this job: the worker must not keep asking for it.
        values["job_requested_at"] = None
    with engine.begin() as conn:
        conn.execute(
            sa.update(_submissions)
            .where(_submissions.c.submission_id == submission_id, _submissions.c.job_id.is_(None))
            .values(values)
        )


def _store_job(
    engine: Engine, *, submission_id: str, state: JobState, now: datetime, outbox: Outbox
) -> str | None:
    """Record the created job through the webhook's write path; return an error, if any."""
    try:
        with engine.begin() as conn:
            row = find_submission(conn, submission_id=submission_id)
            if row is None:
                return "the submission disappeared while its job was created"
            conflict = owner_conflict(None, state, row)
            if conflict is not None:
                return f"ittybit answered with a job that does not fit: {conflict}"
            apply_job_state(conn, row, state, now=now, outbox=outbox)
            conn.execute(
                sa.update(_submissions)
                .where(_submissions.c.id == row.id)
                .values(submitted_at=now, poll_attempts=0, next_poll_at=None, poll_error=None)
            )
    except IntegrityError:
        return f"job {state.job_id} already belongs to another submission"
    log.info("submitted %s as job %s (%s)", submission_id, state.job_id, state.provider_status)
    return None
