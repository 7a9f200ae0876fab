"""Structured logs: JSON lines, a request id per request, and one line per request.

The web process writes to stdout (Heroku's log drain reads it); commands write their logs
to stderr so that their own output stays clean. Fields are chosen, never dumped: no
secret, token, signature or body reaches a log line.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import sys
import time
from datetime import UTC, datetime
from typing import IO, Any

from flask import Flask, Response, g, has_request_context, request

__all__ = [
    "REQUEST_ID_HEADER",
    "JsonFormatter",
    "RequestIdFilter",
    "configure_logging",
    "init_app",
    "log_fields",
    "note",
]

REQUEST_ID_HEADER = "X-Request-ID"
#: What a caller's request id may look like (Heroku's router sends a UUID); else one is made.
_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+=/-]{0,127}")
#: Requests a load balancer or scraper makes every few seconds: logged at DEBUG when fine.
_QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_HANDLER_MARK = "_jobhooks_handler"

request_log = logging.getLogger("jobhooks.request")


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON object on one line.

    Structured fields come from ``extra={"data": {...}}``; the request id is added to every
    record logged while a request is handled.
    """

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None)
        if request_id is not None:
            entry["request_id"] = request_id
        data = getattr(record, "data", None)
        if isinstance(data, dict):
            entry.update(data)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, default=str, separators=(",", ":"))


class RequestIdFilter(logging.Filter):
    """Tag every record logged during a request with the request's id."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id") and has_request_context():
            record.request_id = g.get("request_id")
        return True


def configure_logging(*, level: str, fmt: str, stream: IO[str] | None = None) -> None:
    """Send the root logger's records to ``stream`` (default stderr) as JSON or text.

    Logging that someone else set up (a test runner, an embedding program) is left alone
    unless a ``stream`` is asked for; calling again only updates level and format.
    """
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    root = logging.getLogger()
    handler = next((h for h in root.handlers if getattr(h, _HANDLER_MARK, False)), None)
    if handler is None:
        if root.handlers and stream is None:
            return
        handler = logging.StreamHandler(stream or sys.stderr)
        setattr(handler, _HANDLER_MARK, True)
        handler.addFilter(RequestIdFilter())
        root.addHandler(handler)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(_TEXT_FORMAT))
    root.setLevel(level.upper())


def note(**fields: Any) -> None:
    """Add fields (delivery id, outcome, error code…) to this request's log line."""
    if has_request_context():
        fields_of_request = g.get("log_fields")
        if fields_of_request is not None:
            fields_of_request.update(fields)


def log_fields() -> dict[str, Any]:
    """Return the fields noted for this request so far."""
    fields: dict[str, Any] = g.get("log_fields") or {}
    return fields


def request_duration() -> float:
    """Return seconds since this request started."""
    started: float = g.get("started", time.perf_counter())
    return time.perf_counter() - started


def _start_request() -> None:
    g.started = time.perf_counter()
    given = request.headers.get(REQUEST_ID_HEADER)
    g.request_id = given if given and _REQUEST_ID.fullmatch(given) else secrets.token_hex(16)
    g.log_fields = {}


def _log_request(response: Response) -> Response:
    duration = request_duration()
    request_id = g.get("request_id")
    if request_id is not None:
        response.headers[REQUEST_ID_HEADER] = request_id
    status = response.status_code
    path = request.path
    view_args = request.view_args
    if view_args and "token" in view_args:
        # A webhook URL's token is a credential: the route's shape is all the log needs.
        path = path[: path.rfind("/") + 1] + "[token]"
    fields = log_fields()
    data: dict[str, Any] = {
        "method": request.method,
        "path": path,
        "status": status,
        "duration_ms": round(duration * 1000, 3),
    }
    data.update(fields)
    if request.blueprint == "webhooks" and "delivery_id" not in data:
        claimed = request.headers.get("webhook-id") or request.headers.get("svix-id")
        if claimed:
            # Not verified (the signature may be what failed), but it is what the sender said.
            data["delivery_id"] = claimed[:100]
    summary = data.get("outcome") or data.get("error") or ""
    level = logging.INFO
    if status >= 500:
        level = logging.ERROR
    elif path in _QUIET_PATHS and status < 400:
        level = logging.DEBUG
    if request_log.isEnabledFor(level):
        delivery = data.get("delivery_id")
        message = f"{request.method} {path} {status} {summary}".rstrip()
        if delivery:
            message += f" delivery={delivery}"
        request_log.log(level, message, extra={"data": data, "request_id": request_id})
    return response


def init_app(app: Flask) -> None:
    """Give every request an id (kept from ``X-Request-ID`` or made) and a log line."""
    app.before_request(_start_request)
    app.after_request(_log_request)
