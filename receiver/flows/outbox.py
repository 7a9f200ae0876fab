"""The notification outbox: what a status change announces, written in the change's transaction.

A committed change always leaves its notifications (one per endpoint of the application);
a change that is rolled back leaves none, because they are rows of the same transaction.
Delivering them is the worker's job.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from flask import Flask, current_app
from sqlalchemy import Connection
from sqlalchemy.dialects import postgresql

from config.settings import Settings
from receiver.flows.endpoints import EndpointSpec, default_specs, ensure_defaults, takes
from receiver.flows.records import submission_json
from receiver.store import leases
from receiver.store.engines import get_engine
from receiver.store.hotsql import HotStatement
from receiver.store.models import (
    FINAL_STATUSES,
    Notification,
    NotificationAttempt,
    NotificationStatus,
    NotifyEndpoint,
    Submission,
    is_row_id,
    utcnow,
)

__all__ = [
    "ENDPOINTS_VALUE",
    "EVENT_TYPES",
    "TEST_EVENT_TYPE",
    "Outbox",
    "announce_operational",
    "endpoint_label",
    "event_type",
    "get_outbox",
    "init_app",
    "latest_attempts",
    "list_attempts",
    "list_notifications",
    "new_message_id",
    "notification_body",
    "notification_exists",
    "replay_endpoint",
    "retry_dead_notifications",
    "retry_notifications",
    "seed_defaults",
]

log = logging.getLogger(__name__)

_submissions = Submission.__table__  # type: ignore[attr-defined]
_notifications = Notification.__table__  # type: ignore[attr-defined]
_ROW = sa.select(_submissions).where(_submissions.c.id == sa.bindparam("pk"))
_INSERT = sa.insert(_notifications)
_endpoints = NotifyEndpoint.__table__  # type: ignore[attr-defined]
_ENDPOINTS = sa.select(_endpoints.c.id, _endpoints.c.url, _endpoints.c.event_types)
#: The same read on the driver's cursor: every status change a webhook makes runs it, and
#: through ``Connection.execute`` it cost 100,000-150,000 instructions of a webhook's 2.3
#: million (``python -m bench.instructions``).
_ENDPOINTS_HOT = HotStatement(_ENDPOINTS)
#: The same rows as one value a PostgreSQL statement can return beside its own columns, each
#: an array ``[id, url, event_types]`` (``[]`` when there is none): the webhook's write statement
#: reads them (``receiver.flows.apply``), one round trip fewer for every change it announces.
ENDPOINTS_VALUE = sa.select(
    sa.func.coalesce(
        sa.func.jsonb_agg(sa.func.jsonb_build_array(*_ENDPOINTS.selected_columns)),
        sa.text("'[]'::jsonb"),
        type_=postgresql.JSONB,
    )
).scalar_subquery()

#: Every type a notification can have, final ones first.
EVENT_TYPES = (
    "submission.succeeded",
    "submission.failed",
    "submission.cancelled",
    "submission.expired",
    "submission.updated",
)

#: The type of ``notify test``'s notification, sent at once and never stored.
TEST_EVENT_TYPE = "notification.test"

Render = Callable[[Any], dict[str, Any]]


def event_type(old_status: str, new_status: str, *, events: str) -> str | None:
    """Return the type announcing ``old_status`` → ``new_status``, or None to stay quiet.

    ``events="final"`` announces final states only; ``"all"`` every status change, the
    running ones as ``submission.updated``.
    """
    if new_status == old_status:
        return None
    if new_status in FINAL_STATUSES:
        return f"submission.{new_status}"
    return "submission.updated" if events == "all" else None


def new_message_id() -> str:
    """Return a fresh ``webhook-id``: the application dedupes on it across retries."""
    return f"msg_{secrets.token_hex(12)}"


def endpoint_label(url: str) -> str:
    """Return ``url`` fit for logs and listings: no user, password, query or fragment.

    An application's URL may carry a key (``?key=…``), as PUBLIC_URL's never does.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port is not None else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def notification_body(kind: str, submission: Mapping[str, Any], *, now: datetime) -> str:
    """Return the JSON body of one notification."""
    payload = {"type": kind, "timestamp": now.isoformat(), "data": dict(submission)}
    return json.dumps(payload, separators=(",", ":"), default=str)


@dataclass(frozen=True, slots=True)
class Outbox:
    """Where status changes are announced: every endpoint record that takes their type.

    ``render`` turns a stored submission row into the object the application receives
    (the same one ``submissions show`` prints and the API answers). ``defaults`` are the
    endpoints NOTIFY_URL describes, made or updated at start (:func:`seed_defaults`).
    """

    render: Render
    defaults: tuple[EndpointSpec, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> Outbox:
        """Return the outbox of ``settings``: its rendering and NOTIFY_URL's endpoints."""

        def render(row: Any) -> dict[str, Any]:
            return submission_json(row)

        return cls(render=render, defaults=default_specs(settings))

    def announce(
        self,
        conn: Connection,
        submission_pk: int,
        *,
        old_status: str,
        new_status: str,
        is_test: bool,
        now: datetime,
        endpoints: Sequence[Sequence[Any]] | None = None,
    ) -> int:
        """Write the notifications a status change owes, in the caller's transaction.

        One per endpoint that takes its type, disabled ones included (their notifications
        wait for them). Returns how many were written. Test submissions (made by
        ``trigger``) announce nothing: the application never hears of them. ``endpoints``
        are the endpoints as the caller's own statement read them in this transaction
        (:data:`ENDPOINTS_VALUE`); without them they are read here.
        """
        if is_test:
            return 0
        kind = event_type(old_status, new_status, events="all")
        if kind is None:
            return 0
        if endpoints is None:
            endpoints = _ENDPOINTS_HOT.execute(conn, {})
        if self.defaults and not {spec.id for spec in self.defaults} <= {e[0] for e in endpoints}:
            # NOTIFY_URL's endpoint could not be made at start (the database was not
            # migrated yet): made now, in this transaction, so that no change goes unsaid.
            ensure_defaults(conn, self.defaults, now=now)
            endpoints = _ENDPOINTS_HOT.execute(conn, {})
        targets = [
            (endpoint_id, url) for endpoint_id, url, types in endpoints if takes(types, kind)
        ]
        if not targets:
            return 0
        row = conn.execute(_ROW, {"pk": submission_pk}).one()
        body = notification_body(kind, self.render(row), now=now)
        _write(conn, targets, subject=row.submission_id, kind=kind, body=body, now=now)
        return len(targets)


def _write(
    conn: Connection,
    targets: Sequence[tuple[str, str]],
    *,
    subject: str,
    kind: str,
    body: str,
    now: datetime,
) -> None:
    conn.execute(
        _INSERT,
        [
            {
                "message_id": new_message_id(),
                "submission_id": subject,
                "endpoint": url,
                "endpoint_id": endpoint_id,
                "event_type": kind,
                "payload": body,
                "status": NotificationStatus.PENDING.value,
                "attempts": 0,
                "created_at": now,
                "next_attempt_at": now,
            }
            for endpoint_id, url in targets
        ],
    )


def announce_operational(
    conn: Connection, kind: str, endpoint: Any, *, now: datetime, detail: Mapping[str, Any]
) -> int:
    """Tell the endpoints taking ``kind`` (``endpoint.failing``…) about ``endpoint``.

    Never the endpoint it is about. Ordered per endpoint spoken of, as a submission's are.
    Returns how many notifications were written.
    """
    targets = [
        (row.id, row.url)
        for row in conn.execute(_ENDPOINTS)
        if row.id != endpoint.id and takes(row.event_types, kind)
    ]
    if not targets:
        return 0
    data = {"endpoint_id": endpoint.id, "url": endpoint_label(endpoint.url), **detail}
    body = notification_body(kind, data, now=now)
    _write(conn, targets, subject=endpoint.id, kind=kind, body=body, now=now)
    return len(targets)


def seed_defaults(conn: Connection, outbox: Outbox, *, now: datetime) -> int:
    """Make or update the endpoints NOTIFY_URL describes; return how many were written."""
    return ensure_defaults(conn, outbox.defaults, now=now)


_EXTENSION = "jobhooks.outbox"


def init_app(app: Flask, settings: Settings) -> None:
    """Give ``app`` the outbox its settings describe, and make its ``default`` endpoints.

    Made here, by every process that starts, so that a change committed by the web process
    before any worker ran still has NOTIFY_URL's endpoint to announce to. A database not
    migrated yet (``db upgrade`` itself) is left alone.
    """
    outbox = Outbox.from_settings(settings)
    app.extensions[_EXTENSION] = outbox
    if not outbox.defaults:
        return
    try:
        with get_engine(app).begin() as conn:
            seed_defaults(conn, outbox, now=utcnow())
    except sa.exc.DBAPIError as exc:
        detail = str(getattr(exc, "orig", None) or exc).splitlines()[0][:200]
        log.warning(
            "could not make the default notification endpoint yet: %s",
            detail,
            extra={"data": {"event": "default_endpoint_not_made"}},
        )


def get_outbox(app: Flask | None = None) -> Outbox:
    """Return the outbox of ``app`` (default: the current app)."""
    outbox: Outbox = (app or current_app).extensions[_EXTENSION]
    return outbox


_NOTIFICATION_SUMMARY = (
    "id",
    "message_id",
    "submission_id",
    "endpoint",
    "endpoint_id",
    "event_type",
    "status",
    "attempts",
    "created_at",
    "next_attempt_at",
    "last_attempt_at",
    "last_status",
    "last_error",
    "delivered_at",
)


def list_notifications(
    conn: Connection,
    *,
    status: str | None = None,
    submission_id: str | None = None,
    before_id: int | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """Return notifications, newest first, without their bodies (ids below ``before_id``)."""
    query = sa.select(*(_notifications.c[name] for name in _NOTIFICATION_SUMMARY))
    if status is not None:
        query = query.where(_notifications.c.status == status)
    if submission_id is not None:
        query = query.where(_notifications.c.submission_id == submission_id)
    if before_id is not None:
        query = query.where(_notifications.c.id < before_id)
    query = query.order_by(_notifications.c.id.desc()).limit(limit)
    return [dict(row._mapping) for row in conn.execute(query)]


def retry_notifications(conn: Connection, ids: Sequence[int], *, now: datetime) -> int:
    """Send notifications again from now on (``dead`` ones too); return how many.

    Delivered ones are left alone: the application already has them. A pending one being
    sent right now keeps its lease, so no second worker sends it at the same time.
    """
    ids = [number for number in ids if is_row_id(number)]
    if not ids:
        return 0
    chosen = _notifications.c.id.in_(ids)
    pending = _notifications.c.status == NotificationStatus.PENDING.value
    conn.execute(
        sa.update(_notifications)
        .where(chosen, _notifications.c.status == NotificationStatus.DEAD.value)
        .values(
            status=NotificationStatus.PENDING.value,
            next_attempt_at=now,
            **leases.given_back(),
        )
    )
    conn.execute(
        sa.update(_notifications)
        .where(chosen, pending, _notifications.c.next_attempt_at > now)
        .values(next_attempt_at=now)
    )
    count = conn.execute(
        sa.select(sa.func.count()).select_from(_notifications).where(chosen, pending)
    ).scalar_one()
    return int(count)


def retry_dead_notifications(conn: Connection, *, now: datetime) -> int:
    """Send every ``dead`` notification again from now on; return how many."""
    result = conn.execute(
        sa.update(_notifications)
        .where(_notifications.c.status == NotificationStatus.DEAD.value)
        .values(
            status=NotificationStatus.PENDING.value,
            next_attempt_at=now,
            **leases.given_back(),
        )
    )
    return int(result.rowcount)


def replay_endpoint(
    conn: Connection, endpoint_id: str, *, since: datetime, now: datetime, status: str | None
) -> int:
    """Send an endpoint's notifications written since ``since`` again, in order; how many.

    Each keeps its ``webhook-id``: the application dedupes on it. ``status`` limits the
    replay to notifications in that state (``dead``…); a pending one is only made due now.
    """
    c = _notifications.c
    chosen = [c.endpoint_id == endpoint_id, c.created_at >= since]
    if status is not None:
        chosen.append(c.status == status)
    result = conn.execute(
        sa.update(_notifications)
        .where(*chosen)
        .values(
            status=NotificationStatus.PENDING.value,
            next_attempt_at=now,
            delivered_at=None,
            **leases.given_back(),
        )
    )
    return int(result.rowcount)


_attempts = NotificationAttempt.__table__  # type: ignore[attr-defined]


def list_attempts(
    conn: Connection,
    notification_id: int,
    *,
    after_id: int | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Return a notification's attempts, oldest first: all, or ``limit`` after ``after_id``."""
    if not is_row_id(notification_id):
        return []
    query = sa.select(_attempts).where(_attempts.c.notification_id == notification_id)
    if after_id is not None:  # a cursor's id, at most MAX_ROW_ID (the API checked it)
        query = query.where(_attempts.c.id > after_id)
    query = query.order_by(_attempts.c.id)
    if limit is not None:
        query = query.limit(limit)
    return [dict(row._mapping) for row in conn.execute(query)]


def notification_exists(conn: Connection, notification_id: int) -> bool:
    """Tell whether the outbox holds notification ``notification_id`` (any integer)."""
    if not is_row_id(notification_id):
        return False
    query = sa.select(_notifications.c.id).where(_notifications.c.id == notification_id)
    return conn.execute(query).first() is not None


def latest_attempts(
    conn: Connection, notification_ids: Sequence[int], *, last: int, chars: int
) -> dict[int, list[dict[str, Any]]]:
    """Return the ``last`` attempts of each notification, oldest first, answers cut to ``chars``.

    One query on the notification index; each notification's rows are numbered newest
    first, so no notification's long history crowds out another's.
    """
    if not notification_ids:
        return {}
    c = _attempts.c
    ranked = (
        sa.select(
            c.id,
            c.notification_id,
            c.attempted_at,
            c.status_code,
            c.error,
            c.seconds,
            sa.func.substr(c.response, 1, chars).label("response"),
            sa.func.row_number()
            .over(partition_by=c.notification_id, order_by=c.id.desc())
            .label("rank"),
        )
        .where(c.notification_id.in_(list(notification_ids)))
        .subquery()
    )
    query = sa.select(ranked).where(ranked.c.rank <= last).order_by(ranked.c.id)
    found: dict[int, list[dict[str, Any]]] = {}
    for row in conn.execute(query).mappings():
        found.setdefault(int(row["notification_id"]), []).append(dict(row))
    return found
