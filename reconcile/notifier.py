"""Deliver the outbox: each notification to its endpoint, signed, retried, in order.

Rows are leased a few at a time (``reconcile.notify_claims``) and sent on a small thread
pool; every database write happens on the calling thread. A notification is signed with
Standard Webhooks headers, its ``webhook-id`` the row's ``message_id``, the same on every
attempt so that the application can dedupe. A 2xx within fifteen seconds delivers it; anything
else is retried with exponential backoff and jitter, from seconds up to an hour, later when
a 429 or 503 says ``Retry-After``, until ``NOTIFY_MAX_AGE`` has passed since the change:
then it is ``dead``, kept, and retried only by hand. Every attempt is one log line.

The loop looks for due rows every half second, on a read-only connection (SQLite's write
lock is taken only when there is something to lease), so a notification goes out well
within two seconds of its change when the endpoint is up.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from config.settings import Settings
from receiver.core.signing import sign_standard_webhook
from receiver.flows.endpoints import (
    HealthChange,
    give_back,
    record_health,
    signing_keys,
    take_allowance,
)
from receiver.flows.outbox import announce_operational, endpoint_label
from receiver.ittybit.client import parse_retry_after, tls_context
from receiver.observe import tracing
from receiver.store.engines import read_only
from receiver.store.models import NotifyEndpoint, utcnow
from reconcile.notify_claims import (
    RESPONSE_KEPT,
    Ended,
    Leased,
    claim_due,
    due_endpoints,
    peek_due,
    record_attempts,
    record_delivered,
    record_failed,
)
from reconcile.notify_limits import DELIVERY_TIMEOUT, LEASE_SECONDS
from reconcile.passes import lease_owner

if TYPE_CHECKING:
    from receiver.observe.metrics import Metrics

__all__ = [
    "DELIVERY_TIMEOUT",
    "Attempt",
    "AttemptResult",
    "Backoff",
    "Notifier",
    "Tally",
    "delivering_in_background",
    "send_notification",
    "signature_header",
]

log = logging.getLogger(__name__)

_endpoints = NotifyEndpoint.__table__  # type: ignore[attr-defined]
_ENDPOINT = sa.select(_endpoints).where(_endpoints.c.id == sa.bindparam("id"))

#: How often an idle notifier looks for due rows.
POLL_INTERVAL = 0.5
#: How long the loop waits after the database failed it before trying again.
RECOVERY_PAUSE = 5.0
USER_AGENT = "jobhooks-notify/1"


@dataclass(frozen=True, slots=True)
class Backoff:
    """Waits between attempts: ``first`` doubling up to ``cap``, each drawn from its upper half.

    The jitter spreads the retries of many notifications that failed together (an
    application's outage) instead of sending them back all at once.
    """

    first: float = 5.0
    cap: float = 3600.0

    def delay(self, attempts: int, rng: random.Random) -> float:
        """Return the wait after attempt number ``attempts`` (1-based)."""
        ceiling = min(self.cap, self.first * 2.0 ** max(0, attempts - 1))
        return ceiling * rng.uniform(0.5, 1.0)


class AttemptResult(StrEnum):
    """What one attempt came to."""

    DELIVERED = "delivered"
    #: The endpoint answered, but not with a 2xx within the time allowed.
    FAILED = "failed"
    #: No answer: connection refused or reset, a name that does not resolve, a timeout.
    UNREACHABLE = "unreachable"


@dataclass(frozen=True, slots=True)
class Attempt:
    """One POST of a notification and what came of it."""

    result: AttemptResult
    started_at: datetime
    seconds: float
    status: int | None = None
    error: str | None = None
    retry_after: float | None = None
    #: The first kilobyte of the answer's body, as text.
    response: str | None = None


def signature_header(keys: Sequence[bytes], *, msg_id: str, timestamp: int, body: bytes) -> str:
    """Return ``webhook-signature``: one ``v1`` signature per key, newest first.

    While a secret is being rotated (``NOTIFY_SECRET=new,old``) an application still
    holding the old one verifies as well as one holding the new: Standard Webhooks
    libraries accept a request when any of the listed signatures matches their secret.
    """
    return " ".join(
        sign_standard_webhook(key, msg_id=msg_id, timestamp=timestamp, body=body) for key in keys
    )


def send_notification(
    client: httpx.Client,
    endpoint: str,
    body: bytes,
    *,
    msg_id: str,
    keys: Sequence[bytes],
    now: datetime,
    timeout: float = DELIVERY_TIMEOUT,
) -> Attempt:
    """POST one signed notification to ``endpoint`` and tell what came of it."""
    timestamp = int(now.timestamp())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(keys, msg_id=msg_id, timestamp=timestamp, body=body),
    }
    started = time.monotonic()
    try:
        # Streamed: only the answer's first kilobyte is read, kept with the attempt (never
        # logged); the rest is left unread.
        with client.stream(
            "POST", endpoint, content=body, headers=headers, timeout=timeout
        ) as response:
            status = response.status_code
            retry_after = None
            if status in (429, 503):
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
            answer = _first_kilobyte(response)
    except httpx.TimeoutException:
        seconds = time.monotonic() - started
        error = f"no answer within {timeout:g}s"
        return Attempt(AttemptResult.UNREACHABLE, now, seconds, error=error)
    except httpx.HTTPError as exc:
        seconds = time.monotonic() - started
        return Attempt(AttemptResult.UNREACHABLE, now, seconds, error=_describe(exc, endpoint))
    seconds = time.monotonic() - started
    if 200 <= status < 300 and seconds <= timeout:
        return Attempt(AttemptResult.DELIVERED, now, seconds, status=status, response=answer)
    if 200 <= status < 300:
        error = f"HTTP {status} after {seconds:.1f}s, past the {timeout:g}s allowed"
    else:
        error = f"HTTP {status}"
    return Attempt(
        AttemptResult.FAILED,
        now,
        seconds,
        status=status,
        error=error,
        retry_after=retry_after,
        response=answer,
    )


def _first_kilobyte(response: httpx.Response) -> str:
    kept = b""
    for chunk in response.iter_raw():
        kept += chunk
        if len(kept) >= RESPONSE_KEPT:
            break
    return kept[:RESPONSE_KEPT].decode("utf-8", errors="replace")


def _describe(exc: httpx.HTTPError, endpoint: str) -> str:
    """Say why a request got no answer, without the URL's query (it may hold a key)."""
    detail = str(exc).splitlines()[0] if str(exc) else ""
    detail = detail.replace(endpoint, endpoint_label(endpoint))[:200]
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


@dataclass(slots=True)
class Tally:
    """What a run of the notifier did."""

    delivered: int = 0
    failed: int = 0
    dead: int = 0
    seconds: float = 0.0
    problems: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.dead == 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "delivered": self.delivered,
            "failed": self.failed,
            "dead": self.dead,
            "seconds": round(self.seconds, 3),
            "problems": self.problems[:20],
        }


class Notifier:
    """Sends due notifications from one database; several may run at once."""

    def __init__(
        self,
        engine: Engine,
        *,
        max_age: float,
        disable_after: float = 5 * 86400.0,
        clock: Callable[[], datetime] = utcnow,
        stop: threading.Event | None = None,
        owner: str | None = None,
        metrics: Metrics | None = None,
        lease_seconds: float = LEASE_SECONDS,
        concurrency: int = 8,
        per_endpoint: int | None = None,
        poll_interval: float = POLL_INTERVAL,
        backoff: Backoff | None = None,
        timeout: float = DELIVERY_TIMEOUT,
        rng: random.Random | None = None,
    ) -> None:
        if lease_seconds <= timeout:
            message = f"the lease must outlast an attempt ({timeout:g}s)"
            raise ValueError(message)
        self.engine = engine
        self.max_age = max_age
        self.disable_after = disable_after
        self.clock = clock
        self.stop = stop or threading.Event()
        self.owner = owner or lease_owner()
        self.metrics = metrics
        self.lease_seconds = lease_seconds
        self.concurrency = concurrency
        #: Attempts under way to one endpoint at most: a hanging endpoint holds no more
        #: slots than this, and the others keep the rest.
        self.per_endpoint = per_endpoint or max(1, concurrency // 2)
        self.poll_interval = poll_interval
        self.backoff = backoff or Backoff()
        self.timeout = timeout
        self.rng = rng or random.Random()
        #: Free slots worth a claim while attempts are under way.
        self._refill = max(1, concurrency // 2)
        self.client = httpx.Client(
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
            follow_redirects=False,  # a redirect is not a 2xx: the URL should be fixed
            verify=tls_context(),
        )

    @classmethod
    def from_settings(cls, engine: Engine, settings: Settings, **options: Any) -> Notifier:
        """Return a notifier giving up after NOTIFY_MAX_AGE, disabling after NOTIFY_DISABLE_AFTER.

        It signs with each endpoint's secrets as stored, never with this process's
        NOTIFY_SECRET: two workers of different environments sign alike.
        """
        return cls(
            engine,
            max_age=settings.notify_max_age,
            disable_after=settings.notify_disable_after,
            **options,
        )

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Notifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- running ---------------------------------------------------------------------------

    def _time_to_claim(self, free: int, *, busy: bool, claimed_at: float) -> bool:
        """Tell whether to lease more now, with ``free`` slots and attempts ``busy`` or not.

        Claims are batched: at once when idle or half the slots are free, else once a poll
        interval (slow attempts must not hold the others back).
        """
        return (
            free > 0
            and not self.stop.is_set()
            and (
                not busy
                or free >= self._refill
                or time.monotonic() - claimed_at >= self.poll_interval
            )
        )

    def run(self, *, loop: bool = False) -> Tally:
        """Send what is due; return the tally.

        Once (``loop=False``): every notification due when the run starts, and those that
        become due as earlier ones of their submission are delivered; a failed one waits
        for a later run. With ``loop=True``: until :attr:`stop` is set.
        """
        tally = Tally()
        started = time.monotonic()
        due_before = None if loop else self.clock()
        in_flight: dict[Future[Attempt], Leased] = {}
        finished: queue.SimpleQueue[Future[Attempt]] = queue.SimpleQueue()
        pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="notify")
        # A claim that filled every free slot means more may be due: the next one goes
        # straight to leasing, without looking first.
        busy = False
        claimed_at = -self.poll_interval
        try:
            while True:
                free = self.concurrency - len(in_flight)
                if self._time_to_claim(free, busy=bool(in_flight), claimed_at=claimed_at):
                    under_way = Counter(row.endpoint_id for row in in_flight.values())
                    rows = self._claim(free, due_before, look_first=not busy, under_way=under_way)
                    claimed_at = time.monotonic()
                    busy = len(rows) == free
                    for row, keys in rows:
                        future = pool.submit(self._send, row, keys)
                        in_flight[future] = row
                        future.add_done_callback(finished.put)
                if not in_flight:
                    if not loop or self.stop.is_set():
                        return tally
                    self.stop.wait(self.poll_interval)
                    continue
                try:
                    # Each attempt reports itself when it ends (it may free the next of
                    # its submission); the others that ended meanwhile are recorded with it.
                    done = [finished.get(timeout=self.poll_interval)]
                except queue.Empty:
                    continue
                while not finished.empty():
                    done.append(finished.get_nowait())
                self._record([(in_flight.pop(future), future.result()) for future in done], tally)
        finally:
            # Attempts under way finish (fifteen seconds at most) and are recorded, so their
            # leases do not linger; a failure to record leaves the lease to run out.
            ended = [(row, future.result()) for future, row in in_flight.items()]
            try:
                self._record(ended, tally)
            except SQLAlchemyError as exc:
                log.warning("could not record %d notification(s): %s", len(ended), exc)
            pool.shutdown(wait=True)
            tally.seconds = time.monotonic() - started

    def run_forever(self) -> None:
        """Run the loop until :attr:`stop` is set; no exception ends it."""
        log.info("delivering notifications until SIGTERM")
        while not self.stop.is_set():
            try:
                self.run(loop=True)
            except SQLAlchemyError as exc:
                detail = str(getattr(exc, "orig", None) or exc).splitlines()[0][:200]
                log.warning(
                    "notify loop: database unavailable, retrying in %gs: %s",
                    RECOVERY_PAUSE,
                    detail,
                    extra={"data": {"event": "notify_loop_failed", "error": type(exc).__name__}},
                )
                self.stop.wait(RECOVERY_PAUSE)
            except Exception as exc:  # the worker outlives any one bad round
                log.exception(
                    "notify loop failed: %s",
                    type(exc).__name__,
                    extra={"data": {"event": "notify_loop_failed", "error": type(exc).__name__}},
                )
                self.stop.wait(RECOVERY_PAUSE)
        log.info("notify loop stopped")

    # -- steps -----------------------------------------------------------------------------

    def _claim(
        self,
        size: int,
        due_before: datetime | None,
        *,
        look_first: bool,
        under_way: Counter[str],
    ) -> list[tuple[Leased, list[bytes]]]:
        """Lease up to ``size`` due rows, endpoint by endpoint, each with its signing keys.

        No endpoint gets more than :attr:`per_endpoint` attempts under way, nor more than its
        rate allows: one that hangs or is rate-limited leaves the other slots to the others.
        An endpoint that is failing gets one at a time, as a probe: one that hangs held half
        the slots for 15 s each, and a burst to the healthy ones waited behind it (p95 4.6 s
        for 300 webhooks in ``make bench``'s fan-out).
        """
        full = [ep for ep, count in under_way.items() if count >= self.per_endpoint]
        if look_first:
            # Looking costs a read; leasing takes SQLite's write lock: only when worth it.
            with read_only(self.engine).connect() as conn:
                if not peek_due(conn, now=self.clock(), due_before=due_before, busy=full):
                    return []
        claimed: list[tuple[Leased, list[bytes]]] = []
        now = self.clock()
        with self.engine.begin() as conn:
            ready = [ep for ep in due_endpoints(conn, now=now, due_before=due_before)]
            self.rng.shuffle(ready)  # no endpoint always first
            for endpoint_id in ready:
                endpoint = conn.execute(_ENDPOINT, {"id": endpoint_id}).first()
                if endpoint is None:
                    continue
                slots = 1 if endpoint.failing_since is not None else self.per_endpoint
                room = min(size - len(claimed), slots - under_way[endpoint_id])
                if room <= 0:
                    continue
                allowed = take_allowance(conn, endpoint, now=now, wanted=room)
                if allowed <= 0:
                    continue
                rows = claim_due(
                    conn,
                    now=now,
                    limit=allowed,
                    owner=self.owner,
                    lease_seconds=self.lease_seconds,
                    due_before=due_before,
                    endpoint_id=endpoint_id,
                )
                give_back(conn, endpoint, allowed - len(rows))
                keys = signing_keys(endpoint, now=now)
                # To the endpoint's URL as it is now (it may have been changed since).
                claimed.extend((replace(row, endpoint=endpoint.url), keys) for row in rows)
        return claimed

    def _send(self, row: Leased, keys: Sequence[bytes]) -> Attempt:
        """Send one attempt (in a span, when traces are on; its HTTP request is a child)."""
        with tracing.span(
            f"notify {row.event_type}",
            {
                "jobhooks.notification.id": row.id,
                "jobhooks.notification.event_type": row.event_type,
                "jobhooks.notification.attempt": row.attempts + 1,
            },
        ) as current:
            attempt = self._attempt(row, keys)
            if current is not None:
                current.set_attribute("jobhooks.notification.result", attempt.result.value)
                if attempt.status is not None:
                    current.set_attribute("http.response.status_code", attempt.status)
        return attempt

    def _attempt(self, row: Leased, keys: Sequence[bytes]) -> Attempt:
        try:
            return send_notification(
                self.client,
                row.endpoint,
                row.payload.encode("utf-8"),
                msg_id=row.message_id,
                keys=keys,
                now=self.clock(),
                timeout=self.timeout,
            )
        except Exception as exc:  # one bad row must not stop the others
            log.warning("notification %d: unexpected error while sending", row.id, exc_info=True)
            error = f"could not send ({type(exc).__name__})"
            return Attempt(AttemptResult.UNREACHABLE, self.clock(), 0.0, error=error)

    def _record(self, ended: Sequence[tuple[Leased, Attempt]], tally: Tally) -> None:
        """Write what came of attempts, in one transaction; then count and log each.

        Each attempt is kept, and its endpoint's health follows it: what changed there
        (failing, disabled, recovered) is told once committed. Statements are per batch,
        not per attempt: the attempts go in one, the deliveries in two, and an endpoint
        whose attempts all succeeded has its health written once (four statements an
        attempt before).
        """
        if not ended:
            return
        now = self.clock()
        items = [
            Ended(
                row,
                attempted_at=attempt.started_at,
                status=attempt.status,
                error=attempt.error,
                seconds=attempt.seconds,
                response=attempt.response,
            )
            for row, attempt in ended
        ]
        failed: dict[int, tuple[datetime | None, bool]] = {}
        with self.engine.begin() as conn:
            record_attempts(conn, items)
            delivered = record_delivered(
                conn,
                [item for item, (_, attempt) in zip(items, ended, strict=True) if _ok(attempt)],
                owner=self.owner,
                now=now,
            )
            for row, attempt in ended:
                if not _ok(attempt):
                    failed[row.id] = self._record_failed(conn, row, attempt, now)
            changes = self._record_health(conn, ended, now)
        for row, attempt in ended:
            if _ok(attempt):
                outcome, next_attempt_at, held = "delivered", None, row.id in delivered
            else:
                next_attempt_at, held = failed[row.id]
                outcome = "dead" if next_attempt_at is None else "retry"
            self._count(row, attempt, outcome, held, tally)
            self._log(row, attempt, outcome, next_attempt_at, held=held)
        for change in changes:
            _tell(change)

    def _record_failed(
        self, conn: Any, row: Leased, attempt: Attempt, now: datetime
    ) -> tuple[datetime | None, bool]:
        """Record a failed attempt on its row; return when it is tried next, and ``held``."""
        next_attempt_at = self._next_attempt(row, attempt, now)
        held = record_failed(
            conn,
            row.id,
            owner=self.owner,
            attempted_at=attempt.started_at,
            status=attempt.status,
            error=attempt.error or attempt.result.value,
            next_attempt_at=next_attempt_at,
        )
        return next_attempt_at, held

    def _record_health(
        self, conn: Any, ended: Sequence[tuple[Leased, Attempt]], now: datetime
    ) -> list[HealthChange]:
        """Write each endpoint's health from its attempts, in order; return what is to be told.

        Successes only: one write, with the latest (a recovery is told by the first of them
        alone, and each one after it would only move ``last_success_at``).
        """
        by_endpoint: dict[str, list[Attempt]] = {}
        for row, attempt in ended:
            by_endpoint.setdefault(row.endpoint_id, []).append(attempt)
        changes: list[HealthChange] = []
        for endpoint_id, attempts in by_endpoint.items():
            if all(_ok(attempt) for attempt in attempts):
                attempts = [max(attempts, key=lambda attempt: attempt.started_at)]
            for attempt in attempts:
                change = record_health(
                    conn,
                    endpoint_id,
                    ok=_ok(attempt),
                    status=attempt.status,
                    error=attempt.error,
                    attempted_at=attempt.started_at,
                    now=now,
                    disable_after=self.disable_after,
                )
                if change is not None:
                    announce_operational(
                        conn,
                        f"endpoint.{change.kind}",
                        change.endpoint,
                        now=now,
                        detail=_health_detail(change),
                    )
                    changes.append(change)
        return changes

    def _count(self, row: Leased, attempt: Attempt, outcome: str, held: bool, tally: Tally) -> None:
        if self.metrics is not None:
            self.metrics.observe_notification(attempt.result.value, dead=held and outcome == "dead")
        if not held:
            return
        if outcome == "delivered":
            tally.delivered += 1
            return
        if outcome == "dead":
            tally.dead += 1
        else:
            tally.failed += 1
        tally.problems.append(
            {
                "id": row.id,
                "submission_id": row.submission_id,
                "endpoint": endpoint_label(row.endpoint),
                "error": attempt.error,
                "outcome": outcome,
            }
        )

    def _next_attempt(self, row: Leased, attempt: Attempt, now: datetime) -> datetime | None:
        """Return when to try again, or None when the notification is dead."""
        give_up_at = row.created_at + timedelta(seconds=self.max_age)
        if now >= give_up_at:
            return None
        wait = self.backoff.delay(row.attempts + 1, self.rng)
        if attempt.retry_after is not None:
            wait = max(wait, attempt.retry_after)
        # The last try comes at the deadline rather than never.
        return min(now + timedelta(seconds=wait), give_up_at)

    def _log(
        self,
        row: Leased,
        attempt: Attempt,
        outcome: str,
        next_attempt_at: datetime | None,
        *,
        held: bool,
    ) -> None:
        data = {
            "event": "notification_attempt",
            "notification_id": row.id,
            "message_id": row.message_id,
            "submission_id": row.submission_id,
            "type": row.event_type,
            "endpoint": endpoint_label(row.endpoint),
            "attempt": row.attempts + 1,
            "result": attempt.result.value,
            "status": attempt.status,
            "seconds": round(attempt.seconds, 3),
            "error": attempt.error,
            "outcome": outcome,
            "next_attempt_at": next_attempt_at.isoformat() if next_attempt_at else None,
        }
        level = logging.INFO if _ok(attempt) else logging.WARNING
        if not held:
            # Its lease ran out and another notifier took the row over: its record stands.
            level = logging.WARNING
            data["outcome"] = "lease_lost"
        log.log(
            level,
            "notification %d %s to %s: %s in %.2fs (%s)",
            row.id,
            row.event_type,
            data["endpoint"],
            attempt.status or attempt.error,
            attempt.seconds,
            data["outcome"],
            extra={"data": data},
        )


def _ok(attempt: Attempt) -> bool:
    return attempt.result is AttemptResult.DELIVERED


def _health_detail(change: HealthChange) -> dict[str, Any]:
    return {
        "since": change.since.isoformat() if change.since else None,
        "reason": change.reason,
    }


def _tell(change: HealthChange) -> None:
    """Tell the people on call about an endpoint's health: one line with a stable event."""
    endpoint = change.endpoint
    data = {
        "event": f"endpoint_{change.kind}",
        "endpoint_id": endpoint.id,
        "endpoint": endpoint_label(endpoint.url),
        **_health_detail(change),
    }
    if change.kind == "recovered":
        log.info(
            "endpoint %s recovered (failing since %s)",
            endpoint.id,
            data["since"],
            extra={"data": data},
        )
        return
    log.error(
        "endpoint %s %s since %s: %s",
        endpoint.id,
        "disabled, its notifications held," if change.kind == "disabled" else "failing",
        data["since"],
        change.reason,
        extra={"data": data},
    )


@contextmanager
def delivering_in_background(
    engine: Engine, settings: Settings, stop: threading.Event, *, metrics: Metrics | None = None
) -> Iterator[Notifier | None]:
    """Deliver notifications on a thread of their own while the block runs.

    For the worker (``reconcile --loop``): whatever endpoints are recorded, NOTIFY_URL's
    or added ones. The thread ends once ``stop`` is set, after the attempts under way;
    leaving the block sets it.
    """
    notifier = Notifier.from_settings(engine, settings, stop=stop, metrics=metrics)
    thread = threading.Thread(target=notifier.run_forever, name="notify-loop")
    thread.start()
    try:
        yield notifier
    finally:
        stop.set()
        thread.join()
        notifier.close()
