"""The history as people read it: stored deliveries, and a submission's whole timeline."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection

from config.settings import parse_duration
from receiver.store.models import Notification, Poll, WebhookEvent

__all__ = ["event_json", "get_event", "list_events", "parse_since", "submission_timeline"]

_events = WebhookEvent.__table__  # type: ignore[attr-defined]
_polls = Poll.__table__  # type: ignore[attr-defined]
_notifications = Notification.__table__  # type: ignore[attr-defined]
_SUMMARY_COLUMNS = (
    "id",
    "received_at",
    "source",
    "outcome",
    "submission_id",
    "job_id",
    "provider_status",
    "delivery_id",
    "reason",
)


def parse_since(text: str, *, now: datetime) -> datetime:
    """Return the time ``text`` names: a duration ago (``2h``, ``7d``) or an ISO-8601 time."""
    out_of_range = f"{text[:40]!r} is further from now than a date can be"
    try:
        return now - timedelta(seconds=parse_duration(text))
    except OverflowError:  # 99999999999d
        raise ValueError(out_of_range) from None
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        message = f"{text!r} is neither a duration (30m, 2h, 7d) nor an ISO-8601 time"
        raise ValueError(message) from None
    try:
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00:00+05:00 is before year 1 in UTC
        raise ValueError(out_of_range) from None


def list_events(
    conn: Connection,
    *,
    outcomes: Sequence[str] = (),
    submission_id: str | None = None,
    job_id: str | None = None,
    since: datetime | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """Return the newest events matching every filter given, newest first, without bodies."""
    query = sa.select(*(_events.c[name] for name in _SUMMARY_COLUMNS))
    if outcomes:
        query = query.where(_events.c.outcome.in_(list(outcomes)))
    if submission_id is not None:
        query = query.where(_events.c.submission_id == submission_id)
    if job_id is not None:
        query = query.where(_events.c.job_id == job_id)
    if since is not None:
        query = query.where(_events.c.received_at >= since)
    query = query.order_by(_events.c.id.desc()).limit(limit)
    return [dict(row._mapping) for row in conn.execute(query)]


def get_event(conn: Connection, event_id: int) -> dict[str, Any] | None:
    """Return one event with its body and stored headers, or None."""
    row = conn.execute(sa.select(_events).where(_events.c.id == event_id)).first()
    return None if row is None else dict(row._mapping)


def event_json(event: dict[str, Any]) -> dict[str, Any]:
    """Return an event as plain JSON values; a body that is JSON is shown as JSON."""
    shown = dict(event)
    for key, value in shown.items():
        if isinstance(value, datetime):
            shown[key] = value.isoformat()
    if "body" in shown:
        with contextlib.suppress(ValueError):
            shown["body"] = json.loads(shown["body"])
    return shown


def submission_timeline(conn: Connection, submission_id: str) -> list[dict[str, Any]]:
    """Return everything that happened to a submission, oldest first.

    Deliveries (``kind: delivery``: source, outcome, reason, headers without signatures,
    never a token), polls of its job (``kind: poll``: who asked, result, detail) and
    notifications to the application (``kind: notification``), each with its ``at``.
    """
    deliveries = conn.execute(
        sa.select(
            _events.c.id,
            _events.c.received_at,
            _events.c.source,
            _events.c.delivery_id,
            _events.c.job_id,
            _events.c.provider_status,
            _events.c.outcome,
            _events.c.reason,
            _events.c.headers,
        ).where(_events.c.submission_id == submission_id)
    )
    polls = conn.execute(
        sa.select(
            _polls.c.id,
            _polls.c.polled_at,
            _polls.c.source,
            _polls.c.job_id,
            _polls.c.provider_status,
            _polls.c.result,
            _polls.c.detail,
        ).where(_polls.c.submission_id == submission_id)
    )
    notifications = conn.execute(
        sa.select(
            _notifications.c.id,
            _notifications.c.created_at,
            _notifications.c.message_id,
            _notifications.c.endpoint,
            _notifications.c.event_type,
            _notifications.c.status,
            _notifications.c.attempts,
            _notifications.c.last_status,
            _notifications.c.last_error,
            _notifications.c.delivered_at,
        ).where(_notifications.c.submission_id == submission_id)
    )
    entries: list[dict[str, Any]] = []
    for kind, rows, stamp in (
        ("delivery", deliveries, "received_at"),
        ("poll", polls, "polled_at"),
        ("notification", notifications, "created_at"),
    ):
        for mapping in rows.mappings():
            entry = {"kind": kind, **mapping}
            entry["at"] = entry.pop(stamp)
            entries.append(entry)
    order = {"delivery": 0, "poll": 1, "notification": 2}
    entries.sort(key=lambda entry: (entry["at"], order[entry["kind"]], entry["id"]))
    return entries
