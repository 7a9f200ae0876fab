"""Apply what the ittybit API says about one job: the poll shared by every caller.

The reconciler's passes and "ask ittybit now" (:func:`ask_ittybit_now`: the application
API's ``reconcile``, the admin view's button and ``reconcile --submission``) all fetch a
job and settle it here: its state goes through the same ``apply_job_state`` a webhook does
(``expired`` too), the poll's bookkeeping (attempts, backoff, the lease) is written in the
same transaction, and so is a ``polls`` row that the submission's timeline shows.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy import Connection
from sqlalchemy.engine import Engine

from receiver.core.jobstate import JobState
from receiver.core.transitions import Change, SubmissionRow, decide_transition
from receiver.flows.apply import apply_job_state, find_submission
from receiver.flows.delivery import owner_conflict
from receiver.flows.outbox import Outbox
from receiver.ittybit.client import ApiError, IttybitClient, JobNotFound, RateLimited
from receiver.store import leases
from receiver.store.models import FINAL_STATUSES, Poll, Status, Submission

__all__ = [
    "FIRST_RETRY",
    "MAX_RETRY",
    "Asked",
    "Fetched",
    "JobResult",
    "NoRealJob",
    "NoSlotFree",
    "PolledJob",
    "ask_ittybit_now",
    "human_duration",
    "poll_delay",
    "settle_job",
]

#: The first re-poll of a job still running waits this long, doubling up to the cap.
FIRST_RETRY = 60.0
MAX_RETRY = 3600.0

Fetched = JobState | ApiError


def poll_delay(attempts: int, *, first: float = FIRST_RETRY, cap: float = MAX_RETRY) -> float:
    """Return the wait after poll number ``attempts`` (1-based): 1 min, 2, 4 … capped at 1 h."""
    delay = first * 2.0 ** max(0, attempts - 1)
    return min(cap, delay)


def human_duration(seconds: float) -> str:
    """Return ``90s``, ``15m``, ``2h`` or ``1d`` for log and error text."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


class JobResult(StrEnum):
    """What polling one job did to its submission."""

    UPDATED = "updated"
    UNCHANGED = "unchanged"
    FAILED = "failed"
    EXPIRED = "expired"
    ERROR = "errors"
    DEFERRED = "deferred"


@dataclass(frozen=True, slots=True)
class PolledJob:
    """A submission whose job is being polled, as it was when picked."""

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


_submissions = Submission.__table__  # type: ignore[attr-defined]
_polls = Poll.__table__  # type: ignore[attr-defined]
_c = _submissions.c


def _own_lease_cleared(column: Any) -> Any:
    # Only the holder's lease is given back: a row leased by another poller keeps its lease.
    return sa.case((leases.held_by(_submissions, sa.bindparam("p_owner")), None), else_=column)


# Built once: one of these runs for every job polled.
_RECORD_POLL = (
    sa.update(_submissions)
    .where(_c.id == sa.bindparam("p_id"))
    .values(
        poll_attempts=sa.bindparam("p_attempts"),
        last_polled_at=sa.bindparam("p_polled_at"),
        next_poll_at=sa.bindparam("p_next_poll_at"),
        poll_error=sa.bindparam("p_error"),
        lease_owner=_own_lease_cleared(_c.lease_owner),
        lease_until=_own_lease_cleared(_c.lease_until),
    )
)
_INSERT_POLL = sa.insert(_polls)


def _expiry_reason(give_up_after: float, provider_status: str | None) -> str:
    last = f" (last ittybit status: {provider_status})" if provider_status else ""
    return f"no final state from ittybit after {human_duration(give_up_after)}{last}"


@dataclass(slots=True)
class _Poll:
    """One poll's bookkeeping, written together with its outcome."""

    conn: Connection
    job: PolledJob
    row_id: int
    now: datetime
    owner: str | None
    source: str
    write: bool
    next_poll_at: datetime | None = None
    error: str | None = None
    seen: str | None = None

    @property
    def attempts(self) -> int:
        return self.job.poll_attempts + 1

    def again_in(self, seconds: float, error: str | None = None) -> None:
        """Poll again after ``seconds`` (the backoff, or ittybit's ``Retry-After``)."""
        self.next_poll_at = self.now + timedelta(seconds=seconds)
        self.error = error

    def finish(self, result: JobResult, detail: str | None) -> tuple[JobResult, str | None]:
        """Write the poll's bookkeeping and its ``polls`` row; return the outcome."""
        if self.write:
            values = {
                "p_id": self.row_id,
                "p_owner": self.owner,
                "p_attempts": self.attempts,
                "p_polled_at": self.now,
                "p_next_poll_at": self.next_poll_at,
                "p_error": self.error,
            }
            self.conn.execute(_RECORD_POLL, values)
            self.conn.execute(
                _INSERT_POLL,
                {
                    "submission_id": self.job.submission_id,
                    "job_id": self.job.job_id,
                    "polled_at": self.now,
                    "source": self.source,
                    "result": result.value,
                    "provider_status": self.seen,
                    "detail": detail[:500] if detail else None,
                },
            )
        return result, detail


def settle_job(
    conn: Connection,
    job: PolledJob,
    fetched: Fetched,
    *,
    now: datetime,
    give_up_after: float,
    outbox: Outbox,
    owner: str | None = None,
    source: str = "reconcile",
    write: bool = True,
) -> tuple[JobResult, str | None]:
    """Apply one fetched job (or its error) to its submission, in the caller's transaction.

    Writes the job's state through ``apply_job_state``, then the poll bookkeeping:
    attempt count, next poll time (exponential backoff, or ittybit's ``Retry-After``),
    the lease ``owner`` holds given back, and ``expired`` (through the same rules) once
    ``give_up_after`` has passed with no final state. With ``write=False`` it only says
    what would happen.
    """
    current = find_submission(conn, submission_id=job.submission_id)
    if current is None:
        return JobResult.ERROR, "submission no longer exists"
    poll = _Poll(conn, job, current.id, now=now, owner=owner, source=source, write=write)
    if isinstance(fetched, JobNotFound):
        state = JobState(
            job_id=job.job_id,
            provider_status="not_found",
            status=Status.FAILED,
            error="job not found",
        )
    elif isinstance(fetched, ApiError):
        wait = poll_delay(poll.attempts)
        if isinstance(fetched, RateLimited):
            wait = max(wait, fetched.retry_after)
        poll.again_in(wait, fetched.message[:500])
        result = JobResult.DEFERRED if isinstance(fetched, RateLimited) else JobResult.ERROR
        return poll.finish(result, fetched.message)
    else:
        state = fetched
        conflict = owner_conflict(None, state, current)
        if conflict is not None:
            poll.again_in(poll_delay(poll.attempts), conflict)
            return poll.finish(JobResult.ERROR, conflict)
    poll.seen = state.provider_status
    if state.status not in FINAL_STATUSES and now - job.started_at >= timedelta(
        seconds=give_up_after
    ):
        # Still running past the give-up age: the verdict goes through the same rules.
        state = JobState(
            job_id=job.job_id,
            provider_status=current.provider_status or state.provider_status,
            status=Status.EXPIRED,
            error=_expiry_reason(give_up_after, state.provider_status),
        )
    change = _apply(conn, current, state, now=now, outbox=outbox, write=write)
    return _settled(poll, current, state, change)


def _settled(
    poll: _Poll, current: SubmissionRow, state: JobState, change: Change
) -> tuple[JobResult, str | None]:
    """Say what applying ``state`` did, and poll again later unless it is final now."""
    status = change.new_status or current.status
    if status in FINAL_STATUSES:
        if change.values is None:
            return poll.finish(JobResult.UNCHANGED, change.reason)
        if status == Status.EXPIRED:
            return poll.finish(JobResult.EXPIRED, state.error)
        result = JobResult.FAILED if status == Status.FAILED else JobResult.UPDATED
        return poll.finish(result, f"{current.status} -> {status}")
    poll.again_in(poll_delay(poll.attempts))
    if change.values is None:
        return poll.finish(JobResult.UNCHANGED, change.reason)
    if status == current.status:
        detail = f"ittybit status {current.provider_status or '-'} -> {state.provider_status}"
    else:
        detail = f"{current.status} -> {status} (ittybit status {state.provider_status})"
    return poll.finish(JobResult.UPDATED, detail)


def _apply(
    conn: Connection,
    current: SubmissionRow,
    state: JobState,
    *,
    now: datetime,
    outbox: Outbox,
    write: bool,
) -> Change:
    if not write:
        return decide_transition(current, state)
    change = apply_job_state(conn, current, state, now=now, outbox=outbox)
    assert change is not None  # no inbox row given, so no key can be taken
    return change


_ASKED_ROW = sa.select(*(_c[name] for name in PolledJob.__slots__), _c.is_test).where(
    _c.submission_id == sa.bindparam("submission_id")
)


class NoSlotFree(Exception):
    """The caller's guard said no (every web slot taken, or another reconciler holds the
    submission's lease): ittybit was not asked."""


class NoRealJob(Exception):
    """A test submission (``jobhooks trigger``) has no real ittybit job: it was not asked."""


class Asked(NamedTuple):
    """What asking ittybit about one job did: the job, the result and why; ``error`` is the
    API's error when ittybit could not answer (a refused key among them)."""

    job: PolledJob
    result: JobResult
    detail: str | None
    error: ApiError | None


def ask_ittybit_now(
    engine: Engine,
    client: IttybitClient,
    submission_id: str,
    *,
    guard: AbstractContextManager[bool],
    source: str,
    now: datetime,
    give_up_after: float,
    outbox: Outbox,
) -> Asked | None:
    """Ask ittybit about one submission's job now and apply the answer; None if it has none.

    The one "ask ittybit now" of the application API, the admin view and ``reconcile
    --submission``. Each gives its ``guard``, entered only once the submission is known to
    have a real job and held while ittybit is asked and the answer written: it yields True
    when the caller may ask (the web's slot, the CLI's lease on the submission) and False
    when not, which raises :class:`NoSlotFree`. Nothing is locked while ittybit is asked;
    the client's budget bounds the wait. Raises LookupError for an unknown submission and
    :class:`NoRealJob` for a test one.
    """
    with engine.connect() as conn:
        row = conn.execute(_ASKED_ROW, {"submission_id": submission_id}).first()
    if row is None:
        message = f"no submission {submission_id!r}"
        raise LookupError(message)
    if row.is_test:
        raise NoRealJob(submission_id)
    if row.job_id is None:
        return None
    job = PolledJob(*row[:-1])
    with guard as free:
        if not free:
            raise NoSlotFree(submission_id)
        try:
            fetched: Fetched = client.get_job(job.job_id)
        except ApiError as exc:
            fetched = exc
        with engine.begin() as conn:
            result, detail = settle_job(
                conn,
                job,
                fetched,
                now=now,
                give_up_after=give_up_after,
                outbox=outbox,
                source=source,
            )
    return Asked(job, result, detail, fetched if isinstance(fetched, ApiError) else None)
