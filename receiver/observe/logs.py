"""Structured logs: JSON lines, a request id per request, and one line per request.

The web process and the ``reconcile --loop`` worker write to stdout (Heroku's log drain
reads it); one-off commands write their logs to stderr so that their own output stays
clean. Fields are chosen by the code that logs (``extra={"data": {...}}``), never dumped
from objects: no secret, token, signature or body reaches a log line, and the token of a
per-submission webhook URL is cut out of every path logged.
"""

from __future__ import annotations

import logging
import re
import secrets
import sys
import time
from datetime import UTC, datetime
from typing import IO, Any

from flask import Flask, Response, g, has_request_context, request
from pythonjsonlogger.core import LogData
from pythonjsonlogger.json import JsonEncoder as _LibraryJsonEncoder
from pythonjsonlogger.json import JsonFormatter as _LibraryJsonFormatter

__all__ = [
    "REQUEST_ID_HEADER",
    "JsonFormatter",
    "RedactTokensFilter",
    "RequestIdFilter",
    "RequestLog",
    "configure_logging",
    "current",
    "init_app",
    "note",
    "redact_fields",
    "redact_tokens",
]

REQUEST_ID_HEADER = "X-Request-ID"
_REQUEST_ID_ENVIRON = "HTTP_X_REQUEST_ID"
#: Where a request's RequestLog is kept, on ``flask.g``.
_STATE = "jobhooks_log"
#: What a caller's request id may look like (Heroku's router sends a UUID); else one is made.
_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+=/-]{0,127}")
#: Requests a load balancer or scraper makes every few seconds: logged at DEBUG when fine.
_QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_HANDLER_MARK = "_jobhooks_handler"
#: A per-submission webhook URL's token is a credential. Whatever follows the route's prefix
#: is cut (a 404 with a slash or segment too many, a 405, a mangled token), and so is
#: anything shaped like a token elsewhere (TOKEN_SHAPE: a query string, a path mistyped in
#: front of it). Every repeat is possessive: nothing is scanned twice from one start.
_ROUTE = re.compile(r"(?P<route>/webhooks/++ittybit/++)[^\s/?#&\"']++", re.IGNORECASE)
#: Where a token ends: its second dot and 27 signature characters. It starts with a literal,
#: which the regex engine finds at C speed; TOKEN_SHAPE searched as it stands took ~1 s on
#: 24 KB of "eyJeyJ…" (every "eyJ" restarted a scan to the end of the run).
_TOKEN_END = re.compile(r"\.[A-Za-z0-9_-]{27}")
_TOKEN_CHARS = re.compile(r"[A-Za-z0-9_-]*+")
_TOKEN_START = re.compile("eyJ", re.IGNORECASE)
request_log = logging.getLogger("jobhooks.request")
#: What ``json.dumps(line, cls=JsonEncoder)`` makes for each line, made once: it keeps no
#: state between calls (``encode`` makes its own C encoder each time).
_ENCODER = _LibraryJsonEncoder()


class JsonFormatter(_LibraryJsonFormatter):
    """Format a record as one JSON object on one line.

    Fields: ``time``, ``level``, ``logger``, ``message``, ``exception`` when there is one,
    the request id of a record logged while a request is handled, and the fields of
    ``extra={"data": {...}}``, which are laid out at the top level.
    """

    def __init__(self) -> None:
        super().__init__(
            ["asctime", "levelname", "name", "message"],
            rename_fields={
                "asctime": "time",
                "levelname": "level",
                "name": "logger",
                "exc_info": "exception",
            },
        )

    def format(self, record: logging.LogRecord) -> str:
        """Return the line the library's ``format`` writes for ``record``, in one pass.

        The library looks each field up through its renaming and options and makes a JSON
        encoder per line: 108,000 instructions for a webhook's line, 88,000 this way, half
        of them the JSON encoding itself (``python -m bench.instructions``). With this
        class's fixed fields and options the same line is a dict built in order, written by
        one shared encoder (the library's, made as ``json.dumps`` makes it). A dict logged as
        the message, or a stack, goes through the library as before;
        ``tests/unit/observe/test_logging.py`` compares the two.
        """
        if isinstance(record.msg, dict) or record.stack_info:
            return super().format(record)
        # What the library sets on the record, as other formatters and filters may read it.
        message = record.message = record.getMessage()
        asctime = record.asctime = self.formatTime(record, self.datefmt)
        line: dict[str, Any] = {
            "time": asctime,
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": message,
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if not line.get("exception") and record.exc_text:
            line["exception"] = record.exc_text
        skip = self._skip_fields
        for key, value in record.__dict__.items():
            # The library's test: every field a record has of itself is skipped, and so is
            # any name starting with "_"; none of the others is renamed.
            if key not in skip and not (hasattr(key, "startswith") and key.startswith("_")):
                line[key] = value
        data = line.pop("data", None)
        if isinstance(data, dict):
            line.update(data)
        return self.prefix + _ENCODER.encode(line)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """Return the record's time in ISO 8601, UTC, to the millisecond."""
        return _utc_time(record.created)

    def process_log_record(self, log_data: LogData) -> LogData:
        """Lower-case the level and lay the ``data`` fields out at the top level."""
        log_data["level"] = log_data["level"].lower()
        data = log_data.pop("data", None)
        if isinstance(data, dict):
            log_data.update(data)
        return log_data


def _utc_time(seconds: float) -> str:
    """Return a Unix time as a log line writes it: ISO 8601, UTC, to the millisecond."""
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")


def _cut_route_token(match: re.Match[str]) -> str:
    # A function, not the template r"\g<route>[token]": Python 3.11 expands a template in
    # Python for every match, which made a megabyte of routes take 25 ms instead of 14.
    return match.group("route") + "[token]"


def redact_tokens(text: str) -> str:
    """Return ``text`` with every webhook-URL token replaced by ``[token]``, in linear time.

    Cuts what ``re.sub`` with TOKEN_SHAPE would (the same leftmost matches), found from the
    end of each token instead: the characters before a token's second dot are one run of
    token characters, which starts the token if a dot precedes it, and otherwise its first
    "eyJ" does. Each run is looked at once, so a megabyte takes milliseconds whatever it holds.
    """
    if "." not in text and "/" not in text:  # neither a token nor the route: most ids
        return text
    text = _ROUTE.sub(_cut_route_token, text)
    ends = _TOKEN_END.finditer(text)
    first = next(ends, None)
    if first is None:
        return text
    backwards = text[::-1]  # to find where the run before a dot starts, at C speed
    size = len(text)
    parts = []
    done = 0
    for end in (first, *ends):
        dot = end.start()
        run = _TOKEN_CHARS.match(backwards, size - dot)
        assert run is not None  # the pattern matches the empty string too
        run_start = size - run.end()
        if run_start > done and text[run_start - 1] == ".":
            start = run_start - 1
        else:
            found = _TOKEN_START.search(text, max(run_start, done), dot)
            if found is None:
                continue
            start = found.start()
        parts.append(text[done:start])
        parts.append("[token]")
        done = end.end()
    parts.append(text[done:])
    return "".join(parts)


def redact_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """Return ``fields`` with webhook-URL tokens cut out of each text value.

    A line's fields hold what senders sent (a job id, a submission id from a path, a
    reason quoting either): a token pasted there must not reach the log either.
    """
    # The test redact_tokens starts with, made here first: most values are short ids
    # holding neither, and every request line passes its fields through this.
    return {
        key: redact_tokens(value)
        if isinstance(value, str) and ("." in value or "/" in value)
        else value
        for key, value in fields.items()
    }


class RedactTokensFilter(logging.Filter):
    """Cut webhook-URL tokens out of a record's message, its fields and its traceback.

    A per-submission webhook URL carries a signed token: anyone holding it may post to it,
    so it must not reach a log line, whoever logged it (gunicorn quoting a request line, a
    library quoting a URL, an exception's text, a sender's id in the line's fields).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_tokens(message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        data = getattr(record, "data", None)
        if isinstance(data, dict):
            record.data = redact_fields(data)
        if record.exc_info:
            # Formatted once here, so that every handler writes the redacted text.
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        if record.exc_text:
            record.exc_text = redact_tokens(record.exc_text)
        return True


class RequestIdFilter(logging.Filter):
    """Tag every record logged during a request with the request's id."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            state = current()
            if state is not None:
                record.request_id = state.request_id
        return True


def configure_logging(*, level: str, fmt: str, stream: IO[str] | None = None) -> None:
    """Send the root logger's records to ``stream`` (default stderr) as JSON or text.

    Logging that someone else set up (a test runner, an embedding program) is left alone
    unless a ``stream`` is asked for; calling again updates level and format, and the
    stream when one is given.
    """
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    # httpx logs every request's full URL at INFO: a webhook URL's token (`jobhooks trigger`)
    # or a key in NOTIFY_URL's query string. The client's callers log what matters.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    root = logging.getLogger()
    handler = next((h for h in root.handlers if getattr(h, _HANDLER_MARK, False)), None)
    if handler is None:
        if root.handlers and stream is None:
            return
        handler = logging.StreamHandler(stream or sys.stderr)
        setattr(handler, _HANDLER_MARK, True)
        handler.addFilter(RequestIdFilter())
        handler.addFilter(RedactTokensFilter())
        root.addHandler(handler)
    elif stream is not None and isinstance(handler, logging.StreamHandler):
        handler.setStream(stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(_TEXT_FORMAT))
    root.setLevel(level.upper())


class RequestLog:
    """What one request's log line will say: when it started, its id, the fields noted."""

    __slots__ = ("fields", "request_id", "started")

    def __init__(self, started: float, request_id: str) -> None:
        self.started = started
        self.request_id = request_id
        self.fields: dict[str, Any] = {}

    def duration(self) -> float:
        """Return seconds since the request started."""
        return time.perf_counter() - self.started


def current() -> RequestLog | None:
    """Return this request's log, if a request is being handled."""
    if not has_request_context():
        return None
    # Each attribute read through the ``g`` or ``request`` proxy costs 8,000-10,000
    # instructions (werkzeug binds a function per access): every request reads this
    # several times, so the object behind the proxy is fetched once and read directly.
    state: RequestLog | None = g._get_current_object().get(_STATE)
    return state


def note(**fields: Any) -> None:
    """Add fields (delivery id, outcome, error code…) to this request's log line."""
    state = current()
    if state is not None:
        state.fields.update(fields)


def _start_request() -> None:
    started = time.perf_counter()
    req = request._get_current_object()  # type: ignore[attr-defined]  # one proxy lookup
    # What request.headers.get(REQUEST_ID_HEADER) reads, without the headers' key mapping
    # (and the KeyError it raises and catches when the header is absent).
    given = req.environ.get(_REQUEST_ID_ENVIRON)
    request_id = given if given and _REQUEST_ID.fullmatch(given) else secrets.token_hex(16)
    setattr(g._get_current_object(), _STATE, RequestLog(started, request_id))


def _log_request(response: Response) -> Response:
    state: RequestLog | None = g._get_current_object().get(_STATE)
    if state is None:  # a before_request function answered first
        return response
    duration = state.duration()
    response.headers[REQUEST_ID_HEADER] = state.request_id
    status = response.status_code
    req = request._get_current_object()  # type: ignore[attr-defined]  # one proxy lookup
    method = req.method
    # Matched route or not, whatever the method: the route's shape is all the log needs.
    path = redact_tokens(req.path)
    level = logging.INFO
    if status >= 500:
        level = logging.ERROR
    elif status < 400 and path in _QUIET_PATHS:
        level = logging.DEBUG
    if not request_log.isEnabledFor(level):
        return response
    data: dict[str, Any] = {
        "method": method,
        "path": path,
        "status": status,
        "duration_ms": round(duration * 1000, 3),
    }
    data.update(redact_fields(state.fields))  # method, path and the rest are the service's
    delivery = data.get("delivery_id")
    if delivery is None and req.blueprint == "webhooks":
        headers = req.headers
        claimed = headers.get("webhook-id") or headers.get("svix-id")
        if claimed:
            # Not verified (the signature may be what failed), but it is what the sender said:
            # anything, a token pasted in the wrong header too.
            delivery = data["delivery_id"] = redact_tokens(claimed[:100])
    summary = data.get("outcome") or data.get("error") or ""
    message = f"{method} {path} {status} {summary}".rstrip()
    if delivery:
        message += f" delivery={delivery}"
    if _write_line(level, message, data, state.request_id):
        return response
    # makeRecord + handle: what Logger.log does, less looking up the caller's frame.
    record = request_log.makeRecord(
        request_log.name,
        level,
        __file__,
        0,
        message,
        (),
        None,
        extra={"data": data, "request_id": state.request_id},
    )
    request_log.handle(record)
    return response


def _sole_handler() -> logging.StreamHandler[Any] | None:
    """Return the handler ``configure_logging`` installed, when a request line goes there only.

    That is: the request logger has no filter, it and the loggers between it and the root
    have no handler and propagate, and the root has that one handler, writing JSON through
    its two filters. A test runner's capture handler, a text format or any filter
    added since makes this None, and the line takes logging's own way.
    """
    logger: logging.Logger | None = request_log
    if request_log.filters or request_log.disabled:
        return None
    while logger is not None and logger.parent is not None:
        if logger.handlers or not logger.propagate:
            return None
        logger = logger.parent
    root = logging.getLogger()
    if len(root.handlers) != 1:
        return None
    handler = root.handlers[0]
    if (
        type(handler) is not logging.StreamHandler
        or not getattr(handler, _HANDLER_MARK, False)
        or type(handler.formatter) is not JsonFormatter
        or [type(each) for each in handler.filters] != [RequestIdFilter, RedactTokensFilter]
    ):
        return None
    return handler


def _write_line(level: int, message: str, data: dict[str, Any], request_id: str) -> bool:
    """Write a request's line straight to the sole handler; tell whether it was written.

    The line is the one logging would write (``tests/unit/observe/test_logging.py`` compares
    the two): what ``JsonFormatter.format`` makes of the record, its message through
    ``RedactTokensFilter`` (``data`` comes with its fields redacted). Making the record,
    running the handler's filters and looking its fields up again cost 54,000 instructions
    of a PostgreSQL webhook's 1.73 million (``python -m bench.instructions``), and every
    request writes a line.
    """
    handler = _sole_handler()
    if handler is None or level < handler.level:
        return False
    formatter = handler.formatter
    assert isinstance(formatter, JsonFormatter)
    line: dict[str, Any] = {
        "time": _utc_time(time.time()),
        "level": logging.getLevelName(level).lower(),
        "logger": request_log.name,
        "message": redact_tokens(message),
        "request_id": request_id,
    }
    line.update(data)
    text = formatter.prefix + _ENCODER.encode(line) + handler.terminator
    handler.acquire()
    try:
        handler.stream.write(text)
        handler.flush()
    except (OSError, ValueError):  # a gone or closed stream, an encoding: reported, not raised
        handler.handleError(
            request_log.makeRecord(request_log.name, level, __file__, 0, message, (), None)
        )
    finally:
        handler.release()
    return True


def init_app(app: Flask) -> None:
    """Give every request an id (kept from ``X-Request-ID`` or made) and a log line."""
    app.before_request(_start_request)
    app.after_request(_log_request)
