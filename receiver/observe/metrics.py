"""Prometheus metrics: deliveries, verification failures, latency, reconcile passes, and
submissions by status read from the database when ``GET /metrics`` is scraped.

Under gunicorn every worker writes its numbers to files in ``PROMETHEUS_MULTIPROC_DIR``
(set up by ``config/gunicorn.py``), and a scrape adds up every worker's files, so the
answer is the same whichever worker serves it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import sqlalchemy as sa
from flask import Flask, current_app
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    values,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from receiver.store.engines import get_read_engine
from receiver.store.models import (
    Notification,
    NotificationStatus,
    NotifyEndpoint,
    Outcome,
    Status,
    Submission,
    WebhookEvent,
    utcnow,
)

__all__ = ["EXTENSION", "Metrics", "get_metrics", "mark_worker_started", "multiprocess"]

EXTENSION = "jobhooks.metrics"
#: How often a scrape lists the workers' files again when one vanished while it read.
_SCRAPE_TRIES = 3
#: From a millisecond (SQLite, warm) to ittybit's 5 s patience and past it.
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_PASS_BUCKETS = (0.1, 0.5, 1, 5, 10, 30, 60, 120, 300, 600, 1800)

_submissions = Submission.__table__  # type: ignore[attr-defined]
_events = WebhookEvent.__table__  # type: ignore[attr-defined]
_BY_STATUS = sa.select(_submissions.c.status, sa.func.count()).group_by(_submissions.c.status)
_UNMATCHED = (
    sa.select(sa.func.count())
    .select_from(_events)
    .where(_events.c.outcome == Outcome.UNMATCHED.value)
)
_notifications = Notification.__table__  # type: ignore[attr-defined]
_NOTIFICATIONS_WAITING = (
    sa.select(_notifications.c.status, sa.func.count(), sa.func.min(_notifications.c.created_at))
    .where(
        _notifications.c.status.in_(
            [NotificationStatus.PENDING.value, NotificationStatus.DEAD.value]
        )
    )
    .group_by(_notifications.c.status)
)


_endpoints = NotifyEndpoint.__table__  # type: ignore[attr-defined]
_ENDPOINT_HEALTH = sa.select(_endpoints.c.id, _endpoints.c.status, _endpoints.c.failing_since)
_WAITING_BY_ENDPOINT = (
    sa.select(
        _notifications.c.endpoint_id,
        sa.func.count(),
        sa.func.min(_notifications.c.created_at),
    )
    .where(_notifications.c.status == NotificationStatus.PENDING.value)
    .group_by(_notifications.c.endpoint_id)
)


def multiprocess() -> bool:
    """Tell whether metric values go to files shared by several processes."""
    return bool(getattr(values.ValueClass, "_multiprocess", False))


class DatabaseCollector(Collector):
    """Numbers read from the database at scrape time: submissions by status and more."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "jobhooks_database_up", "1 if this scrape could read the database, else 0."
        )
        try:
            with self.engine.connect() as conn:
                by_status = {str(status): int(count) for status, count in conn.execute(_BY_STATUS)}
                unmatched = int(conn.execute(_UNMATCHED).scalar_one())
                waiting = {
                    status: (int(count), oldest)
                    for status, count, oldest in conn.execute(_NOTIFICATIONS_WAITING)
                }
                endpoints = list(conn.execute(_ENDPOINT_HEALTH))
                by_endpoint = {
                    endpoint_id: (int(count), oldest)
                    for endpoint_id, count, oldest in conn.execute(_WAITING_BY_ENDPOINT)
                }
        except SQLAlchemyError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        submissions = GaugeMetricFamily(
            "jobhooks_submissions", "Submissions by local status.", labels=["status"]
        )
        for known in Status:
            submissions.add_metric([known.value], by_status.pop(known.value, 0))
        for other, count in sorted(by_status.items()):
            submissions.add_metric([other], count)
        yield submissions
        yield GaugeMetricFamily(
            "jobhooks_unmatched_events",
            "Inbox deliveries kept as unmatched, waiting for their submission.",
            value=unmatched,
        )
        yield from _notification_gauges(waiting)
        yield from _endpoint_gauges(endpoints, by_endpoint)


def _endpoint_gauges(endpoints: list[Any], waiting: dict[str, tuple[int, Any]]) -> Iterator[Metric]:
    """Yield each notification endpoint's health, labelled by its id (endpoints are few)."""
    now = utcnow()
    up = GaugeMetricFamily(
        "jobhooks_notify_endpoint_up",
        "1 if the endpoint is active and its last attempt succeeded, else 0.",
        labels=["endpoint"],
    )
    failing = GaugeMetricFamily(
        "jobhooks_notify_endpoint_failing_seconds",
        "How long every attempt to the endpoint has failed (0 when healthy).",
        labels=["endpoint"],
    )
    count = GaugeMetricFamily(
        "jobhooks_notify_endpoint_notifications_pending",
        "Notifications to the endpoint not delivered yet (held while it is disabled).",
        labels=["endpoint"],
    )
    age = GaugeMetricFamily(
        "jobhooks_notify_endpoint_oldest_waiting_age_seconds",
        "Age of the endpoint's oldest waiting notification (0 when none waits).",
        labels=["endpoint"],
    )
    for endpoint_id, status, failing_since in endpoints:
        healthy = status == "active" and failing_since is None
        up.add_metric([endpoint_id], 1 if healthy else 0)
        since = 0.0 if failing_since is None else (now - failing_since).total_seconds()
        failing.add_metric([endpoint_id], max(0.0, since))
        waiting_count, oldest = waiting.get(endpoint_id, (0, None))
        count.add_metric([endpoint_id], waiting_count)
        oldest_age = 0.0 if oldest is None else (now - oldest).total_seconds()
        age.add_metric([endpoint_id], max(0.0, oldest_age))
    yield from (up, failing, count, age)


def _notification_gauges(waiting: dict[str, tuple[int, Any]]) -> Iterator[Metric]:
    """Yield the outbox's gauges from its pending and dead counts and oldest pending row."""
    pending, oldest = waiting.get(NotificationStatus.PENDING.value, (0, None))
    dead, _ = waiting.get(NotificationStatus.DEAD.value, (0, None))
    yield GaugeMetricFamily(
        "jobhooks_notifications_pending",
        "Notifications to the application not delivered yet (retrying included).",
        value=pending,
    )
    age = 0.0 if oldest is None else max(0.0, (utcnow() - oldest).total_seconds())
    yield GaugeMetricFamily(
        "jobhooks_notifications_oldest_pending_age_seconds",
        "Age of the oldest pending notification (0 when none is pending).",
        value=age,
    )
    yield GaugeMetricFamily(
        "jobhooks_notifications_dead",
        "Notifications given up after NOTIFY_MAX_AGE; `notify retry --dead` sends them again.",
        value=dead,
    )


class Metrics:
    """The service's metrics, in a registry of their own (one per app)."""

    def __init__(self, engine: Engine) -> None:
        self.registry = CollectorRegistry()
        self.database = DatabaseCollector(engine)
        self.registry.register(self.database)
        registry = self.registry
        self.deliveries = Counter(
            "jobhooks_webhook_deliveries",
            "Webhook deliveries by source (url, endpoint), outcome (none: nothing stored) "
            "and HTTP status.",
            ["source", "outcome", "status"],
            registry=registry,
        )
        self.unstored = Counter(
            "jobhooks_webhook_deliveries_unstored",
            "Rejected and unmatched deliveries answered but not stored: past the cap of "
            "refusals a submission may store an hour.",
            ["outcome"],
            registry=registry,
        )
        self.verification_failures = Counter(
            "jobhooks_webhook_verification_failures",
            "Webhook deliveries refused by verification (401), by reason.",
            ["source", "reason"],
            registry=registry,
        )
        self.latency = Histogram(
            "jobhooks_webhook_duration_seconds",
            "Time to answer a webhook delivery, by source.",
            ["source"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.reconcile_passes = Counter(
            "jobhooks_reconcile_passes",
            "Reconcile passes by result: ok, errors (some job could not be checked), aborted.",
            ["result"],
            registry=registry,
        )
        self.reconcile_pass_duration = Histogram(
            "jobhooks_reconcile_pass_duration_seconds",
            "Duration of reconcile passes.",
            buckets=_PASS_BUCKETS,
            registry=registry,
        )
        self.reconcile_jobs = Counter(
            "jobhooks_reconcile_jobs",
            "Jobs polled by the reconciler, by result.",
            ["result"],
            registry=registry,
        )
        self.rematched_events = Counter(
            "jobhooks_reconcile_rematched_events",
            "Unmatched deliveries matched later by the reconciler, by result.",
            ["result"],
            registry=registry,
        )
        self.events_read = Counter(
            "jobhooks_reconcile_events_read",
            "Events read from ittybit's event list by the reconciler.",
            registry=registry,
        )
        self.webhooks_missed = Counter(
            "jobhooks_webhooks_missed",
            "Events in ittybit's event list that no webhook brought within WEBHOOK_SILENCE_AFTER.",
            registry=registry,
        )
        self.events = Counter(
            "jobhooks_reconcile_events",
            "Events from ittybit's event list by what was done with them: applied, duplicate, "
            "stale, unmatched, rejected, ignored (not about a job).",
            ["outcome"],
            registry=registry,
        )
        self.event_pages = Counter(
            "jobhooks_reconcile_event_pages",
            "Pages of ittybit's event list requested by the reconciler.",
            registry=registry,
        )
        self.notification_deliveries = Counter(
            "jobhooks_notification_deliveries",
            "Attempts to deliver a notification, by result: delivered, failed (answered, "
            "not 2xx in time), unreachable (no answer).",
            ["result"],
            registry=registry,
        )
        self.notifications_given_up = Counter(
            "jobhooks_notifications_given_up",
            "Notifications that became dead after their last failed attempt.",
            registry=registry,
        )
        self.web_workers = Gauge(
            "jobhooks_web_workers",
            "gunicorn workers serving requests.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        # Label lookups cost more than the increment; the label sets are few and fixed.
        self._children: dict[tuple[Any, ...], Any] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def observe_delivery(
        self, *, source: str, outcome: str, status: int, error: str | None, seconds: float
    ) -> None:
        """Count one answered webhook delivery."""
        self._child(self.deliveries, source, outcome, str(status)).inc()
        if status == 401:
            self._child(self.verification_failures, source, error or "unknown").inc()
        self._child(self.latency, source).observe(seconds)

    def observe_unstored(self, outcome: str) -> None:
        """Count one delivery answered but not stored (past the refusal cap)."""
        self._child(self.unstored, outcome).inc()

    def observe_reconcile_job(self, result: str) -> None:
        """Count one job polled by the reconciler."""
        self._child(self.reconcile_jobs, result).inc()

    def observe_reconcile_pass(
        self, *, result: str, seconds: float, rematched: int = 0, rejected_events: int = 0
    ) -> None:
        """Count one finished reconcile pass."""
        self._child(self.reconcile_passes, result).inc()
        self.reconcile_pass_duration.observe(seconds)
        if rematched:
            self._child(self.rematched_events, "matched").inc(rematched)
        if rejected_events:
            self._child(self.rematched_events, "rejected").inc(rejected_events)

    def observe_event_list(
        self, *, read: int, pages: int, outcomes: Mapping[str, int], missed: int = 0
    ) -> None:
        """Count what one pass read from ittybit's event list, and the webhooks it missed."""
        if missed:
            self.webhooks_missed.inc(missed)
        if read:
            self.events_read.inc(read)
        if pages:
            self.event_pages.inc(pages)
        for outcome, count in outcomes.items():
            if count:
                self._child(self.events, outcome).inc(count)

    def observe_notification(self, result: str, *, dead: bool = False) -> None:
        """Count one attempt to deliver a notification, and whether it was given up."""
        self._child(self.notification_deliveries, result).inc()
        if dead:
            self.notifications_given_up.inc()

    def exposition(self) -> bytes:
        """Return the metrics in Prometheus text format, every process's when multiprocess."""
        if not multiprocess():
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        registry.register(self.database)
        # The collector lists the workers' files, then reads them: a worker that exits in
        # between has its live gauges' files removed (gunicorn's child_exit), and the read
        # fails. The next listing no longer names them.
        for _ in range(_SCRAPE_TRIES - 1):
            try:
                return generate_latest(registry)
            except FileNotFoundError:
                continue
        return generate_latest(registry)


def get_metrics(app: Flask | None = None) -> Metrics:
    """Return the metrics of ``app`` (default: the current app).

    The web app makes them in :func:`init_app`; a command's app (``create_app(web=False)``)
    makes them here, the first time a command that counts (reconcile, notify) asks.
    """
    extensions = (app or current_app).extensions
    metrics: Metrics | None = extensions.get(EXTENSION)
    if metrics is None:
        metrics = extensions[EXTENSION] = Metrics(get_read_engine(app))
    return metrics


def mark_worker_started(app: Flask) -> None:
    """Count this process as a live web worker (gunicorn's ``post_worker_init``)."""
    get_metrics(app).web_workers.set(1)
