"""Catch up from ittybit's event list: one request for up to 100 events, before any poll.

A pass holds the feed's lease (``reconcile.event_cursor``), reads ``GET /events`` forward
from the stored cursor (``order=asc&after=<cursor>&limit=100``), and applies each page's
job and task events in one transaction through the webhook's own code
(``receiver.flows.delivery.process_delivery``: the one rule function, the inbox row first,
the outbox in the same transaction). Each event is stored in the inbox with source
``events`` under the key of its event id, the key its webhook has too, so whichever comes
second is a duplicate; an event for a submission not known yet is kept ``unmatched`` and
matched later like a webhook. Only then, in a transaction of its own, does the cursor move.

Events about anything but a job, a task or a run (account events, unknown kinds) are
counted as ``ignored`` and not stored: nothing here could match them to a submission.

Are webhooks arriving? An event younger than ``silence_after`` (WEBHOOK_SILENCE_AFTER) is
left to its webhook: the reading stops before it, and a later pass reads it. An older one
was brought by a webhook when the inbox holds a delivery from a webhook (source ``url`` or
``endpoint``) under its event id or for its job and status; otherwise no webhook brought it
in time, and it counts as missed (``Summary.webhooks_missed``, ``MissedWatch``). A
``*.created`` event is not judged: the jobs API sends no webhook for a creation (the job is
known from the create's own answer), so its absence says nothing.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from receiver.flows.delivery import process_delivery
from receiver.flows.outbox import Outbox
from receiver.ittybit.client import ApiError, ApiEvent, AuthError, EventPage, IttybitClient
from receiver.store.inbox import Delivery, dedupe_key, record_rejected
from receiver.store.models import Outcome, WebhookEvent
from reconcile import event_cursor
from reconcile.summary import MissedWatch, Summary

__all__ = [
    "PAGE_SIZE",
    "UNAVAILABLE_STATUSES",
    "WEBHOOK_SOURCES",
    "EventListReader",
    "EventListUnavailable",
    "brought_by_webhooks",
]

log = logging.getLogger("reconcile.event_list")

#: ittybit's largest page.
PAGE_SIZE = 100
#: Answers that mean this API has no event list: the reconciler polls job by job instead.
UNAVAILABLE_STATUSES = frozenset({404, 405, 501})
#: Event kinds about a job, a task or a run (``job.succeeded``, ``task.updated``, ``run.*``).
_JOB_KINDS = ("job", "task", "run")
_SOURCE = "events"
#: Inbox sources that are webhooks: a signed per-submission URL, the project endpoint.
WEBHOOK_SOURCES = ("url", "endpoint")
_inbox = WebhookEvent.__table__  # type: ignore[attr-defined]


class EventListUnavailable(Exception):
    """The API answered ``GET /events`` with 404, 405 or 501: it has no event list."""

    def __init__(self, status: int | None, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def about_a_job(event: ApiEvent) -> bool:
    """Tell whether an event carries a job or task state the rules can apply."""
    if event.state is None:
        return False
    return event.kind is None or event.kind.split(".", 1)[0] in _JOB_KINDS


def brought_by_webhooks(conn: Connection, events: list[ApiEvent]) -> list[bool]:
    """Tell, per job event, whether a webhook delivered it: its event id or job and status.

    Two queries a page, on the unique key and on the job id's index.
    """
    keys = [f"evt:{event.id}" for event in events if event.id]
    by_key: set[str] = set()
    if keys:
        rows = conn.execute(
            sa.select(_inbox.c.dedupe_key).where(
                _inbox.c.dedupe_key.in_(keys), _inbox.c.source.in_(WEBHOOK_SOURCES)
            )
        )
        by_key = {key for (key,) in rows}
    job_ids = sorted({event.state.job_id for event in events if event.state is not None})
    by_job: set[tuple[str, str]] = set()
    if job_ids:
        rows = conn.execute(
            sa.select(_inbox.c.job_id, _inbox.c.provider_status).where(
                _inbox.c.job_id.in_(job_ids), _inbox.c.source.in_(WEBHOOK_SOURCES)
            )
        )
        by_job = {(job_id, status) for job_id, status in rows}
    return [
        f"evt:{event.id}" in by_key
        or (event.state is not None and (event.state.job_id, event.state.provider_status) in by_job)
        for event in events
    ]


class EventListReader:
    """Read the event list after the stored cursor and apply it, one page at a time."""

    def __init__(
        self,
        engine: Engine,
        client: IttybitClient,
        *,
        outbox: Outbox,
        owner: str,
        clock: Callable[[], datetime],
        lease_seconds: float,
        max_pages: int,
        stop: threading.Event | None = None,
        silence_after: float = 0.0,
        watch: MissedWatch | None = None,
    ) -> None:
        self.engine = engine
        self.client = client
        self.api_url = client.base_url
        self.outbox = outbox
        self.owner = owner
        self.clock = clock
        self.lease_seconds = lease_seconds
        self.max_pages = max_pages
        self.stop = stop or threading.Event()
        self.silence_after = silence_after
        self.watch = watch or MissedWatch()

    def catch_up(
        self, summary: Summary, *, since: float | None = None, first_since: float | None = None
    ) -> None:
        """Read and apply the events listed after the cursor, counting them in ``summary``.

        ``since`` (seconds) places the cursor that far back first, whatever it was;
        ``first_since`` does so only when no pass placed the cursor yet. Without either,
        a first pass starts at the newest event and reads nothing older. Raises
        EventListUnavailable when the API has no list, AuthError when it refuses the key;
        any other failure ends the reading with a note and lets the polls follow.
        """
        with self.engine.begin() as conn:
            position = event_cursor.acquire(
                conn,
                self.api_url,
                owner=self.owner,
                now=self.clock(),
                lease_seconds=self.lease_seconds,
            )
        if position is None:
            summary.events_elsewhere = True
            summary.events_note = "another reconciler is reading it, and polls after"
            log.info("the event list is being read by another reconciler; polling only")
            return
        try:
            self._read(summary, position, since=since, first_since=first_since)
        except (EventListUnavailable, AuthError):
            raise
        except ApiError as exc:
            summary.events_note = f"stopped: {exc.message}"
            log.warning("event list: %s; the rest is left for the next pass", exc.message)
        except SQLAlchemyError as exc:
            summary.events_note = f"stopped: database error {type(exc).__name__}"
            log.warning("event list: database error %s; the page is read again next pass", exc)
        finally:
            self._release()

    def _read(
        self,
        summary: Summary,
        position: event_cursor.FeedPosition,
        *,
        since: float | None,
        first_since: float | None,
    ) -> None:
        cursor, cursor_at = position.cursor, position.cursor_at
        backfill = since if since is not None else None if position.started else first_since
        if backfill is not None:
            cursor, cursor_at = self._place_since(summary, backfill)
            if not self._move(cursor, cursor_at):
                summary.events_note = "lost the event list's lease to another reconciler"
                return
        elif not position.started:
            self._place_at_newest(summary)
            return
        # The next page is fetched while this one is applied: it starts after this page's
        # last event whatever applying does, and the wait for ittybit overlaps the writes.
        with ThreadPoolExecutor(1, thread_name_prefix="event-list") as pool:
            ahead: Future[EventPage] | None = None
            while summary.event_pages < self.max_pages and not self.stop.is_set():
                if ahead is None:
                    ahead = pool.submit(self._fetch, cursor, PAGE_SIZE, "asc")
                page = self._ripe(summary, self._count(summary, ahead.result(), order="asc"))
                ahead = None
                last = next((event for event in reversed(page.events) if event.id), None)
                more = page.has_more and last is not None
                if more and summary.event_pages < self.max_pages and last is not None:
                    ahead = pool.submit(self._fetch, last.id, PAGE_SIZE, "asc")
                if page.events:
                    self._apply_page(page, summary)
                    if last is not None:
                        if not self._move(last.id, last.created_at or cursor_at):
                            summary.events_note = (
                                "lost the event list's lease to another reconciler"
                            )
                            break
                        cursor, cursor_at = last.id, last.created_at or cursor_at
                        summary.event_cursor = cursor
                if not more:
                    break
            else:
                summary.events_more = not self.stop.is_set()
            if ahead is not None:
                ahead.cancel()
        summary.event_cursor = cursor
        if summary.events_more:
            summary.events_note = (
                f"stopped after {summary.event_pages} page(s) (RECONCILE_EVENT_PAGES) "
                f"at {cursor}; more are listed"
            )

    def _ripe(self, summary: Summary, page: EventPage) -> EventPage:
        """Return the page's events old enough to judge; the reading stops before the rest.

        Events come oldest first: the first one younger than ``silence_after`` and all
        after it wait for a later pass, their webhooks having had no time yet.
        """
        if self.silence_after <= 0:
            return page
        threshold = self.clock() - timedelta(seconds=self.silence_after)
        for index, event in enumerate(page.events):
            if event.created_at is not None and event.created_at > threshold:
                summary.events_waiting += len(page.events) - index
                summary.events_read -= len(page.events) - index
                ripe = page.events[:index]
                return EventPage(events=ripe, has_more=False, next_after=None)
        return page

    def _place_at_newest(self, summary: Summary) -> None:
        """First pass: start at the newest event; an empty list starts at its beginning."""
        page = self._page(summary, after=None, limit=1, order=None)
        newest = next((event for event in page.events if event.id), None)
        cursor = newest.id if newest else None
        self._move(cursor, newest.created_at if newest else None)
        summary.event_cursor = cursor
        summary.events_note = (
            f"first pass: placed at the newest event; later passes read what follows {cursor}"
            if cursor
            else "first pass: the list is empty; later passes read it from its beginning"
        )
        log.info("event list: %s", summary.events_note)

    def _page(
        self, summary: Summary, *, after: str | None, limit: int, order: str | None
    ) -> EventPage:
        return self._count(summary, self._fetch(after, limit, order), order=order)

    def _fetch(self, after: str | None, limit: int, order: str | None) -> EventPage:
        """Ask for one page; 404, 405 or 501 mean this API has no event list."""
        try:
            return self.client.list_events(after=after, limit=limit, order=order)
        except AuthError:
            raise
        except ApiError as exc:
            if exc.status in UNAVAILABLE_STATUSES:
                raise EventListUnavailable(exc.status, exc.message) from None
            raise

    @staticmethod
    def _count(summary: Summary, page: EventPage, *, order: str | None) -> EventPage:
        summary.event_pages += 1
        if order == "asc":  # read forward: each event is applied
            summary.events_read += len(page.events)
        return page

    def _place_since(self, summary: Summary, seconds: float) -> tuple[str | None, datetime | None]:
        """Return the cursor ``seconds`` back: the newest event listed before then.

        Pages back from the newest event (ittybit's default order). When every event is
        more recent, the list is read from its beginning; when the page budget runs out
        first, from the oldest event seen.
        """
        threshold = self.clock() - timedelta(seconds=seconds)
        after: str | None = None
        oldest: ApiEvent | None = None
        while summary.event_pages < self.max_pages:
            page = self._page(summary, after=after, limit=PAGE_SIZE, order="desc")
            for event in page.events:
                if event.id is None:
                    continue
                if event.created_at is not None and event.created_at < threshold:
                    return event.id, event.created_at
                oldest = event
            if not page.has_more or not page.events:
                return None, None
            after = page.next_after
        log.warning("event list: the backfill's search spent every page; starting from %s", oldest)
        return (oldest.id, oldest.created_at) if oldest else (None, None)

    def _apply_page(self, page: EventPage, summary: Summary) -> None:
        """Apply a page's job and task events in one transaction.

        A job id that belongs to another submission fails the whole page; it is then
        applied again with a savepoint around each event, and that one is rejected.
        """
        try:
            counts, verdicts = self._write_page(page, guarded=False)
        except IntegrityError:
            log.info("event list: a job id collides; applying the page event by event")
            counts, verdicts = self._write_page(page, guarded=True)
        for name, count in counts.items():
            setattr(summary, f"events_{name}", getattr(summary, f"events_{name}") + count)
        for event, brought in verdicts:
            self.watch.see(event.created_at, brought=brought)
            if brought:
                summary.webhooks_brought += 1
            else:
                summary.webhooks_missed += 1
        summary.webhooks_missed_streak = self.watch.streak
        since = self.watch.since
        summary.webhooks_missed_since = since.isoformat() if since else None

    def _write_page(
        self, page: EventPage, *, guarded: bool
    ) -> tuple[dict[str, int], list[tuple[ApiEvent, bool]]]:
        """Apply a page; return the outcomes and, per job event, whether a webhook brought it."""
        counts: dict[str, int] = {}
        with self.engine.begin() as conn:
            now = self.clock()
            jobs = [event for event in page.events if about_a_job(event)]
            if len(jobs) < len(page.events):
                counts["ignored"] = len(page.events) - len(jobs)
            judged = [event for event in jobs if not (event.kind or "").endswith(".created")]
            verdicts = list(zip(judged, brought_by_webhooks(conn, judged), strict=True))
            for event in jobs:
                outcome = self._apply_one(conn, event, now=now, guarded=guarded)
                counts[outcome.value] = counts.get(outcome.value, 0) + 1
        return counts, verdicts

    def _apply_one(
        self, conn: Connection, event: ApiEvent, *, now: datetime, guarded: bool
    ) -> Outcome:
        state = event.state
        assert state is not None
        delivery = Delivery(
            source=_SOURCE,
            body=json.dumps(dict(event.raw), separators=(",", ":")),
            headers={},
        )
        if not guarded:
            return process_delivery(
                conn, delivery=delivery, state=state, claims=None, now=now, outbox=self.outbox
            ).outcome
        try:
            with conn.begin_nested():
                result = process_delivery(
                    conn, delivery=delivery, state=state, claims=None, now=now, outbox=self.outbox
                )
        except IntegrityError:
            # Filling in the job id collided with the submission that already owns it.
            record_rejected(
                conn,
                key=dedupe_key(None, state),
                delivery=delivery,
                state=state,
                submission_id=state.meta_str("submission_id"),
                reason="job id belongs to another submission",
                now=now,
            )
            return Outcome.REJECTED
        return result.outcome

    def _move(self, cursor: str | None, cursor_at: datetime | None) -> bool:
        """Move the cursor in a transaction of its own; False when the lease was lost."""
        with self.engine.begin() as conn:
            moved = event_cursor.move_cursor(
                conn,
                self.api_url,
                owner=self.owner,
                cursor=cursor,
                cursor_at=cursor_at,
                now=self.clock(),
                lease_seconds=self.lease_seconds,
            )
        if not moved:
            log.warning("event list: the lease was lost; another reconciler reads on")
        return moved

    def _release(self) -> None:
        try:
            with self.engine.begin() as conn:
                event_cursor.release(conn, self.api_url, owner=self.owner)
        except SQLAlchemyError as exc:
            log.warning("could not release the event list's lease; it expires: %s", exc)
