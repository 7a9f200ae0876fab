"""Endpoint records: where notifications go, signed with whose secret.

Each endpoint has its own ``whsec_`` secret, the event types it takes, a status
(``active`` or ``disabled``, and why) and an optional rate, as Svix, Convoy and Hookdeck keep
them. A notification is signed with its endpoint's secret(s) as stored here, whichever
worker sends it. ``NOTIFY_URL``/``NOTIFY_SECRET``/``NOTIFY_EVENTS`` only seed the ``default``
endpoint(s) (:func:`ensure_defaults`), so a deployment configured by them changes nothing.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlalchemy import Connection
from sqlalchemy.dialects import postgresql, sqlite

from config.settings import Settings, decode_webhook_secret
from receiver.store.models import (
    Notification,
    NotificationStatus,
    NotifyEndpoint,
)

__all__ = [
    "ACTIVE",
    "ALL_TYPES",
    "DISABLED",
    "ENDPOINT_TYPES",
    "OPERATIONAL_TYPES",
    "ROTATION_OVERLAP",
    "SUBMISSION_TYPES",
    "EndpointError",
    "EndpointSpec",
    "add_endpoint",
    "default_specs",
    "disable_endpoint",
    "enable_endpoint",
    "endpoint_json",
    "ensure_defaults",
    "get_endpoint",
    "list_endpoints",
    "new_secret",
    "parse_event_types",
    "remove_endpoint",
    "rotate_secret",
    "signing_keys",
    "takes",
    "update_endpoint",
]

_endpoints = NotifyEndpoint.__table__  # type: ignore[attr-defined]
_notifications = Notification.__table__  # type: ignore[attr-defined]

ACTIVE = "active"
DISABLED = "disabled"
#: Every submission type, final ones first.
SUBMISSION_TYPES = (
    "submission.succeeded",
    "submission.failed",
    "submission.cancelled",
    "submission.expired",
    "submission.updated",
)
#: What the service says about its endpoints, to the other endpoints that take it.
OPERATIONAL_TYPES = ("endpoint.failing", "endpoint.disabled", "endpoint.recovered")
ENDPOINT_TYPES = (*SUBMISSION_TYPES, *OPERATIONAL_TYPES)
#: Every submission type (operational types are taken only when named).
ALL_TYPES = "*"
#: How long the secret before a rotation keeps signing beside the new one.
ROTATION_OVERLAP = timedelta(hours=24)
_FINAL_TYPES = SUBMISSION_TYPES[:4]


class EndpointError(ValueError):
    """A request about endpoints that cannot be done; its message says why."""


def new_endpoint_id() -> str:
    return f"ep_{secrets.token_hex(12)}"


def new_secret() -> str:
    """Return a fresh ``whsec_`` secret: 24 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def _secret_of(key: bytes) -> str:
    return "whsec_" + base64.b64encode(key).decode()


def parse_event_types(text: str | Sequence[str] | None) -> list[str]:
    """Return the event types ``text`` names (comma-separated or a list), checked."""
    if text is None:
        return [ALL_TYPES]
    names = text.split(",") if isinstance(text, str) else list(text)
    types = list(dict.fromkeys(name.strip() for name in names if name.strip()))
    if not types:
        return [ALL_TYPES]
    unknown = [name for name in types if name != ALL_TYPES and name not in ENDPOINT_TYPES]
    if unknown:
        known = ", ".join(ENDPOINT_TYPES)
        message = f"unknown event type(s): {', '.join(unknown)} (known: *, {known})"
        raise EndpointError(message)
    return types


def takes(event_types: Sequence[str], kind: str) -> bool:
    """Tell whether an endpoint taking ``event_types`` takes a notification of ``kind``."""
    if kind in event_types:
        return True
    return ALL_TYPES in event_types and kind.startswith("submission.")


def signing_keys(endpoint: Any, *, now: datetime) -> list[bytes]:
    """Return the keys that sign to ``endpoint``: its secret, then the previous one in time."""
    keys = [decode_webhook_secret(endpoint.secret)]
    expires = endpoint.previous_secret_expires_at
    if endpoint.previous_secret and (expires is None or expires > now):
        keys.append(decode_webhook_secret(endpoint.previous_secret))
    return keys


def _check_secret(secret: str) -> str:
    if not secret.startswith("whsec_"):
        message = "the secret must be a whsec_… secret"
        raise EndpointError(message)
    try:
        decode_webhook_secret(secret)
    except ValueError as exc:
        raise EndpointError(f"the secret {exc}") from None
    return secret


def _check_url(url: str) -> str:
    message = "the URL must be an http(s) URL"
    try:
        parts = urlsplit(url)
        hostname = parts.hostname
    except ValueError:  # unreadable (`http://[x`): as refused as any other
        raise EndpointError(message) from None
    if parts.scheme not in ("http", "https") or not hostname:
        raise EndpointError(message)
    return url


@dataclass(frozen=True, slots=True)
class EndpointSpec:
    """An endpoint as the environment describes it (NOTIFY_URL and friends)."""

    id: str
    url: str
    secret: str
    previous_secret: str | None
    event_types: tuple[str, ...]


def default_specs(settings: Settings) -> tuple[EndpointSpec, ...]:
    """Return the ``default`` endpoint(s) NOTIFY_URL, NOTIFY_SECRET and NOTIFY_EVENTS make.

    The first URL is ``ep_default``, a second ``ep_default_2``…; NOTIFY_SECRET's first key
    is the secret and its second (a rotation under way) the previous one.
    """
    if not settings.notify_urls or not settings.notify_secrets:
        return ()
    keys = settings.notify_secrets
    secret = _secret_of(keys[0])
    previous = _secret_of(keys[1]) if len(keys) > 1 else None
    types = _FINAL_TYPES if settings.notify_events == "final" else (ALL_TYPES,)
    urls = list(dict.fromkeys(settings.notify_urls))
    return tuple(
        EndpointSpec(
            id="ep_default" if index == 1 else f"ep_default_{index}",
            url=url,
            secret=secret,
            previous_secret=previous,
            event_types=types,
        )
        for index, url in enumerate(urls, start=1)
    )


def ensure_defaults(conn: Connection, specs: Sequence[EndpointSpec], *, now: datetime) -> int:
    """Make or update the ``default`` endpoints; return how many were written.

    Their status is left alone (a disabled default stays disabled). Notifications written
    before endpoints were records are adopted by the endpoint of their URL.
    """
    written = 0
    for spec in specs:
        values = {
            "url": spec.url,
            "secret": spec.secret,
            "previous_secret": spec.previous_secret,
            "previous_secret_expires_at": None,
            "event_types": list(spec.event_types),
        }
        row = conn.execute(sa.select(_endpoints).where(_endpoints.c.id == spec.id)).first()
        if row is None:
            written += _insert_ignoring_conflict(conn, {"id": spec.id, **values}, now=now)
        elif any(getattr(row, key) != value for key, value in values.items()):
            conn.execute(
                sa.update(_endpoints)
                .where(_endpoints.c.id == spec.id)
                .values(**values, updated_at=now)
            )
            written += 1
        conn.execute(
            sa.update(_notifications)
            .where(_notifications.c.endpoint_id.is_(None), _notifications.c.endpoint == spec.url)
            .values(endpoint_id=spec.id)
        )
    return written


def _insert_ignoring_conflict(conn: Connection, values: dict[str, Any], *, now: datetime) -> int:
    """Insert an endpoint unless another process just did (two workers starting together)."""
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    statement = insert(_endpoints).values(**values, status=ACTIVE, created_at=now, updated_at=now)
    result = conn.execute(statement.on_conflict_do_nothing(index_elements=["id"]))
    return int(result.rowcount)


def add_endpoint(
    conn: Connection,
    url: str,
    *,
    now: datetime,
    event_types: Sequence[str] = (ALL_TYPES,),
    secret: str | None = None,
    rate: float | None = None,
    description: str | None = None,
) -> dict[str, Any]:
    """Add an endpoint; return it with its secret (shown this once)."""
    if rate is not None and rate <= 0:
        message = "the rate must be more than 0 requests a second"
        raise EndpointError(message)
    values = {
        "id": new_endpoint_id(),
        "url": _check_url(url),
        "secret": _check_secret(secret) if secret else new_secret(),
        "event_types": parse_event_types(list(event_types)),
        "status": ACTIVE,
        "rate": rate,
        "description": description,
        "created_at": now,
        "updated_at": now,
    }
    conn.execute(sa.insert(_endpoints).values(values))
    row = get_endpoint(conn, str(values["id"]))
    return {**endpoint_json(row), "secret": values["secret"]}


def get_endpoint(conn: Connection, endpoint_id: str) -> Any:
    """Return the endpoint's row; :class:`EndpointError` when there is none."""
    row = conn.execute(sa.select(_endpoints).where(_endpoints.c.id == endpoint_id)).first()
    if row is None:
        message = f"no endpoint {endpoint_id}"
        raise EndpointError(message)
    return row


def list_endpoints(conn: Connection) -> list[Any]:
    """Return every endpoint's row, oldest first."""
    query = sa.select(_endpoints).order_by(_endpoints.c.created_at, _endpoints.c.id)
    return list(conn.execute(query))


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def endpoint_json(row: Any) -> dict[str, Any]:
    """Return an endpoint as shown: never its secrets."""
    return {
        "id": row.id,
        "url": row.url,
        "event_types": list(row.event_types),
        "status": row.status,
        "disabled_reason": row.disabled_reason,
        "disabled_at": _iso(row.disabled_at),
        "rate": row.rate,
        "description": row.description,
        "created_at": _iso(row.created_at),
        "failing_since": _iso(row.failing_since),
        "last_success_at": _iso(row.last_success_at),
        "last_failure": row.last_failure,
        "rotating_until": _iso(row.previous_secret_expires_at) if row.previous_secret else None,
    }


def disable_endpoint(conn: Connection, endpoint_id: str, *, reason: str, now: datetime) -> bool:
    """Disable an endpoint: its notifications wait. Tell whether it was active."""
    get_endpoint(conn, endpoint_id)
    result = conn.execute(
        sa.update(_endpoints)
        .where(_endpoints.c.id == endpoint_id, _endpoints.c.status == ACTIVE)
        .values(status=DISABLED, disabled_reason=reason[:500], disabled_at=now, updated_at=now)
    )
    return bool(result.rowcount)


def enable_endpoint(
    conn: Connection, endpoint_id: str, *, now: datetime, max_age: float
) -> tuple[int, list[dict[str, Any]]]:
    """Enable an endpoint and resume its waiting notifications, oldest first per submission.

    Those older than ``max_age`` (NOTIFY_MAX_AGE) are made ``dead`` instead. Return how
    many resume and the ones made dead (id, submission, type, created).
    """
    get_endpoint(conn, endpoint_id)
    conn.execute(
        sa.update(_endpoints)
        .where(_endpoints.c.id == endpoint_id)
        .values(
            status=ACTIVE,
            disabled_reason=None,
            disabled_at=None,
            failing_since=None,
            failing_told_at=None,
            updated_at=now,
        )
    )
    mine = sa.and_(
        _notifications.c.endpoint_id == endpoint_id,
        _notifications.c.status == NotificationStatus.PENDING.value,
    )
    too_old = _notifications.c.created_at < now - timedelta(seconds=max_age)
    c = _notifications.c
    dead = [
        {
            "id": row.id,
            "submission_id": row.submission_id,
            "event_type": row.event_type,
            "created_at": row.created_at.isoformat(),
        }
        for row in conn.execute(
            sa.select(c.id, c.submission_id, c.event_type, c.created_at)
            .where(mine, too_old)
            .order_by(c.id)
        )
    ]
    if dead:
        conn.execute(
            sa.update(_notifications)
            .where(c.id.in_([item["id"] for item in dead]))
            .values(status=NotificationStatus.DEAD.value)
        )
    resumed = conn.execute(
        sa.update(_notifications).where(mine).values(next_attempt_at=now)
    ).rowcount
    return int(resumed), dead


def rotate_secret(
    conn: Connection, endpoint_id: str, *, now: datetime, secret: str | None = None
) -> str:
    """Give an endpoint a new secret; the old one signs beside it for 24 hours. Return it."""
    row = get_endpoint(conn, endpoint_id)
    fresh = _check_secret(secret) if secret else new_secret()
    conn.execute(
        sa.update(_endpoints)
        .where(_endpoints.c.id == endpoint_id)
        .values(
            secret=fresh,
            previous_secret=row.secret,
            previous_secret_expires_at=now + ROTATION_OVERLAP,
            updated_at=now,
        )
    )
    return fresh


def remove_endpoint(conn: Connection, endpoint_id: str) -> int:
    """Remove an endpoint and drop its pending notifications; return how many were dropped.

    Delivered and dead ones are kept: they are the record of what was sent.
    """
    get_endpoint(conn, endpoint_id)
    dropped = conn.execute(
        sa.delete(_notifications).where(
            _notifications.c.endpoint_id == endpoint_id,
            _notifications.c.status == NotificationStatus.PENDING.value,
        )
    ).rowcount
    conn.execute(sa.delete(_endpoints).where(_endpoints.c.id == endpoint_id))
    return int(dropped)


def update_endpoint(
    conn: Connection,
    endpoint_id: str,
    *,
    now: datetime,
    changes: dict[str, Any],
    max_age: float,
) -> list[dict[str, Any]]:
    """Change an endpoint's URL, types, rate, description or status; return those made dead.

    A ``status`` of ``disabled`` disables it by hand, ``active`` enables it as
    :func:`enable_endpoint` does (its notifications past ``max_age`` made dead).
    """
    get_endpoint(conn, endpoint_id)
    values: dict[str, Any] = {}
    if "url" in changes:
        values["url"] = _check_url(str(changes["url"]))
    if "event_types" in changes:
        values["event_types"] = parse_event_types(list(changes["event_types"]))
    if "rate" in changes:
        rate = changes["rate"]
        if rate is not None and rate <= 0:
            message = "the rate must be more than 0 requests a second"
            raise EndpointError(message)
        values["rate"] = rate
    if "description" in changes:
        values["description"] = changes["description"]
    if values:
        conn.execute(
            sa.update(_endpoints)
            .where(_endpoints.c.id == endpoint_id)
            .values(**values, updated_at=now)
        )
        if "url" in values:
            conn.execute(
                sa.update(_notifications)
                .where(
                    _notifications.c.endpoint_id == endpoint_id,
                    _notifications.c.status == NotificationStatus.PENDING.value,
                )
                .values(endpoint=values["url"])
            )
    status = changes.get("status")
    if status == DISABLED:
        disable_endpoint(conn, endpoint_id, reason="disabled through the API", now=now)
    elif status == ACTIVE and get_endpoint(conn, endpoint_id).status != ACTIVE:
        return enable_endpoint(conn, endpoint_id, now=now, max_age=max_age)[1]
    return []
