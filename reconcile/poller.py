"""One reconcile pass: lease stuck submissions, fetch their jobs, apply what ittybit says.

HTTP fetches run on a thread pool; every database write happens on the calling
thread, one short transaction per job through the same ``apply_job_state`` the
webhook uses, so the ordering and terminal rules hold whoever comes first.
Batches are leased as the pool drains, so memory stays flat however many rows
are stuck.
"""

from __future__ import annotations

import logging
import os
import queue
import secrets
import socket
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import Connection
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from config.settings import Settings
from receiver.apply import apply_job_state, find_submission
from receiver.deliveries import owner_conflict
from receiver.jobstate import JobState
from receiver.models import FINAL_STATUSES, Status, Submission, utcnow
from receiver.transitions import decide_transition
from reconcile.claims import (
    StuckSubmission,
    claim_named,
    claim_stuck,
    peek_named,
    peek_stuck,
    release,
    unsubmitted,
)
from reconcile.client import (
    ApiError,
    AuthError,
    Interrupted,
    IttybitClient,
    JobNotFound,
    RateLimited,
)
from reconcile.rematch import rematch_unmatched

if TYPE_CHECKING:
    from receiver.metrics import Metrics

__all__ = [
    "JobResult",
    "PassOptions",
    "Reconciler",
    "Summary",
    "lease_owner",
    "poll_delay",
    "settle_job",
]

log = logging.getLogger(__name__)

#: The first re-poll of a job still running waits this long, doubling up to the cap.
FIRST_RETRY = 60.0
MAX_RETRY = 3600.0
_MAX_SAMPLES = 10

Fetched = JobState | ApiError


def poll_delay(attempts: int, *, first: float = FIRST_RETRY, cap: float = MAX_RETRY) -> float:
    """Return the wait after poll number ``attempts`` (1-based): 1 min, 2, 4 … capped at 1 h."""
    delay = first * 2.0 ** max(0, attempts - 1)
    return min(cap, delay)


def lease_owner() -> str:
    """Return a name for this reconciler's leases: host, process and a random tag."""
    return f"{socket.gethostname()[:60]}:{os.getpid()}:{secrets.token_hex(4)}"


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
class PassOptions:
    """What one pass looks at and how hard it works."""

    stuck_after: float = 15 * 60.0
    give_up_after: float = 24 * 3600.0
    batch: int = 100
    concurrency: int = 8
    lease_seconds: float = 300.0
    limit: int | None = None
    submission_ids: tuple[str, ...] = ()
    dry_run: bool = False

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> PassOptions:
        """Return the options the settings give, with ``overrides`` on top."""
        values: dict[str, Any] = {
            "stuck_after": settings.stuck_after,
            "give_up_after": settings.give_up_after,
            "batch": settings.reconcile_batch,
            "concurrency": settings.reconcile_concurrency,
            "lease_seconds": settings.lease_seconds,
        }
        values.update({key: value for key, value in overrides.items() if value is not None})
        return cls(**values)


@dataclass(slots=True)
class Summary:
    """The tally of one pass; ``checked`` is every job fetched."""

    checked: int = 0
    updated: int = 0
    unchanged: int = 0
    failed: int = 0
    expired: int = 0
    errors: int = 0
    deferred: int = 0
    skipped: int = 0
    rematched: int = 0
    rejected_events: int = 0
    unsubmitted: int = 0
    dry_run: bool = False
    stopped: bool = False
    aborted: str | None = None
    seconds: float = 0.0
    problems: list[dict[str, str | None]] = field(default_factory=list)
    unsubmitted_sample: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no job errored and nothing aborted the pass."""
        return self.errors == 0 and self.aborted is None

    def record(
        self, result: JobResult, job_id: str | None, submission_id: str, detail: str | None
    ) -> None:
        """Count one job's result; keep the first few problems for the report."""
        self.checked += 1
        setattr(self, result.value, getattr(self, result.value) + 1)
        if result in (JobResult.ERROR, JobResult.DEFERRED) and len(self.problems) < _MAX_SAMPLES:
            self.problems.append(
                {
                    "submission_id": submission_id,
                    "job_id": job_id,
                    "result": result.name.lower(),
                    "detail": detail,
                }
            )

    def problem(self, submission_id: str, detail: str) -> None:
        """Count an error that is no fetched job (an unknown submission id)."""
        self.errors += 1
        if len(self.problems) < _MAX_SAMPLES:
            self.problems.append(
                {
                    "submission_id": submission_id,
                    "job_id": None,
                    "result": "error",
                    "detail": detail,
                }
            )

    def as_dict(self) -> dict[str, Any]:
        """Return the summary as plain JSON values."""
        values = asdict(self)
        values["seconds"] = round(self.seconds, 3)
        return values


_submissions = Submission.__table__  # type: ignore[attr-defined]
_POLLED: dict[str, Any] = {
    "poll_attempts": sa.bindparam("p_attempts"),
    "last_polled_at": sa.bindparam("p_polled_at"),
    "next_poll_at": sa.bindparam("p_next_poll_at"),
    "poll_error": sa.bindparam("p_error"),
    "lease_owner": None,
    "lease_until": None,
}
# Built once: one of these runs for every job polled.
_RECORD_POLL = (
    sa.update(_submissions).where(_submissions.c.id == sa.bindparam("p_id")).values(**_POLLED)
)
_RECORD_EXPIRY = _RECORD_POLL.values(
    status=Status.EXPIRED.value,
    error=sa.bindparam("p_reason"),
    updated_at=sa.bindparam("p_polled_at"),
)


def _expiry_reason(give_up_after: float, provider_status: str | None) -> str:
    last = f" (last ittybit status: {provider_status})" if provider_status else ""
    return f"no final state from ittybit after {human_duration(give_up_after)}{last}"


def settle_job(
    conn: Connection,
    job: StuckSubmission,
    fetched: Fetched,
    *,
    now: datetime,
    give_up_after: float,
    write: bool = True,
) -> tuple[JobResult, str | None]:
    """Apply one fetched job (or its error) to its submission, in the caller's transaction.

    Writes the job's state through ``apply_job_state``, then the poll bookkeeping:
    attempt count, next poll time (exponential backoff, or ittybit's ``Retry-After``),
    the lease released, and ``expired`` once ``give_up_after`` has passed with no
    final state. With ``write=False`` it only says what would happen.
    """
    current = find_submission(conn, submission_id=job.submission_id)
    if current is None:
        return JobResult.ERROR, "submission no longer exists"
    attempts = job.poll_attempts + 1
    values: dict[str, Any] = {
        "p_id": current.id,
        "p_attempts": attempts,
        "p_polled_at": now,
        "p_next_poll_at": None,
        "p_error": None,
    }

    def finish(result: JobResult, detail: str | None) -> tuple[JobResult, str | None]:
        if write:
            statement = _RECORD_EXPIRY if result is JobResult.EXPIRED else _RECORD_POLL
            conn.execute(statement, values)
        return result, detail

    if isinstance(fetched, JobNotFound):
        state = JobState(
            job_id=job.job_id,
            provider_status="not_found",
            status=Status.FAILED,
            error="job not found",
        )
    elif isinstance(fetched, ApiError):
        wait = poll_delay(attempts)
        if isinstance(fetched, RateLimited):
            wait = max(wait, fetched.retry_after)
        values["p_next_poll_at"] = now + timedelta(seconds=wait)
        values["p_error"] = fetched.message[:500]
        result = JobResult.DEFERRED if isinstance(fetched, RateLimited) else JobResult.ERROR
        return finish(result, fetched.message)
    else:
        state = fetched
        conflict = owner_conflict(None, state, current)
        if conflict is not None:
            values["p_next_poll_at"] = now + timedelta(seconds=poll_delay(attempts))
            values["p_error"] = conflict
            return finish(JobResult.ERROR, conflict)

    if write:
        change = apply_job_state(conn, current, state, now=now)
    else:
        change = decide_transition(current, state)
    status = str(change.values.get("status", current.status) if change.values else current.status)
    if status in FINAL_STATUSES:
        values["p_next_poll_at"] = None
        if change.values is None:
            return finish(JobResult.UNCHANGED, change.reason)
        result = JobResult.FAILED if status == Status.FAILED else JobResult.UPDATED
        return finish(result, f"{current.status} -> {status}")
    if now - job.started_at >= timedelta(seconds=give_up_after):
        values["p_reason"] = _expiry_reason(give_up_after, state.provider_status)
        return finish(JobResult.EXPIRED, values["p_reason"])
    values["p_next_poll_at"] = now + timedelta(seconds=poll_delay(attempts))
    if change.values is None:
        return finish(JobResult.UNCHANGED, change.reason)
    if status == current.status:
        detail = f"ittybit status {current.provider_status or '-'} -> {state.provider_status}"
    else:
        detail = f"{current.status} -> {status} (ittybit status {state.provider_status})"
    return finish(JobResult.UPDATED, detail)


class Reconciler:
    """Runs passes over one database with one API client; several may run at once."""

    def __init__(
        self,
        engine: Engine,
        client: IttybitClient,
        options: PassOptions,
        *,
        clock: Callable[[], datetime] = utcnow,
        stop: threading.Event | None = None,
        owner: str | None = None,
        progress: Callable[[int], object] | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.engine = engine
        self.client = client
        self.options = options
        self.clock = clock
        self.stop = stop or threading.Event()
        self.owner = owner or lease_owner()
        self.progress = progress
        self.metrics = metrics

    def run_pass(self) -> Summary:
        """Re-match unmatched events, then poll every due job once; return the tally."""
        started = time.monotonic()
        options = self.options
        summary = Summary(dry_run=options.dry_run)
        now = self.clock()
        if not options.submission_ids:
            report = rematch_unmatched(
                self.engine, now=now, batch=options.batch, dry_run=options.dry_run
            )
            summary.rematched = report.matched
            summary.rejected_events = report.rejected
            summary.errors += report.errors
            with self.engine.connect() as conn:
                summary.unsubmitted, summary.unsubmitted_sample = unsubmitted(
                    conn, stuck_before=now - timedelta(seconds=options.stuck_after)
                )
            if summary.unsubmitted:
                log.warning(
                    "%d pending submission(s) have no job yet (e.g. %s); run submit for them",
                    summary.unsubmitted,
                    ", ".join(summary.unsubmitted_sample),
                )
        self._poll(summary)
        summary.stopped = self.stop.is_set()
        summary.seconds = time.monotonic() - started
        _log_pass(summary)
        if self.metrics is not None and not options.dry_run:
            result = "aborted" if summary.aborted else "errors" if summary.errors else "ok"
            self.metrics.observe_reconcile_pass(
                result=result,
                seconds=summary.seconds,
                rematched=summary.rematched,
                rejected_events=summary.rejected_events,
            )
        return summary

    def _claim(self, after_id: int, size: int) -> list[StuckSubmission]:
        options = self.options
        now = self.clock()
        stuck_before = now - timedelta(seconds=options.stuck_after)
        with self.engine.begin() as conn:
            if options.dry_run:
                if options.submission_ids:
                    return peek_named(conn, options.submission_ids)
                return peek_stuck(
                    conn, now=now, stuck_before=stuck_before, after_id=after_id, limit=size
                )
            if options.submission_ids:
                return claim_named(
                    conn,
                    options.submission_ids,
                    now=now,
                    owner=self.owner,
                    lease_seconds=options.lease_seconds,
                )
            return claim_stuck(
                conn,
                now=now,
                stuck_before=stuck_before,
                after_id=after_id,
                limit=size,
                owner=self.owner,
                lease_seconds=options.lease_seconds,
            )

    def _poll(self, summary: Summary) -> None:
        options = self.options
        pending: dict[Future[Fetched], StuckSubmission] = {}
        after_id = 0
        claimed = 0
        more = True
        finished: queue.SimpleQueue[Future[Fetched]] = queue.SimpleQueue()
        pool = ThreadPoolExecutor(options.concurrency, thread_name_prefix="reconcile")
        try:
            while True:
                if self.stop.is_set() or summary.aborted:
                    more = False
                    self._cancel(pending)
                size = options.batch
                if options.limit is not None:
                    size = min(size, options.limit - claimed)
                if more and size <= 0:
                    more = False
                if more and len(pending) <= options.concurrency:
                    jobs = self._claim(after_id, size)
                    if options.submission_ids:
                        more = False
                        self._report_unclaimed(summary, jobs)
                    elif len(jobs) < size:
                        more = False
                    if jobs:
                        after_id = jobs[-1].id
                    claimed += len(jobs)
                    for job in jobs:
                        future = pool.submit(self._fetch, job)
                        pending[future] = job
                        future.add_done_callback(finished.put)
                if not pending:
                    return
                # Futures report themselves when done (cancelled ones too, ignored here).
                future = finished.get()
                if future in pending:
                    self._settle(pending.pop(future), future.result(), summary)
        finally:
            self._cancel(pending)
            pool.shutdown(wait=True, cancel_futures=True)

    def _fetch(self, job: StuckSubmission) -> Fetched:
        try:
            return self.client.get_job(job.job_id)
        except ApiError as exc:
            return exc

    def _cancel(self, pending: dict[Future[Fetched], StuckSubmission]) -> None:
        """Drop the jobs not started yet and give their leases back; running ones finish."""
        dropped = [job.id for future, job in list(pending.items()) if future.cancel()]
        for future in [future for future in pending if future.cancelled()]:
            del pending[future]
        if dropped and not self.options.dry_run:
            try:
                with self.engine.begin() as conn:
                    release(conn, dropped, owner=self.owner)
            except SQLAlchemyError as exc:
                log.warning("could not release %d lease(s); they expire: %s", len(dropped), exc)

    def _settle(self, job: StuckSubmission, fetched: Fetched, summary: Summary) -> None:
        if isinstance(fetched, Interrupted):
            self._cancel_one(job)
            return
        if isinstance(fetched, AuthError):
            # No other job will fare better with this key: stop leasing, report once.
            summary.aborted = fetched.message
            self._cancel_one(job)
            return
        try:
            with self.engine.connect() as conn, conn.begin() as transaction:
                result, detail = settle_job(
                    conn,
                    job,
                    fetched,
                    now=self.clock(),
                    give_up_after=self.options.give_up_after,
                    write=not self.options.dry_run,
                )
                if self.options.dry_run:
                    transaction.rollback()
        except SQLAlchemyError as exc:
            result, detail = JobResult.ERROR, f"database error: {type(exc).__name__}"
        summary.record(result, job.job_id, job.submission_id, detail)
        _log_result(job, result, detail, dry_run=self.options.dry_run)
        if self.metrics is not None and not self.options.dry_run:
            self.metrics.observe_reconcile_job(result.value)
        if self.progress is not None:
            self.progress(1)

    def _cancel_one(self, job: StuckSubmission) -> None:
        if self.options.dry_run:
            return
        try:
            with self.engine.begin() as conn:
                release(conn, [job.id], owner=self.owner)
        except SQLAlchemyError as exc:
            log.warning("could not release the lease on %s: %s", job.submission_id, exc)

    def _report_unclaimed(self, summary: Summary, jobs: Sequence[StuckSubmission]) -> None:
        """Say why named submissions were not polled: unknown, no job yet, or leased."""
        taken = {job.submission_id for job in jobs}
        missing = [name for name in self.options.submission_ids if name not in taken]
        if not missing:
            return
        with self.engine.connect() as conn:
            result = conn.execute(
                sa.select(_submissions.c.submission_id, _submissions.c.job_id).where(
                    _submissions.c.submission_id.in_(missing)
                )
            )
            found: dict[str, str | None] = {name: job_id for name, job_id in result}
        for name in missing:
            if name not in found:
                summary.problem(name, "no such submission")
            elif found[name] is None:
                summary.skipped += 1
                log.warning("%s has no job yet; run submit for it", name)
            else:
                summary.skipped += 1
                log.warning("%s is leased by another reconciler right now", name)


def _log_result(
    job: StuckSubmission, result: JobResult, detail: str | None, *, dry_run: bool
) -> None:
    prefix = "dry run: would be " if dry_run else ""
    level = logging.WARNING if result is JobResult.ERROR else logging.INFO
    # One line per job polled; the fields are for the JSON log (receiver/logs.py).
    data = {
        "submission_id": job.submission_id,
        "job_id": job.job_id,
        "result": result.value,
        "detail": detail,
        "dry_run": dry_run,
    }
    log.log(
        level,
        "%s%s submission=%s job=%s: %s",
        prefix,
        result.name.lower(),
        job.submission_id,
        job.job_id,
        detail or "-",
        extra={"data": data},
    )


def _log_pass(summary: Summary) -> None:
    counts = summary.as_dict()
    counts.pop("problems")
    counts.pop("unsubmitted_sample")
    log.info(
        "reconcile pass: %d checked, %d updated, %d errors in %.1fs",
        summary.checked,
        summary.updated,
        summary.errors,
        summary.seconds,
        extra={"data": {"event": "reconcile_pass", **counts}},
    )
