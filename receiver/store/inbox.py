"""The webhook inbox: one row per accepted delivery, deduplicated by the database."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection
from sqlalchemy.dialects import postgresql, sqlite

from receiver.core.jobstate import JobState
from receiver.core.signing import HeaderLookup
from receiver.store.hotsql import HotStatement
from receiver.store.models import Outcome, WebhookEvent

__all__ = [
    "Delivery",
    "dedupe_key",
    "event_values",
    "insert_event",
    "key_stored",
    "recent_refusals",
    "record_event",
    "record_rejected",
    "safe_headers",
    "set_outcome",
]

_events = WebhookEvent.__table__  # type: ignore[attr-defined]
#: Headers worth keeping for an investigation; never signatures or credentials.
_SAFE_HEADERS = (
    "content-type",
    "user-agent",
    "webhook-id",
    "webhook-timestamp",
    "svix-id",
    "svix-timestamp",
    "x-request-id",
)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One webhook delivery as received: where, its id, its body and safe headers."""

    source: str
    body: str
    headers: HeaderLookup
    delivery_id: str | None = None
    claimed_user_id: str | None = None


def safe_headers(headers: HeaderLookup) -> dict[str, str]:
    """Return the headers fit to store: no signatures, no auth, bounded length, no NUL.

    They are kept for people to read, not to match on: a NUL (which PostgreSQL's text
    cannot hold) is stored as U+FFFD rather than losing the delivery.
    """
    kept = {}
    for name in _SAFE_HEADERS:
        value = headers.get(name)
        if value:
            kept[name] = value[:200].replace("\x00", "\ufffd")
    return kept


def dedupe_key(delivery_id: str | None, state: JobState, *, named: str | None = None) -> str:
    """Return the unique key of a delivery: event id, else webhook-id, else a state hash.

    An event envelope's id names the event wherever it travels: in every delivery to
    every endpoint and in ittybit's event list, which the reconciler reads. Keyed on it,
    the webhook of an event already read from the list (or the reverse) is a duplicate.
    A bare job has no event id: its ``webhook-id`` (the same on every retry) keys it.
    Without either, the hash of job id, status and timestamp keys it, with the submission
    a signed URL ``named``: the same job state sent to two submissions' URLs is two
    deliveries (one of them refused), not one delivery and its duplicate.
    """
    if state.event_id:
        return f"evt:{state.event_id}"
    if delivery_id:
        return f"wh:{delivery_id}"
    stamp = state.updated_at.isoformat() if state.updated_at else ""
    text = f"{state.job_id}\n{state.provider_status}\n{stamp}"
    if named is not None:
        text += f"\n{named}"
    digest = hashlib.sha256(text.encode())
    return f"st:{digest.hexdigest()}"


#: The columns of an inbox row, as :func:`event_values` fills them.
EVENT_COLUMNS = tuple(column.key for column in _events.c if column.key != "id")


def _insert_for(dialect_name: str) -> HotStatement:
    insert = postgresql.insert if dialect_name == "postgresql" else sqlite.insert
    return HotStatement(
        insert(_events)
        .on_conflict_do_nothing(index_elements=[_events.c.dedupe_key])
        .returning(_events.c.id),
        keys=EVENT_COLUMNS,
    )


_INSERTS = {name: _insert_for(name) for name in ("postgresql", "sqlite")}


def event_values(
    *,
    key: str,
    delivery: Delivery,
    state: JobState | None,
    submission_id: str | None,
    now: datetime,
    outcome: Outcome = Outcome.APPLIED,
    reason: str | None = None,
) -> dict[str, Any]:
    """Return the inbox row of one delivery, column by column.

    ``receiver.flows.apply.apply_job_state`` sets the outcome and reason from its verdict.
    """
    return {
        "dedupe_key": key,
        "received_at": now,
        "source": delivery.source,
        "delivery_id": delivery.delivery_id,
        "job_id": state.job_id if state else None,
        "submission_id": submission_id,
        "provider_status": state.provider_status if state else None,
        "body": delivery.body,
        "headers": safe_headers(delivery.headers),
        "outcome": outcome.value,
        "reason": reason[:500] if reason else None,
        "claimed_user_id": delivery.claimed_user_id,
    }


def insert_event(conn: Connection, values: dict[str, Any]) -> int | None:
    """Insert an inbox row; return its id, or ``None`` when its key was already stored."""
    if len(values) != len(EVENT_COLUMNS):
        message = f"an inbox row has the columns {EVENT_COLUMNS}, not {tuple(values)}"
        raise ValueError(message)
    rows = _INSERTS[conn.dialect.name].execute(conn, values)
    return int(rows[0][0]) if rows else None


def record_event(
    conn: Connection,
    *,
    key: str,
    delivery: Delivery,
    state: JobState | None,
    submission_id: str | None,
    outcome: Outcome,
    reason: str | None,
    now: datetime,
) -> int | None:
    """Insert the inbox row; return its id, or ``None`` when ``key`` was already stored."""
    values = event_values(
        key=key,
        delivery=delivery,
        state=state,
        submission_id=submission_id,
        outcome=outcome,
        reason=reason,
        now=now,
    )
    return insert_event(conn, values)


def recent_refusals(conn: Connection, submission_id: str, *, since: datetime, limit: int) -> int:
    """Count a submission's rejected and unmatched deliveries received since ``since``.

    Counts no further than ``limit``: the answer only needs to say whether it is reached.
    """
    recent = (
        sa.select(sa.literal(1))
        .where(
            _events.c.submission_id == submission_id,
            _events.c.outcome.in_((Outcome.REJECTED.value, Outcome.UNMATCHED.value)),
            _events.c.received_at >= since,
        )
        .limit(limit)
        .subquery()
    )
    return int(conn.execute(sa.select(sa.func.count()).select_from(recent)).scalar_one())


def key_stored(conn: Connection, key: str) -> bool:
    """Tell whether a delivery with ``key`` is in the inbox."""
    query = sa.select(_events.c.id).where(_events.c.dedupe_key == key)
    return conn.execute(query).first() is not None


def set_outcome(
    conn: Connection,
    event_id: int,
    *,
    outcome: Outcome,
    reason: str | None,
    submission_id: str | None = None,
) -> None:
    """Record a new outcome for a stored event (re-matching, replay), and its submission."""
    values: dict[str, Any] = {"outcome": outcome.value, "reason": reason}
    if submission_id is not None:
        values["submission_id"] = submission_id
    conn.execute(sa.update(_events).where(_events.c.id == event_id).values(**values))


def record_rejected(
    conn: Connection,
    *,
    key: str,
    delivery: Delivery,
    state: JobState | None,
    submission_id: str | None,
    reason: str,
    now: datetime,
) -> int | None:
    """Store a refused delivery, always: every 403 answered can be found in the inbox.

    When ``key`` belongs to another stored delivery (a fallback key shared with a genuine
    event of the same job and status), the refusal is kept under a key of its own, derived
    from the body so that a resend of the same refused delivery is stored once. Returns the
    new row's id, or None when this very refusal was stored before.
    """
    digest = hashlib.sha256(f"{key}\n{delivery.body}".encode()).hexdigest()
    for candidate in (key, f"rej:{digest}"):
        stored = record_event(
            conn,
            key=candidate,
            delivery=delivery,
            state=state,
            submission_id=submission_id,
            outcome=Outcome.REJECTED,
            reason=reason,
            now=now,
        )
        if stored is not None:
            return stored
    return None
