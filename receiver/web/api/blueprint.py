"""The API's blueprint, ``/api/v1``: every view module adds its routes to it."""

from __future__ import annotations

from flask import Blueprint

from receiver.web.api.auth import release_read, require_key
from receiver.web.api.errors import register_error_handlers

__all__ = ["bp"]

bp = Blueprint("api", __name__, url_prefix="/api/v1")
bp.before_request(require_key)
bp.teardown_request(release_read)
register_error_handlers(bp)
