"""One JSON shape for every error: ``{"error": code, "message": …}``.

And one refusal before any view runs: a URL whose path or query holds a NUL character
(``%00``) is answered 400. No id, filter or search of any surface can hold one (PostgreSQL's
text cannot store or compare it), so no view has to check for it.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, abort, jsonify, request
from werkzeug.exceptions import HTTPException

from receiver.observe.logs import note

__all__ = ["error_response", "init_app"]

log = logging.getLogger(__name__)


def error_response(
    status: int, code: str, message: str, *, headers: dict[str, str] | None = None
) -> Response:
    """Return a JSON error response (its code goes into the request's log line)."""
    note(error=code)
    response = jsonify(error=code, message=message)
    response.status_code = status
    if headers:
        response.headers.update(headers)
    return response


def _http_error(exc: HTTPException) -> Response:
    code = (exc.name or "error").lower().replace(" ", "_")
    response = error_response(exc.code or 500, code, exc.description or exc.name)
    if exc.code == 405 and exc.valid_methods:  # type: ignore[attr-defined]
        response.headers["Allow"] = ", ".join(exc.valid_methods)  # type: ignore[attr-defined]
    return response


def _unexpected_error(exc: Exception) -> Response:
    log.exception("unhandled error")
    return error_response(500, "internal_error", "the server could not handle this request")


def _refuse_nul_in_url() -> None:
    environ = request.environ
    query = environ.get("QUERY_STRING", "")
    if "\x00" in environ.get("PATH_INFO", "") or "%00" in query or "\x00" in query:
        abort(400, "the URL must not contain a NUL character (%00)")


def init_app(app: Flask) -> None:
    """Answer every HTTP error and unexpected exception as JSON; refuse a NUL in a URL."""
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected_error)
    app.before_request(_refuse_nul_in_url)
