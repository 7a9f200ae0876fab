"""An endpoint's rate, shared by every sending process: a token bucket kept on its row.

The bucket (``rate_tokens`` at ``rate_at``) is read and spent in the transaction that
claims the endpoint's notifications, so two workers together send no more than the rate
allows, as one would. On PostgreSQL the row is locked while it is spent (``SKIP LOCKED``:
a worker that finds another spending it leaves the endpoint to it this round, so no claim
waits on another and no two claims can deadlock); on SQLite the claim's ``BEGIN
IMMEDIATE`` already lets one writer in at a time.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection

from receiver.store.models import NotifyEndpoint

__all__ = ["give_back", "take_allowance"]

_endpoints = NotifyEndpoint.__table__  # type: ignore[attr-defined]
_BUCKET = (
    sa.select(_endpoints.c.rate, _endpoints.c.rate_tokens, _endpoints.c.rate_at)
    .where(_endpoints.c.id == sa.bindparam("id"))
    .with_for_update(skip_locked=True)
)
_GIVE_BACK = (
    sa.update(_endpoints)
    .where(_endpoints.c.id == sa.bindparam("endpoint_id"), _endpoints.c.rate_tokens.is_not(None))
    .values(rate_tokens=_endpoints.c.rate_tokens + sa.bindparam("count", type_=sa.Float))
)
_SPEND = (
    sa.update(_endpoints)
    .where(_endpoints.c.id == sa.bindparam("endpoint_id"))
    .values(rate_tokens=sa.bindparam("tokens"), rate_at=sa.bindparam("at"))
)


def take_allowance(conn: Connection, endpoint: Any, *, now: datetime, wanted: int) -> int:
    """Spend and return up to ``wanted`` requests of ``endpoint``'s rate at ``now``.

    An endpoint without a rate allows all of them, and its row is neither read again nor
    locked. The bucket holds at most one second's worth (at least one request) and refills
    at the rate; a ``rate_at`` later than ``now`` (another worker's clock a little ahead)
    refills nothing rather than draining.
    """
    if endpoint.rate is None:
        return wanted
    row = conn.execute(_BUCKET, {"id": endpoint.id}).first()
    if row is None or row.rate is None:  # another worker is spending it right now, or removed
        return 0 if row is None else wanted
    rate = float(row.rate)
    burst = max(1.0, rate)
    tokens = burst if row.rate_tokens is None else float(row.rate_tokens)
    if row.rate_at is not None:
        tokens += max(0.0, (now - row.rate_at).total_seconds()) * rate
    tokens = min(burst, tokens)
    taken = max(0, min(wanted, int(tokens)))
    conn.execute(_SPEND, {"endpoint_id": endpoint.id, "tokens": tokens - taken, "at": now})
    return taken


def give_back(conn: Connection, endpoint: Any, count: int) -> None:
    """Return ``count`` requests :func:`take_allowance` spent that found nothing to send.

    An endpoint without a rate spent nothing: no statement is run for it.
    """
    if count > 0 and endpoint.rate is not None:
        conn.execute(_GIVE_BACK, {"endpoint_id": endpoint.id, "count": float(count)})
