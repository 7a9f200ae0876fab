"""Bearer API keys on every ``/api/v1`` request but the OpenAPI document's."""

from __future__ import annotations

from flask import g, request
from sqlalchemy import Connection

from receiver.flows.api_keys import KeyHolder, authenticate, record_use
from receiver.observe.logs import note
from receiver.store.engines import get_engine, get_read_engine
from receiver.store.models import utcnow
from receiver.web.api.errors import ApiProblem

__all__ = ["PUBLIC_ENDPOINTS", "current_key", "read_connection", "release_read", "require_key"]

#: Served without a key.
PUBLIC_ENDPOINTS = frozenset({"api.openapi_document"})


def _refuse(message: str) -> ApiProblem:
    return ApiProblem(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})


def require_key() -> None:
    """Let the request through only with a live key (``Authorization: Bearer <key>``)."""
    if request.endpoint in PUBLIC_ENDPOINTS:
        return
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        raise _refuse("send an API key as Authorization: Bearer <key>")
    holder = authenticate(read_connection(), key)
    if request.method != "GET":
        # A view that writes reads afterwards on its own connection: on SQLite, a read
        # transaction begun before the write would not see it.
        release_read()
    if holder is None:
        raise _refuse("the API key is unknown or revoked")
    g.api_key = holder
    # The key's name, never the key, goes on the request's log line.
    note(api_key=holder.name)
    record_use(get_engine(), holder, now=utcnow())


def current_key() -> KeyHolder:
    """Return the key the current request was made with."""
    holder: KeyHolder = g.api_key
    return holder


def read_connection() -> Connection:
    """Return the request's read connection, in a read transaction, closed when it ends.

    The key is checked on it and a ``GET`` view reads on it too: one pool checkout (and
    on SQLite one ``BEGIN``) a request instead of two.
    """
    conn: Connection | None = g.get("api_read")
    if conn is None:
        conn = get_read_engine().connect()
        try:
            conn.begin()
        except BaseException:
            conn.close()
            raise
        g.api_read = conn
    return conn


def release_read(_error: BaseException | None = None) -> None:
    """Close the request's read connection, if it opened one."""
    conn: Connection | None = g.pop("api_read", None)
    if conn is not None:
        conn.close()
