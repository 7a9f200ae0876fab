"""Liveness and readiness probes."""

from __future__ import annotations

import logging

from flask import Blueprint, Response, current_app, jsonify
from sqlalchemy.exc import SQLAlchemyError

from receiver.store.engines import get_engine, migration_state
from receiver.web.errors import error_response

__all__ = ["bp"]

log = logging.getLogger(__name__)
bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    """Answer while the process is up."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> Response:
    """Answer 200 only when the database is reachable and fully migrated."""
    try:
        current, head = migration_state(get_engine())
    except SQLAlchemyError as exc:
        log.warning("readiness: database unreachable: %s", type(exc).__name__)
        return error_response(
            503, "database_unavailable", "database is unreachable", headers={"Retry-After": "5"}
        )
    if current != head:
        return error_response(
            503, "not_migrated", f"database is at {current or 'no revision'}, code needs {head}"
        )
    warning = current_app.extensions["jobhooks.settings"].token_only_warning
    if warning is not None:
        # Ready all the same: a deployment may choose URL tokens alone, but never unknowingly.
        return jsonify(status="ready", revision=current, warnings=[warning])
    return jsonify(status="ready", revision=current)
