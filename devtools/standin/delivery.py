"""Webhook deliveries: planned with their faults, signed, sent in order, retried with backoff.

A job's deliveries go out one after another (a retry holds the ones behind it), so the
only reordering is the one the fault plan asks for: a ``processing`` delivery held back
until after the final one.
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import math
import ssl
import threading
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx

from config.settings import decode_webhook_secret
from devtools.standin.clock import Clock
from devtools.standin.endpoints import EndpointRegistry
from devtools.standin.faults import FaultPlan
from devtools.standin.jobs import FINAL_STATUSES, RUNNING, Job
from devtools.standin.logs import get_logger, redact
from devtools.standin.options import StandinConfig
from devtools.standin.records import Delivery, DeliveryRecord, Stats
from receiver.core.signing import sign_standard_webhook

__all__ = ["Deliverer"]

log = get_logger(__name__)

#: Answers worth another attempt; any other non-2xx is final (the receiver refused it).
_RETRYABLE = frozenset({408, 425, 429})


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """Return TLS settings shared by every stand-in: reading the CA bundle takes tens of ms."""
    return httpx.create_ssl_context()


@dataclass(slots=True)
class _Queue:
    """One job's deliveries: those to send in order, and those held back per destination."""

    outbox: deque[Delivery] = field(default_factory=deque)
    held: dict[str, list[Delivery]] = field(default_factory=dict)
    sending: bool = False


class Deliverer:
    """Plan, sign, send and retry the webhook deliveries of every job's status changes."""

    def __init__(
        self,
        config: StandinConfig,
        lock: threading.Condition,
        clock: Clock,
        faults: FaultPlan,
        endpoints: EndpointRegistry | None = None,
    ) -> None:
        self.config = config
        self._endpoints = endpoints or EndpointRegistry()
        self._lock = lock
        self._clock = clock
        self._faults = faults
        self._key = decode_webhook_secret(config.webhook_secret) if config.webhook_secret else None
        self._queues: dict[str, _Queue] = {}
        self._deliveries: list[Delivery] = []
        self._counts: Counter[str] = Counter()
        self._outcomes: Counter[str] = Counter()
        self._settled = itertools.count(1)
        self._busy_jobs = 0
        self._executor: ThreadPoolExecutor | None = None
        self._http: httpx.Client | None = None
        self._closed = False

    def start(self) -> None:
        """Start the delivery workers."""
        if self._executor is not None:
            return
        self._executor = ThreadPoolExecutor(
            max_workers=self.config.delivery_workers, thread_name_prefix="standin-delivery"
        )
        # httpx logs every request's URL at INFO, and a delivery's URL carries the token.
        get_logger("httpx")
        self._http = httpx.Client(
            timeout=self.config.delivery_timeout,
            limits=httpx.Limits(max_connections=self.config.delivery_workers),
            headers={"User-Agent": "ittybit-standin/1"},
            verify=_tls_context(),
        )

    def close(self) -> None:
        """Stop sending; deliveries in flight finish first, those not due never go."""
        self._closed = True
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
        if self._http is not None:
            self._http.close()

    @property
    def idle(self) -> bool:
        """Return whether no job has a delivery left to send (call with the lock held)."""
        return self._busy_jobs == 0

    def stats(self, jobs: int) -> Stats:
        """Return counts of planned, faulty and answered deliveries."""
        with self._lock:
            counts = self._counts
            return Stats(
                jobs=jobs,
                planned=counts["planned"],
                dropped=counts["dropped"],
                duplicated=counts["duplicated"],
                reordered=counts["reordered"],
                attempts=counts["attempts"],
                retried=counts["retried"],
                delivered=counts["delivered"],
                refused=counts["refused"],
                given_up=counts["given_up"],
                pending=sum(1 for item in self._deliveries if item.state == "pending"),
                outcomes=dict(self._outcomes),
            )

    def records(self) -> list[DeliveryRecord]:
        """Return every planned delivery, in planning order."""
        with self._lock:
            return [item.record() for item in self._deliveries]

    def publish(self, job: Job, event: dict[str, Any]) -> None:
        """Plan the deliveries of a job's new status and queue them (with the lock held)."""
        queue = self._queues.setdefault(job.id, _Queue())
        for destination, url, key in self._destinations(job):
            planned = self._plan(job, event, destination, url, key)
            if (
                job.status == RUNNING
                and job.outcome != "stuck"
                and self._faults.holds_back(job.number, destination)
            ):
                queue.held[destination] = planned
                continue
            self._enqueue(job.id, queue, planned)
            held = queue.held.pop(destination, None) if job.status in FINAL_STATUSES else None
            if held:
                if planned:
                    held[0].reordered = True
                    self._counts["reordered"] += 1
                self._enqueue(job.id, queue, held)

    def _destinations(self, job: Job) -> list[tuple[str, str, bytes | None]]:
        """Return where a job's event goes: its URL, the project URL, each active endpoint.

        Every project-level destination counts as ``project`` for the fault plan.
        """
        destinations: list[tuple[str, str, bytes | None]] = []
        if job.webhook_url and self.config.job_webhooks:
            destinations.append(("job", job.webhook_url, self._key))
        if self.config.project_url:
            destinations.append(("project", self.config.project_url, self._key))
        for url, secret in self._endpoints.active():
            if url != self.config.project_url:
                destinations.append(("project", url, decode_webhook_secret(secret)))
        return destinations

    def _plan(
        self, job: Job, event: dict[str, Any], destination: str, url: str, key: bytes | None
    ) -> list[Delivery]:
        """Decide one delivery's faults and return the copies to send (none if dropped)."""
        body = event["data"] if destination == "job" else event
        fields = {
            "job_id": job.id,
            "event_id": event["id"],
            "msg_id": "msg_" + event["id"].removeprefix("evt_"),
            "status": job.status,
            "destination": destination,
            "url": url,
            "body": json.dumps(body, separators=(",", ":")).encode(),
            "key": key,
        }
        self._counts["planned"] += 1
        # Keyed by step, not status, so a job's faults do not depend on how it ends.
        step = "running" if job.status == RUNNING else "final"
        if self._faults.drops(job.number, step, destination):
            self._counts["dropped"] += 1
            dropped = Delivery(seq=len(self._deliveries), copy=1, state="dropped", **fields)
            self._deliveries.append(dropped)
            _log_delivery(logging.INFO, dropped, "dropped, as the fault plan says")
            return []
        copies = 1
        if self._faults.duplicates(job.number, step, destination):
            copies = 2
            self._counts["duplicated"] += 1
        planned = []
        for copy in range(1, copies + 1):
            delivery = Delivery(seq=len(self._deliveries), copy=copy, **fields)
            self._deliveries.append(delivery)
            planned.append(delivery)
        return planned

    def _enqueue(self, job_id: str, queue: _Queue, deliveries: list[Delivery]) -> None:
        queue.outbox.extend(deliveries)
        if queue.outbox and not queue.sending:
            queue.sending = True
            self._busy_jobs += 1
            self._schedule_send(job_id, self._faults.delay())

    def _schedule_send(self, job_id: str, delay: float) -> None:
        def submit() -> None:
            executor = self._executor
            if executor is None or self._closed:
                return
            executor.submit(self._send, job_id)

        self._clock.call_later(delay, submit)

    def _headers(self, delivery: Delivery) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if delivery.key is not None:
            stamp = int(time.time())
            headers["webhook-id"] = delivery.msg_id
            headers["webhook-timestamp"] = str(stamp)
            headers["webhook-signature"] = sign_standard_webhook(
                delivery.key, msg_id=delivery.msg_id, timestamp=stamp, body=delivery.body
            )
        return headers

    def _send(self, job_id: str) -> None:
        with self._lock:
            queue = self._queues[job_id]
            delivery = queue.outbox[0]
            delivery.attempts += 1
            self._counts["attempts"] += 1
        client = self._http
        if client is None:
            return
        retry_after: float | None = None
        status: int | None
        answer: dict[str, Any] | None
        error: str | None
        try:
            response = client.post(
                delivery.url, content=delivery.body, headers=self._headers(delivery)
            )
        except httpx.HTTPError as exc:
            status, answer, error = None, None, redact(f"{type(exc).__name__}: {exc}")[:200]
        else:
            status, answer, error = response.status_code, _answer(response), None
            retry_after = _retry_after(response.headers.get("Retry-After"))
        with self._lock:
            delivery.answer_status, delivery.answer, delivery.error = status, answer, error
            result = str(status) if status is not None else error
            level = logging.INFO
            if status is not None and 200 <= status < 300:
                delivery.state = "delivered"
                self._counts["delivered"] += 1
                outcome = (answer or {}).get("outcome")
                outcome = outcome if isinstance(outcome, str) else "-"
                self._outcomes[outcome] += 1
                note = f"delivered, {status} {outcome}"
                self._settle(job_id, queue)
            elif status is None or status >= 500 or status in _RETRYABLE:
                if delivery.attempts < self.config.max_attempts:
                    delay = self._backoff(delivery.attempts, retry_after)
                    self._counts["retried"] += 1
                    self._schedule_send(job_id, delay)
                    note = f"attempt {delivery.attempts} failed ({result}), next in {delay:.2f}s"
                else:
                    delivery.state = "given_up"
                    self._counts["given_up"] += 1
                    level = logging.WARNING
                    note = f"gave up after {delivery.attempts} attempts ({result})"
                    self._settle(job_id, queue)
            else:
                delivery.state = "refused"
                self._counts["refused"] += 1
                level = logging.WARNING
                note = f"refused, {status}"
                self._settle(job_id, queue)
        _log_delivery(level, delivery, note)

    def _settle(self, job_id: str, queue: _Queue) -> None:
        """Number the first delivery in the queue as settled and start on the next."""
        queue.outbox.popleft().order = next(self._settled)
        if queue.outbox:
            self._schedule_send(job_id, self._faults.delay())
        else:
            queue.sending = False
            self._busy_jobs -= 1
            self._lock.notify_all()

    def _backoff(self, attempts: int, retry_after: float | None) -> float:
        delay = math.ldexp(self.config.retry_base, attempts - 1)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return min(delay, self.config.retry_max_delay)


def _log_delivery(level: int, delivery: Delivery, note: str) -> None:
    # The logger's filter shows the URL without its token. The URL comes last: the
    # filter takes a token to run up to whitespace, so nothing may follow it but that.
    log.log(
        level,
        "%s: %s %s %s to %s",
        note,
        delivery.msg_id,
        delivery.job_id,
        delivery.status,
        delivery.url,
    )


def _answer(response: httpx.Response) -> dict[str, Any] | None:
    try:
        value = response.json()
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        return None
