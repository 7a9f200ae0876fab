"""API keys: made once, stored only as a SHA-256, checked in constant time, revoked at once.

A key is 256 random bits, so a fast hash is the right one: nothing can be guessed from
it, and checking a request costs one indexed lookup, never a slow key derivation.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from receiver.store.hotsql import HotStatement
from receiver.store.models import ApiKey

__all__ = [
    "KEY_PREFIX",
    "ApiKeyError",
    "KeyHolder",
    "authenticate",
    "create_key",
    "hash_key",
    "list_keys",
    "record_use",
    "revoke_key",
]

#: Every key starts with this, so a leaked one is recognisable in a scan of a repository.
KEY_PREFIX = "jh_"
#: ``last_used_at`` is written at most this often per key: a GET must not take the write lock.
USE_RESOLUTION = timedelta(minutes=1)
_MAX_NAME = 100

_keys = ApiKey.__table__  # type: ignore[attr-defined]
#: Every API request runs it: on the driver's cursor, as the webhook's statements run.
_LOOKUP = HotStatement(
    sa.select(_keys.c.id, _keys.c.name, _keys.c.key_hash, _keys.c.last_used_at).where(
        _keys.c.key_hash == sa.bindparam("key_hash"), _keys.c.revoked_at.is_(None)
    )
)


class ApiKeyError(ValueError):
    """A key cannot be made or revoked as asked; the message says why."""


@dataclass(frozen=True, slots=True)
class KeyHolder:
    """The key a request was made with: its id and name (never the key)."""

    id: int
    name: str
    last_used_at: datetime | None


def hash_key(key: str) -> str:
    """Return the stored form of a key: its SHA-256, hex."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _check_name(name: str) -> str:
    clean = name.strip()
    if not clean or len(clean) > _MAX_NAME or not clean.isprintable():
        message = f"a key's name must be 1 to {_MAX_NAME} printable characters"
        raise ApiKeyError(message)
    return clean


def create_key(engine: Engine, name: str, *, now: datetime) -> str:
    """Make a key named ``name`` and return it; only its hash is stored."""
    clean = _check_name(name)
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.insert(_keys).values(name=clean, key_hash=hash_key(key), created_at=now)
            )
    except IntegrityError:
        message = f"a live key is already named {clean!r}: revoke it first, or pick another name"
        raise ApiKeyError(message) from None
    return key


def list_keys(conn: Connection) -> list[dict[str, Any]]:
    """Return every key's name, creation, last use and revocation, oldest first."""
    statement = sa.select(
        _keys.c.name, _keys.c.created_at, _keys.c.last_used_at, _keys.c.revoked_at
    ).order_by(_keys.c.id)
    return [dict(row._mapping) for row in conn.execute(statement)]


def revoke_key(engine: Engine, name: str, *, now: datetime) -> None:
    """End the live key named ``name`` now; raise ApiKeyError when there is none."""
    with engine.begin() as conn:
        result = conn.execute(
            sa.update(_keys)
            .where(_keys.c.name == name.strip(), _keys.c.revoked_at.is_(None))
            .values(revoked_at=now)
        )
    if result.rowcount == 0:
        message = f"no live key named {name.strip()!r}"
        raise ApiKeyError(message)


def authenticate(conn: Connection, key: str) -> KeyHolder | None:
    """Return who holds ``key``, or None for an unknown or revoked key.

    ``conn`` is in a transaction (the request's read transaction).
    """
    wanted = hash_key(key)
    rows = _LOOKUP.execute(conn, {"key_hash": wanted})
    # The lookup found the row by its hash; comparing again in constant time leaves no
    # timing difference between a near miss and a far one, whatever the index does.
    if not rows or not hmac.compare_digest(rows[0][2], wanted):
        return None
    key_id, name, _, last_used_at = rows[0]
    return KeyHolder(id=key_id, name=name, last_used_at=last_used_at)


def record_use(engine: Engine, holder: KeyHolder, *, now: datetime) -> None:
    """Note that ``holder``'s key was used, at most once per minute."""
    if holder.last_used_at is not None and now - holder.last_used_at < USE_RESOLUTION:
        return
    with engine.begin() as conn:
        conn.execute(sa.update(_keys).where(_keys.c.id == holder.id).values(last_used_at=now))
