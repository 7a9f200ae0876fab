"""One reconcile pass: lease stuck submissions, fetch their jobs, apply what ittybit says.

HTTP fetches run on a thread pool; every database write happens on the calling
thread, one short transaction per job through ``receiver.flows.polling.settle_job`` (the same
``apply_job_state`` the webhook uses), so the ordering and terminal rules hold whoever
comes first. Rows are leased a few at a time as the pool drains, so memory stays flat
however many rows are stuck, and the leases of rows still waiting are renewed, so no
lease runs out while its holder still has the row in hand.
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
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from config.settings import WEB_WORKER_TIMEOUT, Settings
from receiver.flows.outbox import Outbox
from receiver.flows.polling import (
    Fetched,
    JobResult,
    NoRealJob,
    NoSlotFree,
    PolledJob,
    ask_ittybit_now,
    settle_job,
)
from receiver.flows.records import InvalidSubmission
from receiver.flows.replay import rematch_unmatched
from receiver.flows.submit import defer_job, submit_job
from receiver.ittybit.client import ApiError, AuthError, BadResponse, Interrupted, IttybitClient
from receiver.observe import tracing
from receiver.store.engines import read_only
from receiver.store.models import ReconcilePass, Submission, utcnow
from receiver.store.stuck import count_not_due, unsubmitted
from reconcile.claims import (
    PendingJob,
    claim_awaiting_job,
    claim_stuck,
    lease_named,
    peek_awaiting_job,
    peek_named,
    peek_stuck,
    release,
    renew,
)
from reconcile.event_list import EventListReader, EventListUnavailable
from reconcile.summary import MissedWatch, Summary, log_pass, log_result, log_webhooks_missing

if TYPE_CHECKING:
    from receiver.observe.metrics import Metrics

__all__ = ["SUBMIT_GRACE", "PassOptions", "Reconciler", "lease_owner"]

log = logging.getLogger(__name__)
#: What a pass's span tells of it (the summary's counts, as its log line does).
_TRACED_COUNTS = ("checked", "updated", "failed", "expired", "errors", "deferred", "events_read")

#: A job asked for this long ago is the worker's to create: no web request that asked for
#: it can still be running (gunicorn ends every request by then), so the two never race.
SUBMIT_GRACE = float(WEB_WORKER_TIMEOUT)

_submissions = Submission.__table__  # type: ignore[attr-defined]
_passes = ReconcilePass.__table__  # type: ignore[attr-defined]


def lease_owner() -> str:
    """Return a name for this reconciler's leases: host, process and a random tag."""
    return f"{socket.gethostname()[:60]}:{os.getpid()}:{secrets.token_hex(4)}"


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
    #: Read ittybit's event list before polling (RECONCILE_EVENTS).
    events: bool = True
    event_pages: int = 20
    #: Seconds back to place the event list's cursor at, this pass (``--events-since``).
    events_since: float | None = None
    #: The same, only when no pass has placed the cursor yet (RECONCILE_EVENTS_SINCE).
    events_first_since: float | None = None
    #: Seconds a listed event waits for its webhook before it counts as missed
    #: (WEBHOOK_SILENCE_AFTER); 0 judges every event at once, as a test or one-off may.
    silence_after: float = 0.0

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> PassOptions:
        """Return the options the settings give, with ``overrides`` on top."""
        values: dict[str, Any] = {
            "stuck_after": settings.stuck_after,
            "give_up_after": settings.give_up_after,
            "batch": settings.reconcile_batch,
            "concurrency": settings.reconcile_concurrency,
            "lease_seconds": settings.lease_seconds,
            "events": settings.reconcile_events == "on",
            "event_pages": settings.reconcile_event_pages,
            "events_first_since": settings.reconcile_events_since,
            "silence_after": settings.webhook_silence_after,
        }
        values.update({key: value for key, value in overrides.items() if value is not None})
        return cls(**values)


class Reconciler:
    """Runs passes over one database with one API client; several may run at once."""

    def __init__(
        self,
        engine: Engine,
        client: IttybitClient,
        options: PassOptions,
        *,
        outbox: Outbox,
        clock: Callable[[], datetime] = utcnow,
        stop: threading.Event | None = None,
        owner: str | None = None,
        progress: Callable[[int], object] | None = None,
        metrics: Metrics | None = None,
        settings: Settings | None = None,
    ) -> None:
        """Prepare passes; with ``settings`` (the webhook URLs' keys) a pass also creates
        the jobs asked for by pending submissions (``submit`` or the API)."""
        self.engine = engine
        self.client = client
        self.options = options
        self.outbox = outbox
        self.clock = clock
        self.stop = stop or threading.Event()
        self.owner = owner or lease_owner()
        self.progress = progress
        self.metrics = metrics
        self.settings = settings
        #: Why this process reads no event list (turned off, or the API has none): said once.
        self.events_off: str | None = None
        self._events_off_said = False
        #: Listed events no webhook brought, in a row, across this process's passes.
        self.watch = MissedWatch()
        if not options.events:
            self.events_off = "turned off (RECONCILE_EVENTS=off)"

    def run_pass(self) -> Summary:
        """Read the event list, re-match unmatched events, create asked-for jobs, then poll
        every job still due once (in a span, when traces are on)."""
        with tracing.span("reconcile pass") as current:
            summary = self._run_pass()
            if current is not None:
                current.set_attributes(
                    {
                        f"jobhooks.reconcile.{name}": getattr(summary, name)
                        for name in _TRACED_COUNTS
                    }
                    | {"jobhooks.reconcile.dry_run": summary.dry_run}
                )
        return summary

    def _run_pass(self) -> Summary:
        started = time.monotonic()
        started_at = self.clock()
        options = self.options
        summary = Summary(dry_run=options.dry_run)
        if not options.submission_ids:
            self._read_events(summary)
            self._before_polling(summary, now=started_at)
        else:
            summary.events_note = "not read: the submissions named are asked about directly"
        if summary.events_more and not self.stop.is_set():
            # The unread pages very likely settle the jobs a poll would ask about now.
            log.info("the event list has more pages: polls wait for the next pass")
        elif summary.events_elsewhere:
            # Its reader polls what the list leaves stuck, once it has read it.
            log.info("another reconciler reads the event list: it polls afterwards")
        elif summary.aborted is None and options.submission_ids and not options.dry_run:
            self._ask_named(summary)
        elif summary.aborted is None:
            self._poll(summary)
        if summary.checked == 0 and not options.submission_ids:
            self._count_not_due(summary)
        summary.stopped = self.stop.is_set()
        summary.seconds = time.monotonic() - started
        log_pass(summary)
        if not options.dry_run:
            self._record_pass(summary, started_at=started_at)
            if self.metrics is not None:
                result = "aborted" if summary.aborted else "errors" if summary.errors else "ok"
                self.metrics.observe_reconcile_pass(
                    result=result,
                    seconds=summary.seconds,
                    rematched=summary.rematched,
                    rejected_events=summary.rejected_events,
                )
                self.metrics.observe_event_list(
                    read=summary.events_read,
                    pages=summary.event_pages,
                    outcomes=summary.event_outcomes(),
                    missed=summary.webhooks_missed,
                )
        return summary

    def _read_events(self, summary: Summary) -> None:
        """Catch up from ittybit's event list, unless this process found it off or absent."""
        if self.options.dry_run:
            summary.events_note = "not read in a dry run"
            return
        if self.events_off is None:
            feed = EventListReader(
                self.engine,
                self.client,
                outbox=self.outbox,
                owner=self.owner,
                clock=self.clock,
                lease_seconds=self.options.lease_seconds,
                max_pages=self.options.event_pages,
                stop=self.stop,
                silence_after=self.options.silence_after,
                watch=self.watch,
            )
            try:
                feed.catch_up(
                    summary,
                    since=self.options.events_since,
                    first_since=self.options.events_first_since,
                )
            except EventListUnavailable as exc:
                self.events_off = f"the API has no event list ({exc.message})"
            except AuthError as exc:
                summary.aborted = exc.message
                return
            if summary.webhooks_missed and self.watch.alarming:
                log_webhooks_missing(
                    self.watch,
                    silence_after=self.options.silence_after,
                    endpoint=self._endpoint_status(),
                )
        if self.events_off is not None:
            summary.events_note = f"not read: {self.events_off}"
            if not self._events_off_said:
                self._events_off_said = True
                log.warning("event list %s: polling job by job", summary.events_note)

    def _endpoint_status(self) -> str | None:
        """Return the status of this service's endpoint on ittybit, when the API says it."""
        if self.settings is None:
            return None
        url = self.settings.public_url.rstrip("/") + "/webhooks/ittybit"
        try:
            endpoints = self.client.list_endpoints()
        except ApiError:
            return None  # an API without endpoints, or not now: the line says what to check
        found = next((item for item in endpoints if item.url == url), None)
        return found.status if found else "not registered (`jobhooks ittybit connect`)"

    def _before_polling(self, summary: Summary, *, now: datetime) -> None:
        options = self.options
        report = rematch_unmatched(
            self.engine, now=now, outbox=self.outbox, batch=options.batch, dry_run=options.dry_run
        )
        summary.rematched = report.matched
        summary.rejected_events = report.rejected
        summary.errors += report.errors
        self._create_jobs(summary, now=now)
        with read_only(self.engine).connect() as conn:
            summary.unsubmitted, summary.unsubmitted_sample = unsubmitted(
                conn, stuck_before=now - timedelta(seconds=options.stuck_after)
            )
        if summary.unsubmitted:
            log.warning(
                "%d pending submission(s) have no job yet (e.g. %s); run submit for them",
                summary.unsubmitted,
                ", ".join(summary.unsubmitted_sample),
            )

    def _create_jobs(self, summary: Summary, *, now: datetime) -> None:
        """Create the jobs pending submissions asked for, a batch per pass, leased.

        Through ``submit_job``, the command's and the API's code, with the submission's
        idempotency key: a job ittybit already made for it is answered again, never made
        twice. A failure backs off like a poll (1 min, 2, 4… up to 1 h).
        """
        settings = self.settings
        if settings is None:
            return
        options = self.options
        requested_before = now - timedelta(seconds=SUBMIT_GRACE)
        with self.engine.begin() as conn:
            if options.dry_run:
                summary.submitted = len(
                    peek_awaiting_job(
                        conn, now=now, requested_before=requested_before, limit=options.batch
                    )
                )
                return
            jobs = claim_awaiting_job(
                conn,
                now=now,
                requested_before=requested_before,
                limit=options.batch,
                owner=self.owner,
                lease_seconds=options.lease_seconds,
            )
        if not jobs:
            return
        with ThreadPoolExecutor(
            min(options.concurrency, len(jobs)), thread_name_prefix="submit"
        ) as pool:
            errors = list(pool.map(lambda job: self._create_job(job, settings), jobs))
        failed = []
        for job, error in zip(jobs, errors, strict=True):
            if error is None:
                summary.submitted += 1
                continue
            failed.append((job, error))
            if isinstance(error, AuthError):
                summary.aborted = error.message
            else:
                summary.problem(job.submission_id, f"job not created: {error}")
        self._after_creating(jobs, failed)

    def _create_job(self, job: PendingJob, settings: Settings) -> ApiError | str | None:
        """Create one asked-for job; return the error, if any."""
        try:
            result = submit_job(
                self.engine,
                self.client,
                settings,
                submission_id=job.submission_id,
                user_id=job.user_id,
                input_url=job.input_url,
                now=self.clock(),
                outbox=self.outbox,
                kind=job.job_kind,
                options=job.job_options,
            )
        except (InvalidSubmission, SQLAlchemyError) as exc:
            return f"{type(exc).__name__}: {exc}"[:300]
        if result.submission.job_id is not None:
            log.info("created job %s for %s", result.submission.job_id, job.submission_id)
            return None
        return result.api_error or result.error or "no job was created"

    def _after_creating(
        self, jobs: Sequence[PendingJob], failed: Sequence[tuple[PendingJob, ApiError | str]]
    ) -> None:
        """Give the leases back; a job not created is tried again after a backoff."""
        now = self.clock()
        try:
            with self.engine.begin() as conn:
                for job, error in failed:
                    message = error.message if isinstance(error, ApiError) else error
                    defer_job(conn, job.id, attempts=job.poll_attempts + 1, error=message, now=now)
                release(conn, [job.id for job in jobs], owner=self.owner)
        except SQLAlchemyError as exc:
            log.warning("could not release %d lease(s); they expire: %s", len(jobs), exc)

    def _count_not_due(self, summary: Summary) -> None:
        now = self.clock()
        with read_only(self.engine).connect() as conn:
            summary.not_due, summary.backing_off = count_not_due(
                conn, now=now, stuck_before=now - timedelta(seconds=self.options.stuck_after)
            )

    def _record_pass(self, summary: Summary, *, started_at: datetime) -> None:
        counts = summary.as_dict()
        counts.pop("problems")
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    sa.insert(_passes),
                    {
                        "started_at": started_at,
                        "finished_at": self.clock(),
                        "owner": self.owner,
                        "ok": summary.ok,
                        "counts": counts,
                    },
                )
        except SQLAlchemyError as exc:
            log.warning("could not record the reconcile pass: %s", type(exc).__name__)

    def _claim(self, after_id: int, size: int) -> list[PolledJob]:
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
        # Rows in hand: at most one more round than the threads are fetching, so a leased
        # row waits for at most one fetch before its own starts.
        in_hand = 2 * options.concurrency
        pending: dict[Future[Fetched], PolledJob] = {}
        after_id = 0
        claimed = 0
        more = True
        renewed_at = time.monotonic()
        finished: queue.SimpleQueue[Future[Fetched]] = queue.SimpleQueue()
        pool = ThreadPoolExecutor(options.concurrency, thread_name_prefix="reconcile")
        try:
            while True:
                if self.stop.is_set() or summary.aborted:
                    more = False
                    self._cancel(pending)
                size = min(options.batch, in_hand - len(pending))
                if options.limit is not None:
                    size = min(size, options.limit - claimed)
                if more and options.limit is not None and claimed >= options.limit:
                    more = False
                if more and size > 0 and len(pending) <= options.concurrency:
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
                done: Future[Fetched] | None
                try:
                    # Futures report themselves when done (cancelled ones too, ignored here).
                    done = finished.get(timeout=self._renew_every())
                except queue.Empty:
                    done = None
                if time.monotonic() - renewed_at >= self._renew_every():
                    self._renew(pending)
                    renewed_at = time.monotonic()
                if done is not None and done in pending:
                    self._settle(pending.pop(done), done.result(), summary)
        finally:
            self._cancel(pending)
            pool.shutdown(wait=True, cancel_futures=True)

    def _ask_named(self, summary: Summary) -> None:
        """Ask about each named submission, one by one, through the "ask ittybit now" the
        application API and the admin view use, guarded by the submission's lease.

        Not a web worker, so no web slot applies; the lease keeps it off a job another
        reconciler has in hand (skipped, as a pass skips it). A dry run keeps the pass's
        path (``_poll``: peeked, nothing leased or written); with ``--events-since`` too,
        this runs as here, since a pass naming submissions reads no event list.
        """
        for name in self.options.submission_ids:
            if self.stop.is_set() or summary.aborted:
                return
            guard = lease_named(
                self.engine,
                name,
                now=self.clock(),
                owner=self.owner,
                lease_seconds=self.options.lease_seconds,
            )
            try:
                asked = ask_ittybit_now(
                    self.engine,
                    self.client,
                    name,
                    guard=guard,
                    source="reconcile",
                    now=self.clock(),
                    give_up_after=self.options.give_up_after,
                    outbox=self.outbox,
                )
            except (LookupError, NoRealJob, NoSlotFree) as exc:
                self._not_asked(summary, name, exc)
                continue
            except SQLAlchemyError as exc:
                summary.problem(name, f"database error: {type(exc).__name__}")
                continue
            if asked is None:
                self._not_asked(summary, name, None)
                continue
            if isinstance(asked.error, AuthError):
                # No other job will fare better with this key, as in a pass.
                summary.aborted = asked.error.message
            summary.record(asked.result, asked.job.job_id, name, asked.detail)
            log_result(asked.job, asked.result, asked.detail, dry_run=False)
            if self.metrics is not None:
                self.metrics.observe_reconcile_job(asked.result.value)
            if self.progress is not None:
                self.progress(1)

    def _not_asked(self, summary: Summary, name: str, why: Exception | None) -> None:
        """Count a named submission ittybit was not asked about, and say why."""
        if isinstance(why, LookupError):
            summary.problem(name, "no such submission")
            return
        summary.skipped += 1
        if isinstance(why, NoRealJob):
            log.warning("%s is a test submission: it has no real job to ask about", name)
        elif why is None:
            log.warning("%s has no job yet; run submit for it", name)
        else:
            log.warning("%s is leased by another reconciler right now", name)

    def _renew_every(self) -> float:
        return max(0.05, self.options.lease_seconds / 3)

    def _renew(self, pending: dict[Future[Fetched], PolledJob]) -> None:
        """Extend the leases of the rows still in hand, before any can run out."""
        if self.options.dry_run or not pending:
            return
        ids = [job.id for job in pending.values()]
        try:
            with self.engine.begin() as conn:
                held = renew(
                    conn,
                    ids,
                    owner=self.owner,
                    now=self.clock(),
                    lease_seconds=self.options.lease_seconds,
                )
        except SQLAlchemyError as exc:
            log.warning("could not renew %d lease(s): %s", len(ids), type(exc).__name__)
            return
        if held < len(ids):
            log.warning("%d of %d lease(s) were lost before renewal", len(ids) - held, len(ids))

    def _fetch(self, job: PolledJob) -> Fetched:
        try:
            return self.client.get_job(job.job_id)
        except ApiError as exc:
            return exc
        except Exception as exc:  # one job's bad answer must not stop the pass
            log.warning("job %s: unexpected error while fetching", job.job_id, exc_info=True)
            message = f"GET {job.job_id}: could not read the answer ({type(exc).__name__})"
            return BadResponse(message)

    def _cancel(self, pending: dict[Future[Fetched], PolledJob]) -> None:
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

    def _settle(self, job: PolledJob, fetched: Fetched, summary: Summary) -> None:
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
                    outbox=self.outbox,
                    owner=self.owner,
                    write=not self.options.dry_run,
                )
                if self.options.dry_run:
                    transaction.rollback()
        except SQLAlchemyError as exc:
            result, detail = JobResult.ERROR, f"database error: {type(exc).__name__}"
        summary.record(result, job.job_id, job.submission_id, detail)
        log_result(job, result, detail, dry_run=self.options.dry_run)
        if self.metrics is not None and not self.options.dry_run:
            self.metrics.observe_reconcile_job(result.value)
        if self.progress is not None:
            self.progress(1)

    def _cancel_one(self, job: PolledJob) -> None:
        if self.options.dry_run:
            return
        try:
            with self.engine.begin() as conn:
                release(conn, [job.id], owner=self.owner)
        except SQLAlchemyError as exc:
            log.warning("could not release the lease on %s: %s", job.submission_id, exc)

    def _report_unclaimed(self, summary: Summary, jobs: Sequence[PolledJob]) -> None:
        """Say why named submissions were not polled: unknown, no job, a test, or leased."""
        taken = {job.submission_id for job in jobs}
        missing = [name for name in self.options.submission_ids if name not in taken]
        if not missing:
            return
        with read_only(self.engine).connect() as conn:
            result = conn.execute(
                sa.select(
                    _submissions.c.submission_id, _submissions.c.job_id, _submissions.c.is_test
                ).where(_submissions.c.submission_id.in_(missing))
            )
            found = {name: (job_id, is_test) for name, job_id, is_test in result}
        for name in missing:
            if name not in found:
                summary.problem(name, "no such submission")
                continue
            summary.skipped += 1
            job_id, is_test = found[name]
            if is_test:
                log.warning("%s is a test submission: it has no real job to ask about", name)
            elif job_id is None:
                log.warning("%s has no job yet; run submit for it", name)
            else:
                log.warning("%s is leased by another reconciler right now", name)
