"""Database tables: submissions, the webhook inbox, polls, the outbox and admin accounts."""

from __future__ import annotations

import json
import numbers
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlmodel import Field, SQLModel

from receiver.core.statuses import (
    FINAL_STATUSES,
    TERMINAL_STATUSES,
    NotificationStatus,
    Outcome,
    Status,
)

__all__ = [
    "FINAL_STATUSES",
    "MAX_ROW_ID",
    "TERMINAL_STATUSES",
    "AdminLoginAttempt",
    "AdminLoginFailure",
    "AdminUser",
    "ApiKey",
    "EventCursor",
    "IdempotentRequest",
    "Notification",
    "NotificationAttempt",
    "NotificationStatus",
    "NotifyEndpoint",
    "Outcome",
    "Poll",
    "ReconcilePass",
    "Status",
    "Submission",
    "SubmissionMeta",
    "UTCDateTime",
    "WebhookEvent",
    "is_row_id",
    "json_reader",
    "utc_reader",
    "utc_text_reader",
    "utcnow",
]

#: The largest id a table's integer key holds on both databases: PostgreSQL's are 32-bit,
#: and it refuses to compare a key with a larger number (an error, not "no row"). An id
#: from outside (a path, a cursor, a form, a command's argument) is checked against it first.
MAX_ROW_ID = 2**31 - 1


def is_row_id(value: int) -> bool:
    """Tell whether ``value`` can name a row (an id from outside may be any integer)."""
    return 0 < value <= MAX_ROW_ID


def utcnow() -> datetime:
    """Return the current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """A timestamp stored in UTC and always read back timezone-aware.

    SQLite keeps no offset, so values are normalised to UTC on the way in and
    tagged as UTC on the way out; PostgreSQL gets a real ``timestamptz``.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            message = "naive datetimes are ambiguous; pass an aware one"
            raise ValueError(message)
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utc_reader(dialect: str) -> Callable[[Any], datetime | None]:
    """Return what reads a UTCDateTime value as the driver gives it, for loops over many rows.

    It gives what SQLAlchemy's processing does (on SQLite its DATETIME's ``fromisoformat``,
    then :meth:`UTCDateTime.process_result_value`) in one call instead of three;
    ``tests/unit/store/test_row_readers.py`` holds the two equal.
    """
    parse = datetime.fromisoformat if dialect == "sqlite" else None

    def read(value: Any) -> datetime | None:
        if value is None:
            return None
        moment: datetime = value if parse is None else parse(value)
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)

    return read


def utc_text_reader(dialect: str) -> Callable[[Any], str | None]:
    """Return what gives a UTCDateTime value's ISO 8601 text from the driver's value.

    ``utc_reader``'s datetime, then ``isoformat()``; a naive value (SQLite's UTC) is
    formatted as it is, ``+00:00`` added, instead of being made aware first: a quarter of
    the time (making a second datetime with ``replace`` cost more than parsing).
    """
    parse = datetime.fromisoformat if dialect == "sqlite" else None

    def text(value: Any) -> str | None:
        if value is None:
            return None
        moment: datetime = value if parse is None else parse(value)
        if moment.tzinfo is None:
            return moment.isoformat() + "+00:00"
        return moment.astimezone(UTC).isoformat()

    return text


def json_reader(dialect: str) -> Callable[[Any], Any]:
    """Return what reads a JSON column's value as the driver gives it, for many rows.

    SQLAlchemy's processing, in one call: psycopg parses JSONB itself; SQLite gives the
    text, or a number as it is (``tests/unit/store/test_row_readers.py``). Text that is one
    JSON value with nothing around it (what SQLAlchemy writes) is read by the JSON module's
    own scanner, which ``json.loads`` calls too: for a small object, ``loads``' checks
    around it cost five times the scan. Any other text goes through ``json.loads``.
    """
    if dialect != "sqlite":
        return lambda value: value
    loads = json.loads
    # What JSONDecoder.raw_decode calls, set by its __init__ (unknown to the type stubs).
    scan: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]

    def read(value: Any) -> Any:
        if value is None:
            return None
        if type(value) is str:
            try:
                document, end = scan(value, 0)
            except (StopIteration, ValueError):
                pass  # json.loads, below, raises its own error for it
            else:
                if end == len(value):
                    return document
        try:
            return loads(value)
        except TypeError:
            if isinstance(value, numbers.Number):
                return value
            raise

    return read


def _json_column(name: str, *, nullable: bool = False) -> Any:
    json_type = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
    return sa.Column(name, json_type, nullable=nullable)


class Submission(SQLModel, table=True):
    """A team's record of one uploaded video and the ittybit job processing it."""

    __tablename__ = "submissions"

    id: int | None = Field(default=None, primary_key=True)
    submission_id: str = Field(max_length=200, unique=True, index=True)
    user_id: str = Field(max_length=200)
    input_url: str = Field(max_length=2048)
    job_id: str | None = Field(default=None, max_length=200, unique=True, index=True)
    status: str = Field(default=Status.PENDING, max_length=20, index=True)
    provider_status: str | None = Field(default=None, max_length=50)
    output_url: str | None = Field(default=None, max_length=2048)
    error: str | None = Field(default=None)
    meta: dict[str, Any] = Field(default_factory=dict, sa_column=_json_column("meta"))
    provider_updated_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, index=True)
    # The reconciler's bookkeeping (migration 0002).
    submitted_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    poll_attempts: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    next_poll_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_polled_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    poll_error: str | None = Field(default=None, max_length=500)
    lease_owner: str | None = Field(default=None, max_length=100)
    lease_until: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # Migration 0004: test submissions made by `trigger`, and the job a pending submission
    # asks for, so that the worker can create it later exactly as it was asked.
    is_test: bool = Field(default=False, sa_column_kwargs={"server_default": sa.false()})
    job_kind: str = Field(
        default="video", max_length=50, sa_column_kwargs={"server_default": "video"}
    )
    job_options: dict[str, Any] | None = Field(
        default=None, sa_column=_json_column("job_options", nullable=True)
    )
    # Migration 0005: when a job was asked for through `submit` or the API; the worker
    # creates the job of a pending submission only when one was asked for (a submission
    # added or registered by hand has its job made elsewhere).
    job_requested_at: datetime | None = Field(default=None, sa_type=UTCDateTime)

    __table_args__ = (
        sa.Index("ix_submissions_status_updated_at", "status", "updated_at"),
        # The API's list filtered by owner, newest change first (migration 0005).
        sa.Index("ix_submissions_user_id_updated_at", "user_id", "updated_at"),
    )


class WebhookEvent(SQLModel, table=True):
    """The inbox: every accepted delivery, with what was done with it."""

    __tablename__ = "webhook_events"

    id: int | None = Field(default=None, primary_key=True)
    dedupe_key: str = Field(max_length=200, unique=True)
    received_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, index=True)
    source: str = Field(max_length=20)
    delivery_id: str | None = Field(default=None, max_length=200, index=True)
    job_id: str | None = Field(default=None, max_length=200, index=True)
    submission_id: str | None = Field(default=None, max_length=200, index=True)
    provider_status: str | None = Field(default=None, max_length=50)
    body: str
    headers: dict[str, str] = Field(default_factory=dict, sa_column=_json_column("headers"))
    outcome: str = Field(max_length=20)
    reason: str | None = Field(default=None, max_length=500)
    #: The owner a signed webhook URL named; checked again when the delivery is re-matched.
    claimed_user_id: str | None = Field(default=None, max_length=200)

    # The admin deliveries page filters on the source, newest first (migration 0011).
    __table_args__ = (sa.Index("ix_webhook_events_source_received_at", "source", "received_at"),)


class Poll(SQLModel, table=True):
    """One look at a job through the ittybit API (reconciler, application API or admin)."""

    __tablename__ = "polls"

    id: int | None = Field(default=None, primary_key=True)
    submission_id: str = Field(max_length=200)
    job_id: str | None = Field(default=None, max_length=200)
    polled_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    #: Who asked: ``reconcile``, ``api`` or ``admin``.
    source: str = Field(max_length=20)
    #: What it did: updated, unchanged, failed, expired, errors, deferred.
    result: str = Field(max_length=20)
    provider_status: str | None = Field(default=None, max_length=50)
    detail: str | None = Field(default=None, max_length=500)

    __table_args__ = (sa.Index("ix_polls_submission_id_id", "submission_id", "id"),)


class ReconcilePass(SQLModel, table=True):
    """The tally of one reconcile pass, for people looking at the service."""

    __tablename__ = "reconcile_passes"

    id: int | None = Field(default=None, primary_key=True)
    started_at: datetime = Field(sa_type=UTCDateTime)
    finished_at: datetime = Field(sa_type=UTCDateTime, index=True)
    owner: str = Field(max_length=100)
    ok: bool
    counts: dict[str, Any] = Field(default_factory=dict, sa_column=_json_column("counts"))


class EventCursor(SQLModel, table=True):
    """Where the reconciler stands in one ittybit API's event list, and who reads it now.

    One row per API base URL (migration 0007). ``started_at`` is null until a first pass
    has placed the cursor; then a null ``cursor`` means the list is read from its
    beginning. The cursor moves only after the changes of the page it ends were committed.
    """

    __tablename__ = "event_feeds"

    id: int | None = Field(default=None, primary_key=True)
    api_url: str = Field(max_length=500, unique=True)
    #: The id of the last event read (``after=`` of the next page); null: from the start.
    cursor: str | None = Field(default=None, max_length=200)
    #: When ittybit listed the cursor's event, if it said.
    cursor_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    started_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    updated_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    #: One reconciler reads the list at a time: the holder of a live lease.
    lease_owner: str | None = Field(default=None, max_length=100)
    lease_until: datetime | None = Field(default=None, sa_type=UTCDateTime)


class Notification(SQLModel, table=True):
    """The outbox: one message to one endpoint of the application, written with its cause."""

    __tablename__ = "notifications"

    id: int | None = Field(default=None, primary_key=True)
    #: The ``webhook-id`` the application dedupes on: the same on every attempt.
    message_id: str = Field(max_length=64, unique=True)
    submission_id: str = Field(max_length=200)
    endpoint: str = Field(max_length=2048)
    #: The endpoint record it is owed to (signing secrets, health); None on rows from
    #: before endpoints were records, adopted by the ``default`` endpoint at start.
    endpoint_id: str | None = Field(default=None, max_length=40)
    event_type: str = Field(max_length=50)
    #: The exact JSON body, fixed when the change was committed.
    payload: str = Field(sa_type=sa.Text)
    status: str = Field(default=NotificationStatus.PENDING, max_length=20)
    attempts: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    next_attempt_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    last_attempt_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_status: int | None = Field(default=None)
    last_error: str | None = Field(default=None, max_length=500)
    delivered_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    lease_owner: str | None = Field(default=None, max_length=100)
    lease_until: datetime | None = Field(default=None, sa_type=UTCDateTime)

    __table_args__ = (
        sa.Index("ix_notifications_status_next_attempt_at", "status", "next_attempt_at"),
        sa.Index("ix_notifications_submission_id_id", "submission_id", "id"),
        #: An endpoint's notifications by status, in order: a claim reads its first due ones
        #: (migration 0014).
        sa.Index("ix_notifications_endpoint_id_status_id", "endpoint_id", "status", "id"),
    )


class NotifyEndpoint(SQLModel, table=True):
    """One endpoint of the application: where notifications go, signed with its own secret."""

    __tablename__ = "notify_endpoints"

    id: str = Field(primary_key=True, max_length=40)
    url: str = Field(max_length=2048)
    #: ``whsec_…``: signs every notification to this endpoint, whichever worker sends it.
    secret: str = Field(max_length=200)
    #: The secret before the last rotation: it signs too, beside the new one, until expiry
    #: (no expiry: until the next change, as for NOTIFY_SECRET's second key).
    previous_secret: str | None = Field(default=None, max_length=200)
    previous_secret_expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    #: The types it takes (``submission.succeeded``…), ``*`` for every submission type.
    event_types: list[str] = Field(default_factory=list, sa_column=_json_column("event_types"))
    status: str = Field(default="active", max_length=20)
    disabled_reason: str | None = Field(default=None, max_length=500)
    disabled_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    #: Requests a second at most, all sending processes together; None: no limit.
    rate: float | None = Field(default=None)
    #: The rate's token bucket (``flows/endpoints/rate.py``): what was left, and when.
    rate_tokens: float | None = Field(default=None)
    rate_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    description: str | None = Field(default=None, max_length=500)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    #: Health: failing since the first failure after a success (None: healthy).
    failing_since: datetime | None = Field(default=None, sa_type=UTCDateTime)
    failing_told_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_success_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_failure: str | None = Field(default=None, max_length=500)


class NotificationAttempt(SQLModel, table=True):
    """One POST of a notification: when, what came back, how long it took."""

    __tablename__ = "notification_attempts"

    id: int | None = Field(default=None, primary_key=True)
    notification_id: int = Field(index=True)
    endpoint_id: str | None = Field(default=None, max_length=40)
    attempted_at: datetime = Field(sa_type=UTCDateTime, index=True)
    status_code: int | None = Field(default=None)
    error: str | None = Field(default=None, max_length=500)
    seconds: float = Field(default=0.0)
    #: The first kilobyte of the answer, as text.
    response: str | None = Field(default=None, sa_type=sa.Text)


class SubmissionMeta(SQLModel, table=True):
    """One metadata pair of a submission, kept by database triggers for the API's filter.

    Written by triggers on ``submissions`` (migration 0005) whenever ``meta`` is inserted or
    changed, whoever writes it; only string, number and boolean values up to 200 characters.
    """

    __tablename__ = "submission_meta"

    key: str = Field(max_length=200, primary_key=True)
    value: str = Field(max_length=200, primary_key=True)
    submission_pk: int = Field(
        primary_key=True, foreign_key="submissions.id", ondelete="CASCADE", index=True
    )


class ApiKey(SQLModel, table=True):
    """A key of the application API; only its SHA-256 is stored."""

    __tablename__ = "api_keys"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=100)
    key_hash: str = Field(max_length=64, unique=True)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    last_used_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)

    __table_args__ = (
        # A name belongs to one live key; revoked keys keep theirs for the record.
        sa.Index(
            "ux_api_keys_live_name",
            "name",
            unique=True,
            sqlite_where=sa.text("revoked_at IS NULL"),
            postgresql_where=sa.text("revoked_at IS NULL"),
        ),
    )


class IdempotentRequest(SQLModel, table=True):
    """The first answer to an API request sent with an ``Idempotency-Key``.

    The unique (key, Idempotency-Key) pair decides which of concurrent requests does the
    work; ``status`` is null until that one has answered.
    """

    __tablename__ = "api_idempotency"

    id: int | None = Field(default=None, primary_key=True)
    api_key_id: int = Field(foreign_key="api_keys.id", ondelete="CASCADE")
    idempotency_key: str = Field(max_length=200)
    request_hash: str = Field(max_length=64)
    status: int | None = Field(default=None)
    body: str | None = Field(default=None, sa_type=sa.Text)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, index=True)

    __table_args__ = (
        sa.UniqueConstraint("api_key_id", "idempotency_key", name="uq_api_idempotency_key"),
    )


# --- the admin view (migration 0006) --------------------------------------------------------


class AdminUser(SQLModel, table=True):
    """A person allowed into the admin view (``jobhooks admin create``)."""

    __tablename__ = "admin_users"

    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(max_length=254, unique=True)
    #: werkzeug's scrypt hash (memory-hard); the password itself is never stored.
    password_hash: str = Field(max_length=255)
    #: What the session cookie names the account by, never the row id (SQLite reuses ids):
    #: a deleted account's cookie cannot log into an account made after it.
    session_token: str = Field(max_length=64, unique=True)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    last_login_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    #: Until when the last lock-out lasts (shown by ``jobhooks admin list``). A lock-out
    #: holds only for the address whose failures caused it (migration 0008).
    locked_until: datetime | None = Field(default=None, sa_type=UTCDateTime)


class AdminLoginFailure(SQLModel, table=True):
    """One failed login for an account: in the database, so every web worker counts them."""

    __tablename__ = "admin_login_failures"

    id: int | None = Field(default=None, primary_key=True)
    admin_id: int
    failed_at: datetime = Field(sa_type=UTCDateTime)
    #: Where the attempt came from: a lock-out holds for that address alone (0008).
    client_ip: str | None = Field(default=None, max_length=64)

    __table_args__ = (
        sa.Index("ix_admin_login_failures_admin_id_failed_at", "admin_id", "failed_at"),
    )


class AdminLoginAttempt(SQLModel, table=True):
    """One attempt to sign in, by address: the throttle's count, kept for a minute (0008)."""

    __tablename__ = "admin_login_attempts"

    id: int | None = Field(default=None, primary_key=True)
    client_ip: str = Field(max_length=64)
    attempted_at: datetime = Field(sa_type=UTCDateTime)

    __table_args__ = (
        sa.Index("ix_admin_login_attempts_client_ip_attempted_at", "client_ip", "attempted_at"),
        sa.Index("ix_admin_login_attempts_attempted_at", "attempted_at"),
    )


# The admin view's deliveries page filters by outcome newest first, and its overview counts
# unmatched and rejected deliveries of the last day: one range of this index each. Reads on
# the outcome alone (the unmatched gauge, replay) use its leading column (migration 0013).
sa.Index(
    "ix_webhook_events_outcome_received_at",
    WebhookEvent.__table__.c.outcome,  # type: ignore[attr-defined]
    WebhookEvent.__table__.c.received_at,  # type: ignore[attr-defined]
)
