"""``Idempotency-Key``: the first answer to a request, stored and given again to its retries.

The database decides who does the work: the first request inserts the row for its
(API key, Idempotency-Key) pair, the unique constraint turns every other away, and they
wait for the first answer (at most the ittybit budget) and answer it again. The same key
with another body is refused (422). Answers of 500 and above are not kept: the work may
not have happened, so a retry does it.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from flask import Response
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from receiver.store.engines import read_only
from receiver.store.models import IdempotentRequest
from receiver.web.api.errors import ApiProblem

__all__ = ["EXPIRED_BATCH", "KEEP_FOR", "Claim", "claim", "finish", "release", "request_hash"]

#: How long a key's answer is kept (ittybit keeps its own for 24 h too).
KEEP_FOR = timedelta(hours=24)
#: At most this many expired answers are deleted with each answer stored: more than are
#: stored, so the table shrinks back to a day of keys after any burst.
EXPIRED_BATCH = 100
#: A claim left unanswered this long belongs to a request that died: another may take it.
ABANDONED_AFTER = timedelta(seconds=60)
_POLL = 0.05

_table = IdempotentRequest.__table__  # type: ignore[attr-defined]
_c = _table.c


@dataclass(frozen=True, slots=True)
class Claim:
    """This request owns the key's row ``id``: it does the work and stores the answer."""

    id: int


def request_hash(method: str, path: str, body: Any) -> str:
    """Return the fingerprint of a request: method, path and its JSON body, key order aside."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{method} {path}\n{canonical}".encode()).hexdigest()


def _insert(engine: Engine, values: dict[str, Any]) -> int | None:
    insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
    statement = (
        insert(_table)
        .values(values)
        .on_conflict_do_nothing(index_elements=[_c.api_key_id, _c.idempotency_key])
        .returning(_c.id)
    )
    with engine.begin() as conn:
        inserted = conn.execute(statement).scalar_one_or_none()
    return None if inserted is None else int(inserted)


def _replay(status: int, body: str) -> Response:
    response = Response(body, status=status, mimetype="application/json")
    response.headers["Idempotent-Replayed"] = "true"
    return response


def claim(
    engine: Engine,
    *,
    api_key_id: int,
    key: str,
    fingerprint: str,
    now: datetime,
    wait: float,
) -> Claim | Response:
    """Own the key for this request, or return the first answer to give again.

    Raises ApiProblem: 422 when the key came with another request, 409 when the first
    request is still working after ``wait`` seconds.
    """
    values = {
        "api_key_id": api_key_id,
        "idempotency_key": key,
        "request_hash": fingerprint,
        "created_at": now,
    }
    deadline = time.monotonic() + wait
    while True:
        inserted = _insert(engine, values)
        if inserted is not None:
            return Claim(inserted)
        with read_only(engine).connect() as conn:
            row = conn.execute(
                sa.select(_c.id, _c.request_hash, _c.status, _c.body, _c.created_at).where(
                    _c.api_key_id == api_key_id, _c.idempotency_key == key
                )
            ).first()
        if row is None:
            continue  # released between our insert and our look: try again
        if row.created_at <= now - KEEP_FOR or (
            row.status is None and row.created_at <= now - ABANDONED_AFTER
        ):
            if _take_over(engine, row.id, row.created_at, values):
                return Claim(row.id)
            continue
        if row.request_hash != fingerprint:
            message = "this Idempotency-Key was used with another request; use a new key"
            raise ApiProblem(422, "idempotency_key_reused", message, field="Idempotency-Key")
        if row.status is not None:
            return _replay(row.status, row.body or "")
        if time.monotonic() >= deadline:
            message = "a request with this Idempotency-Key is still being handled; retry"
            raise ApiProblem(409, "idempotency_in_progress", message, headers={"Retry-After": "1"})
        time.sleep(_POLL)


def _take_over(engine: Engine, row_id: int, seen: datetime, values: dict[str, Any]) -> bool:
    """Reuse an expired or abandoned row; only one of several requests trying wins."""
    with engine.begin() as conn:
        result = conn.execute(
            sa.update(_table)
            .where(_c.id == row_id, _c.created_at == seen)
            .values(
                request_hash=values["request_hash"],
                created_at=values["created_at"],
                status=None,
                body=None,
            )
        )
    return bool(result.rowcount)


def finish(engine: Engine, owned: Claim, response: Response, *, now: datetime) -> None:
    """Store the answer for the retries, or give the key up when it is a 5xx.

    The same transaction deletes up to :data:`EXPIRED_BATCH` answers older than
    :data:`KEEP_FOR`, which no retry would be given any more (:func:`claim` would take their
    row over): the table holds about a day of keys, with no command to run.
    """
    if response.status_code >= 500:
        release(engine, owned)
        return
    expired = (
        sa.select(_c.id)
        .where(_c.created_at < now - KEEP_FOR, _c.id != owned.id)
        .order_by(_c.created_at)
        .limit(EXPIRED_BATCH)
        # Rows another request is deleting or taking over are left to it: no waits, no
        # deadlock between two answers stored at once (PostgreSQL; SQLite has one writer).
        .with_for_update(skip_locked=True)
    )
    with engine.begin() as conn:
        conn.execute(
            sa.update(_table)
            .where(_c.id == owned.id)
            .values(status=response.status_code, body=response.get_data(as_text=True))
        )
        conn.execute(sa.delete(_table).where(_c.id.in_(expired.scalar_subquery())))


def release(engine: Engine, owned: Claim) -> None:
    """Forget the key, so that a retry does the work."""
    with engine.begin() as conn:
        conn.execute(sa.delete(_table).where(_c.id == owned.id))
