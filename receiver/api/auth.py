"""Bearer API keys on every ``/api/v1`` request but the OpenAPI document's."""

from __future__ import annotations

from flask import g, request

from receiver.api.errors import ApiProblem
from receiver.api.keys import KeyHolder, authenticate, record_use
from receiver.db import get_engine, get_read_engine
from receiver.logs import note
from receiver.models import utcnow

__all__ = ["PUBLIC_ENDPOINTS", "current_key", "require_key"]

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
    with get_read_engine().connect() as conn:
        holder = authenticate(conn, key)
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
