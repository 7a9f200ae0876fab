"""An endpoint's health: what each attempt says about it, and when to tell the people on call.

Failing since the first failure after a success, told again once an hour; disabled at once on
``410 Gone`` (Standard Webhooks says so) or after NOTIFY_DISABLE_AFTER of failures only;
recovered at the next success.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection

from receiver.flows.endpoints.records import ACTIVE, DISABLED
from receiver.store.models import NotifyEndpoint

__all__ = ["FAILING_REMINDER", "HealthChange", "record_health"]

_endpoints = NotifyEndpoint.__table__  # type: ignore[attr-defined]


#: How often the people on call are told again while an endpoint keeps failing.
FAILING_REMINDER = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class HealthChange:
    """What an attempt changed in its endpoint's health, to be told: ``kind`` and since when."""

    kind: str  # "failing", "disabled" or "recovered"
    endpoint: Any
    since: datetime | None
    reason: str | None = None


def record_health(
    conn: Connection,
    endpoint_id: str,
    *,
    ok: bool,
    status: int | None,
    error: str | None,
    attempted_at: datetime,
    now: datetime,
    disable_after: float,
) -> HealthChange | None:
    """Record an attempt's outcome on its endpoint; return what is to be told, if anything.

    A success after failures is ``recovered``. The first failure after a success is
    ``failing``, told again once an hour while it lasts. ``410 Gone`` disables the endpoint
    at once; failures only, for ``disable_after`` seconds, disable it too.
    """
    row = conn.execute(sa.select(_endpoints).where(_endpoints.c.id == endpoint_id)).first()
    if row is None:
        return None
    update = sa.update(_endpoints).where(_endpoints.c.id == endpoint_id)
    if ok:
        conn.execute(
            update.values(last_success_at=attempted_at, failing_since=None, failing_told_at=None)
        )
        if row.failing_since is None:
            return None
        return HealthChange("recovered", row, row.failing_since)
    failure = (f"HTTP {status}" if status is not None else error or "failed")[:500]
    since = row.failing_since or attempted_at
    if row.status == ACTIVE and (status == 410 or now - since >= timedelta(seconds=disable_after)):
        reason = (
            "answered 410 Gone"
            if status == 410
            else f"every attempt failed since {since.isoformat()} ({failure})"
        )
        conn.execute(
            update.values(
                status=DISABLED,
                disabled_reason=reason,
                disabled_at=now,
                failing_since=since,
                last_failure=failure,
                updated_at=now,
            )
        )
        return HealthChange("disabled", row, since, reason)
    tell = row.failing_since is None or (
        row.failing_told_at is None or now - row.failing_told_at >= FAILING_REMINDER
    )
    values: dict[str, Any] = {"failing_since": since, "last_failure": failure}
    if tell:
        values["failing_told_at"] = now
    conn.execute(update.values(values))
    return HealthChange("failing", row, since, failure) if tell else None
