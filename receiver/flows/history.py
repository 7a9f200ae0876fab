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
from receiver.observe.logs import redact_tokens
from receiver.store.models import Notification, Poll, WebhookEvent, is_row_id

__all__ = [
    "TIMELINE_KINDS",
    "TimelineKey",
    "event_json",
    "get_event",
    "list_events",
    "parse_since",
    "submission_timeline",
    "timeline_key",
    "timeline_page",
]

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
    if not is_row_id(event_id):
        return None
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


#: The kinds of a timeline entry, in the order they sort at the same moment.
TIMELINE_KINDS = ("delivery", "poll", "notification")
#: Where a timeline page ends: the last entry's (at, rank of its kind, id).
TimelineKey = tuple[datetime, int, int]


def _after(stamp: Any, row_id: Any, rank: int, after: TimelineKey | None) -> Any:
    """Return the condition: an entry of kind ``rank`` sorts after ``after``."""
    if after is None:
        return sa.true()
    moment, after_rank, after_id = after
    if rank > after_rank:
        return stamp >= moment
    if rank < after_rank:
        return stamp > moment
    return sa.or_(stamp > moment, sa.and_(stamp == moment, row_id > after_id))


def _timeline_queries(submission_id: str, after: TimelineKey | None) -> list[Any]:
    """Return each kind's SELECT, its time column labelled ``at``, oldest first."""
    sources = (
        (_events, _events.c.received_at, _DELIVERY_COLUMNS),
        (_polls, _polls.c.polled_at, _POLL_COLUMNS),
        (_notifications, _notifications.c.created_at, _NOTIFICATION_COLUMNS),
    )
    queries = []
    for rank, (table, stamp, names) in enumerate(sources):
        queries.append(
            sa.select(table.c.id, stamp.label("at"), *(table.c[name] for name in names))
            .where(table.c.submission_id == submission_id)
            .where(_after(stamp, table.c.id, rank, after))
            .order_by(stamp, table.c.id)
        )
    return queries


_DELIVERY_COLUMNS = (
    "source",
    "delivery_id",
    "job_id",
    "provider_status",
    "outcome",
    "reason",
    "headers",
)
_POLL_COLUMNS = ("source", "job_id", "provider_status", "result", "detail")
_NOTIFICATION_COLUMNS = (
    "message_id",
    "endpoint",
    "event_type",
    "status",
    "attempts",
    "last_status",
    "last_error",
    "delivered_at",
)


def timeline_key(entry: dict[str, Any]) -> TimelineKey:
    """Return the position of a timeline entry: (at, rank of its kind, id)."""
    return (entry["at"], TIMELINE_KINDS.index(entry["kind"]), int(entry["id"]))


def submission_timeline(
    conn: Connection,
    submission_id: str,
    *,
    after: TimelineKey | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Return what happened to a submission, oldest first: all, or ``limit`` after ``after``.

    Deliveries (``kind: delivery``: source, outcome, reason, headers without signatures,
    never a token), polls of its job (``kind: poll``: who asked, result, detail) and
    notifications to the application (``kind: notification``), each with its ``at``.
    Entries sort by (at, kind, id), a key no two entries share, so a walk through pages
    sees each entry once; each kind reads at most ``limit`` rows.
    """
    entries: list[dict[str, Any]] = []
    for kind, query in zip(TIMELINE_KINDS, _timeline_queries(submission_id, after), strict=True):
        rows = conn.execute(query if limit is None else query.limit(limit))
        entries.extend({"kind": kind, **mapping} for mapping in rows.mappings())
    for entry in entries:
        if entry.get("headers"):  # as the sender sent them: a token pasted in one is cut
            entry["headers"] = {
                name: redact_tokens(str(value)) for name, value in entry["headers"].items()
            }
    entries.sort(key=timeline_key)
    return entries if limit is None else entries[:limit]


def timeline_page(
    conn: Connection, submission_id: str, *, after: TimelineKey | None, limit: int
) -> tuple[list[dict[str, Any]], TimelineKey | None]:
    """Return one page of a submission's timeline and the key the next page starts after."""
    entries = submission_timeline(conn, submission_id, after=after, limit=limit + 1)
    if len(entries) <= limit:
        return entries, None
    return entries[:limit], timeline_key(entries[limit - 1])
