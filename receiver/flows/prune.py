"""Keep the inbox bounded: delete old deliveries, always keeping each submission's latest."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection
from sqlalchemy.engine import Engine

from receiver.store.models import NotificationAttempt, WebhookEvent

__all__ = ["count_prunable", "count_prunable_attempts", "prune_attempts", "prune_events"]

_events = WebhookEvent.__table__  # type: ignore[attr-defined]
_attempts = NotificationAttempt.__table__  # type: ignore[attr-defined]


def _prunable(before: datetime) -> tuple[Any, Any]:
    """Return (alias, condition) selecting old events that are not their submission's latest."""
    event = _events.alias("event")
    newer = _events.alias("newer")
    latest = (
        sa.select(sa.func.max(newer.c.id))
        .where(newer.c.submission_id == event.c.submission_id)
        .correlate(event)
        .scalar_subquery()
    )
    condition = sa.and_(
        event.c.received_at < before,
        sa.or_(event.c.submission_id.is_(None), event.c.id < latest),
    )
    return event, condition


def count_prunable(conn: Connection, *, before: datetime) -> int:
    """Return how many events :func:`prune_events` would delete."""
    event, condition = _prunable(before)
    return int(
        conn.execute(sa.select(sa.func.count()).select_from(event).where(condition)).one()[0]
    )


def prune_events(engine: Engine, *, before: datetime, batch: int = 1000) -> int:
    """Delete events received before ``before``, keeping each submission's latest one.

    Walks the ids in ranges of ``batch``, one short transaction each, so webhooks keep
    flowing while it runs (tests/unit/flows/test_prune_batches.py: none waits over 100 ms).
    A range bounds the rows each batch looks at, whatever the plan: asking for "the oldest
    ``batch`` prunable rows" instead made PostgreSQL test every old row for every batch.
    """
    event, condition = _prunable(before)
    old = sa.select(sa.func.min(_events.c.id), sa.func.max(_events.c.id)).where(
        _events.c.received_at < before
    )
    with engine.connect() as conn:
        first, last = conn.execute(old).one()
    if first is None:
        return 0
    low = sa.bindparam("low", type_=sa.Integer)
    in_range = sa.and_(condition, event.c.id >= low, event.c.id < low + batch)
    statement = sa.delete(_events).where(_events.c.id.in_(sa.select(event.c.id).where(in_range)))
    deleted = 0
    for start in range(first, last + 1, batch):
        started = time.monotonic()
        with engine.begin() as conn:
            deleted += conn.execute(statement, {"low": start}).rowcount
        _rest_after_batch(engine, time.monotonic() - started)
    return deleted


#: After each batch the prune rests this many times as long as the batch took, by dialect.
REST_PER_BATCH = {"sqlite": 2.0, "postgresql": 1.0}


def _rest_after_batch(engine: Engine, took: float) -> None:
    """Rest after a batch, so the webhooks flowing meanwhile keep their rate.

    SQLite: its one writer's lock is not handed out in turn. Batches back to back took it
    again before a waiting webhook's busy handler woke, and webhooks at half the service's
    rate waited up to 6 s behind a prune of 750,000 rows (``make bench``, prune). Free as
    long as held, webhooks at half the service's rate had half the lock's time, about what
    they need, and queued up to 1.7 s; with two thirds of it they keep up.

    PostgreSQL: inserts do not wait on the deletes, but batches back to back kept a server
    process busy and wrote WAL as fast as the disk took it (full-page images of every page
    the deletes touched after a checkpoint, then the checkpoint that WAL set off). Webhooks
    at half the service's rate fell behind and queued up to 3.3 s (``make bench``, prune,
    2026-12-07). Resting as long as each batch took halves the prune's share.
    """
    rest = REST_PER_BATCH.get(engine.dialect.name, 1.0)
    time.sleep(took * rest)


def count_prunable_attempts(conn: Connection, *, before: datetime) -> int:
    """Return how many notification attempts :func:`prune_attempts` would delete."""
    query = sa.select(sa.func.count()).where(_attempts.c.attempted_at < before)
    return int(conn.execute(query).scalar_one())


def prune_attempts(engine: Engine, *, before: datetime, batch: int = 1000) -> int:
    """Delete notification attempts made before ``before``, ``batch`` rows a transaction."""
    oldest = (
        sa.select(_attempts.c.id)
        .where(_attempts.c.attempted_at < before)
        .order_by(_attempts.c.id)
        .limit(batch)
    )
    statement = sa.delete(_attempts).where(_attempts.c.id.in_(oldest))
    deleted = 0
    while True:
        with engine.begin() as conn:
            count = conn.execute(statement).rowcount
        deleted += count
        if count < batch:
            return deleted
