"""Structured logs: one JSON line per request with the delivery's fields, request ids kept
or made, and nothing secret in any line."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import given, settings
from hypothesis import strategies as st
from pytest_httpserver import HTTPServer
from pythonjsonlogger.json import JsonFormatter as _LibraryJsonFormatter
from sqlalchemy.engine import Engine
from sqlmodel import Session

from config.settings import ConfigError, Settings
from receiver.core.signing import TOKEN_SHAPE, webhook_token
from receiver.flows.records import create_submission
from receiver.ittybit.client import IttybitClient, RetryPolicy
from receiver.observe import logs
from receiver.observe.logs import JsonFormatter, RequestIdFilter, configure_logging, redact_tokens
from reconcile.passes import PassOptions, Reconciler
from tests.helpers import (
    OTHER_WEBHOOK_KEY,
    SECRET_KEY,
    encode,
    job_payload,
    quiet_outbox,
    signed_headers,
    token_url,
)
from tests.reconcile_helpers import FakeIttybit, add_submissions

Lines = Callable[[], list[dict[str, Any]]]
HEX_ID = re.compile(r"[0-9a-f]{32}")
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


@pytest.fixture
def log_lines() -> Iterator[Lines]:
    """Capture every record as the production handler writes it; return the parsed lines."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)

    def lines() -> list[dict[str, Any]]:
        return [json.loads(line) for line in stream.getvalue().splitlines()]

    try:
        yield lines
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def request_lines(lines: Lines) -> list[dict[str, Any]]:
    return [line for line in lines() if line["logger"] == "jobhooks.request"]


@pytest.fixture
def sub_1(engine: Engine) -> None:
    with Session(engine) as session:
        create_submission(
            session,
            submission_id="sub_1",
            user_id="user_1",
            input_url="https://uploads.example.com/sub_1.mp4",
        )


def test_a_delivery_logs_one_line_with_its_fields(
    client: FlaskClient, sub_1: None, log_lines: Lines
) -> None:
    body = encode(job_payload())
    headers = {**signed_headers(body, msg_id="msg_42"), "X-Request-ID": "req-abc.123"}
    response = client.post(token_url(), data=body, headers=headers)

    assert response.status_code == 200
    assert response.headers["X-Request-ID"] == "req-abc.123"
    [line] = request_lines(log_lines)
    assert line["level"] == "info"
    assert line["request_id"] == "req-abc.123"
    assert line["method"] == "POST"
    assert line["path"] == "/webhooks/ittybit/[token]"
    assert line["status"] == 200
    assert line["outcome"] == "applied"
    assert line["delivery_id"] == "msg_42"
    assert line["job_id"] == "job_abc123"
    assert line["submission_id"] == "sub_1"
    assert isinstance(line["duration_ms"], float)
    assert line["duration_ms"] > 0
    assert line["message"] == "POST /webhooks/ittybit/[token] 200 applied delivery=msg_42"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", line["time"])


def test_unmatched_and_rejected_deliveries_say_why(
    client: FlaskClient, sub_1: None, log_lines: Lines
) -> None:
    unmatched = encode(job_payload("job_9", submission_id="sub_9"))
    rejected = encode(job_payload(user_id="intruder"))
    first = client.post("/webhooks/ittybit", data=unmatched, headers=signed_headers(unmatched))
    second = client.post(
        "/webhooks/ittybit", data=rejected, headers=signed_headers(rejected, msg_id="msg_2")
    )

    assert (first.status_code, second.status_code) == (202, 403)
    one, two = request_lines(log_lines)
    assert (one["outcome"], one["submission_id"], one["job_id"]) == ("unmatched", "sub_9", "job_9")
    assert one["reason"] == "no submission matches the job yet"
    assert (two["outcome"], two["error"], two["status"]) == ("rejected", "rejected", 403)
    assert two["reason"] == "metadata user_id does not match the submission's owner"


def test_a_refused_delivery_logs_the_reason_and_nothing_secret(
    client: FlaskClient, sub_1: None, log_lines: Lines
) -> None:
    url = token_url()
    token = url.rsplit("/", 1)[1]
    body = encode(job_payload(note="private-body-text"))
    bad = signed_headers(body, key=OTHER_WEBHOOK_KEY, msg_id="msg_forged")
    good = signed_headers(body)

    assert client.post(url, data=body, headers=bad).status_code == 401
    assert client.post(url + "x", data=body, headers=good).status_code == 401
    assert client.post(url, data=b"{", headers=signed_headers(b"{")).status_code == 400

    forged, tampered, broken = request_lines(log_lines)
    assert (forged["status"], forged["error"]) == (401, "bad_signature")
    # Not verified, but it is what the sender claimed: worth having to trace a forgery.
    assert forged["delivery_id"] == "msg_forged"
    assert tampered["error"] == "bad_token"
    assert (broken["status"], broken["error"]) == (400, "invalid_json")
    assert "outcome" not in forged
    text = json.dumps(log_lines())
    for secret in (
        token,
        token.rsplit(".", 1)[-1],
        bad["webhook-signature"].removeprefix("v1,"),
        good["webhook-signature"].removeprefix("v1,"),
        SECRET_KEY,
        "private-body-text",
    ):
        assert secret not in text


@pytest.mark.parametrize(
    "given",
    [None, "", "has space", "x" * 129, "<script>", "id\u00e9", "-leading-dash"],
)
def test_an_unusable_request_id_is_replaced(
    client: FlaskClient, log_lines: Lines, given: str | None
) -> None:
    headers = {} if given is None else {"X-Request-ID": given}
    response = client.get("/healthz", headers=headers)
    made = response.headers["X-Request-ID"]
    assert HEX_ID.fullmatch(made)
    [line] = request_lines(log_lines)
    assert line["request_id"] == made
    assert client.get("/healthz", headers=headers).headers["X-Request-ID"] != made


def test_request_id_is_echoed_on_errors_too(client: FlaskClient, log_lines: Lines) -> None:
    response = client.get("/nowhere", headers={"X-Request-ID": "trace-7"})
    assert response.status_code == 404
    assert response.headers["X-Request-ID"] == "trace-7"
    [line] = request_lines(log_lines)
    assert (line["status"], line["error"], line["level"]) == (404, "not_found", "info")


def test_every_record_logged_during_a_request_carries_its_id(app: Flask, log_lines: Lines) -> None:
    def noisy() -> str:
        logging.getLogger("receiver.test").warning("something odd")
        return "ok"

    app.add_url_rule("/noisy", view_func=noisy)
    app.test_client().get("/noisy", headers={"X-Request-ID": "trace-8"})
    warning = next(line for line in log_lines() if line["logger"] == "receiver.test")
    assert warning["request_id"] == "trace-8"
    assert warning["level"] == "warning"
    outside = logging.LogRecord("x", logging.INFO, __file__, 1, "outside", None, None)
    assert RequestIdFilter().filter(outside)
    assert not hasattr(outside, "request_id")


def test_an_unexpected_error_is_logged_with_its_traceback_as_one_line(
    app: Flask, log_lines: Lines
) -> None:
    def broken() -> str:
        raise RuntimeError("boom")

    app.add_url_rule("/broken", view_func=broken)
    response = app.test_client().get("/broken", headers={"X-Request-ID": "trace-9"})
    assert response.status_code == 500
    assert response.headers["X-Request-ID"] == "trace-9"
    error = next(line for line in log_lines() if line["logger"] == "receiver.web.errors")
    assert error["request_id"] == "trace-9"
    assert "RuntimeError: boom" in error["exception"]
    [line] = request_lines(log_lines)
    assert (line["level"], line["status"], line["error"]) == ("error", 500, "internal_error")


def test_probes_log_at_debug(client: FlaskClient, log_lines: Lines) -> None:
    client.get("/healthz")
    client.get("/metrics")
    assert [line["level"] for line in request_lines(log_lines)] == ["debug", "debug"]


def test_formatter_writes_one_json_line_per_record() -> None:
    formatter = JsonFormatter()
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        record = logging.LogRecord(
            "jobhooks.x", logging.ERROR, __file__, 1, "two\nlines %s", ("\u2603",), sys.exc_info()
        )
    record.data = {"job_id": "job_1", "count": 3}
    text = formatter.format(record)
    assert "\n" not in text
    entry = json.loads(text)
    assert entry["message"] == "two\nlines \u2603"
    assert (entry["job_id"], entry["count"], entry["level"]) == ("job_1", 3, "error")
    assert "ValueError: bad" in entry["exception"]


def test_formatter_writes_values_json_lacks_as_text() -> None:
    record = logging.LogRecord("jobhooks.x", logging.INFO, __file__, 1, "odd values", None, None)
    record.data = {"at": datetime(2026, 11, 28, 12, 0, tzinfo=UTC), "where": Path("/srv/x")}
    record.request_id = "req-1"
    entry = json.loads(JsonFormatter().format(record))
    assert (entry["at"], entry["where"]) == ("2026-11-28T12:00:00+00:00", "/srv/x")
    assert list(entry)[:4] == ["time", "level", "logger", "message"]
    assert (entry["request_id"], "data" in entry, "exception" in entry) == ("req-1", False, False)


def _records() -> Iterator[logging.LogRecord]:
    """Records of every kind the formatter meets, made afresh for each formatter."""

    def record(msg: Any, args: Any = (), **fields: Any) -> logging.LogRecord:
        made = logging.LogRecord("jobhooks.x", logging.WARNING, __file__, 7, msg, args, None)
        made.__dict__.update(fields)
        return made

    yield record("plain %s and %d", ("\u2603", 3))
    yield record("with data", data={"at": NOW, "where": Path("/x"), "n": 1.5, "none": None})
    yield record("data names a field", data={"message": "replaced", "level": "LOUD", "z": 1})
    yield record("data is no dict", data=["kept", "out"])
    yield record("ids", request_id="req-1", _private="never", other={"nested": [1, 2]})
    yield record("exception text only", exc_text="Traceback (most recent call last):\n  boom")
    yield record({"a": "dict", "logged": 1})
    yield record("a stack", stack_info="Stack (most recent call last):\n  here")
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        yield record("an exception", exc_info=sys.exc_info(), request_id="req-2")
    yield record("empty exc_info", exc_info=(None, None, None), exc_text="kept")


def test_formatter_writes_what_the_librarys_format_writes() -> None:
    library = _LibraryJsonFormatter.format
    for ours_record, theirs_record in zip(_records(), _records(), strict=True):
        theirs_record.created = ours_record.created
        formatter = JsonFormatter()
        assert formatter.format(ours_record) == library(formatter, theirs_record)
        assert (ours_record.message, ours_record.asctime) == (
            theirs_record.message, theirs_record.asctime
        )  # fmt: skip


def ours(root: logging.Logger) -> list[logging.Handler]:
    # The test runner adds capture handlers of its own around each test.
    return [handler for handler in root.handlers if getattr(handler, "_jobhooks_handler", False)]


@pytest.fixture
def bare_root() -> Iterator[logging.Logger]:
    """The root logger with no handler of ours, as in a freshly started process."""
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    root.handlers = []
    try:
        yield root
    finally:
        root.handlers = saved
        root.setLevel(level)


def test_configure_logging_installs_one_handler_and_updates_it(bare_root: logging.Logger) -> None:
    stream = io.StringIO()
    configure_logging(level="warning", fmt="text", stream=stream)
    logging.getLogger("jobhooks.x").warning("plain")
    configure_logging(level="info", fmt="json")
    logging.getLogger("jobhooks.x").info("structured")
    assert len(ours(bare_root)) == 1
    first, second = stream.getvalue().splitlines()
    assert first.endswith("WARNING jobhooks.x: plain")
    assert json.loads(second)["message"] == "structured"


def test_configure_logging_leaves_logging_set_up_by_others_alone(
    bare_root: logging.Logger,
) -> None:
    bare_root.addHandler(logging.NullHandler())
    configure_logging(level="debug", fmt="json")
    assert ours(bare_root) == []


def test_log_settings_are_checked() -> None:
    base = {"APP_ENV": "test", "SECRET_KEY": SECRET_KEY}
    assert Settings.from_env({**base, "LOG_LEVEL": "WARNING"}).log_level == "warning"
    assert Settings.from_env(base).log_format == "json"
    for name, value in (("LOG_LEVEL", "verbose"), ("LOG_FORMAT", "xml")):
        with pytest.raises(ConfigError, match=f"^{name}: "):
            Settings.from_env({**base, name: value})


def test_each_reconciled_job_gets_a_line_and_each_pass_a_summary(
    engine: Engine, api_server: HTTPServer, log_lines: Lines
) -> None:
    fake = FakeIttybit(api_server)
    add_submissions(
        engine, [1, 2, 3], changed_at=NOW - timedelta(hours=1), provider_status="queued"
    )
    fake.job("job_1", "succeeded")
    fake.job("job_2", "queued")
    client = IttybitClient(
        base_url=fake.url, api_key="secret-api-key-0123", retry=RetryPolicy(attempts=1)
    )
    with client:
        summary = Reconciler(
            engine, client, PassOptions(), outbox=quiet_outbox(), clock=lambda: NOW
        ).run_pass()
    assert (summary.updated, summary.unchanged, summary.failed) == (1, 1, 1)

    lines = [line for line in log_lines() if line["logger"] == "reconcile.passes"]
    jobs = sorted((line for line in lines if "result" in line), key=lambda line: line["job_id"])
    assert [(line["submission_id"], line["job_id"], line["result"]) for line in jobs] == [
        ("sub_1", "job_1", "updated"),
        ("sub_2", "job_2", "unchanged"),
        ("sub_3", "job_3", "failed"),  # ittybit has no such job
    ]
    assert all(line["level"] == "info" and line["dry_run"] is False for line in jobs)
    [done] = [line for line in lines if line.get("event") == "reconcile_pass"]
    assert (done["checked"], done["updated"], done["failed"]) == (3, 1, 1)
    assert done["seconds"] >= 0
    assert "secret-api-key-0123" not in json.dumps(lines)


# --- the webhook token never reaches a log line -------------------------------------------

TOKEN = webhook_token([SECRET_KEY], submission_id="sub_1", user_id="user_1")
TOKEN_URL = f"/webhooks/ittybit/{TOKEN}"
SIGNATURE = TOKEN.rsplit(".", 1)[1]
ENCODED = TOKEN.replace(".", "%2E")


@pytest.mark.parametrize(
    ("method", "url", "status", "logged_path"),
    [
        ("POST", f"{TOKEN_URL}/", 404, "/webhooks/ittybit/[token]/"),
        ("POST", f"{TOKEN_URL}/x", 404, "/webhooks/ittybit/[token]/x"),
        ("GET", TOKEN_URL, 405, "/webhooks/ittybit/[token]"),
        ("PUT", TOKEN_URL, 405, "/webhooks/ittybit/[token]"),
        ("HEAD", TOKEN_URL, 405, "/webhooks/ittybit/[token]"),
        ("DELETE", TOKEN_URL, 405, "/webhooks/ittybit/[token]"),
        ("POST", f"{TOKEN_URL}?from=ittybit&token={TOKEN}", 401, "/webhooks/ittybit/[token]"),
        ("POST", f"/WEBHOOKS/Ittybit/{TOKEN}", 404, "/WEBHOOKS/Ittybit/[token]"),
        ("POST", f"/webhook/ittybit/{TOKEN}", 404, "/webhook/ittybit/[token]"),
        ("POST", f"/hooks/{TOKEN}x", 404, "/hooks/[token]x"),
    ],
)
def test_no_request_line_carries_the_token(
    client: FlaskClient, log_lines: Lines, method: str, url: str, status: int, logged_path: str
) -> None:
    body = encode(job_payload())
    response = client.open(
        url, method=method, data=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == status
    [line] = request_lines(log_lines)
    assert line["path"] == logged_path
    assert line["message"].startswith(f"{method} {logged_path} {status} ")
    text = json.dumps(log_lines())
    assert TOKEN not in text
    assert SIGNATURE not in text


def test_query_strings_are_not_logged(client: FlaskClient, log_lines: Lines) -> None:
    response = client.post(f"/webhooks/ittybit?token={TOKEN}", data=b"{}")
    assert response.status_code == 415
    [line] = request_lines(log_lines)
    assert (line["path"], line["message"]) == (
        "/webhooks/ittybit",
        "POST /webhooks/ittybit 415 unsupported_media_type",
    )
    assert SIGNATURE not in json.dumps(log_lines())


def test_redact_tokens_cuts_every_token_out() -> None:
    # A long id makes itsdangerous compress the payload: such a token starts with a dot.
    compressed = webhook_token([SECRET_KEY], submission_id="s" * 300, user_id="u" * 300)
    assert compressed.startswith(".")
    cases = {
        f"GET {TOKEN_URL} HTTP/1.1": "GET /webhooks/ittybit/[token] HTTP/1.1",
        f"'GET /webhooks/ittybit?token={TOKEN}'": "'GET /webhooks/ittybit?token=[token]'",
        f'"https://h.example//webhooks//ittybit//{TOKEN}"': '"https://h.example//webhooks//ittybit//[token]"',
        f"/x?u={TOKEN}tampered&y=1": "/x?u=[token]tampered&y=1",
        f"/webhooks/ittybit/{TOKEN[:20]}": "/webhooks/ittybit/[token]",
        f"/any/{compressed}": "/any/[token]",
        f"/webhooks/ittybit/{TOKEN}%2Fx": "/webhooks/ittybit/[token]",
        # As a raw request line has it: percent-encoded, so not token-shaped.
        f"/WEBHOOKS/Ittybit/{ENCODED}": "/WEBHOOKS/Ittybit/[token]",
        f"//webhooks//ittybit//{ENCODED}": "//webhooks//ittybit//[token]",
    }
    for text, expected in cases.items():
        assert redact_tokens(text) == expected
    for plain in ("/webhooks/ittybit", "/healthz", "receiver.web.errors: unhandled error", ""):
        assert redact_tokens(plain) == plain


@settings(max_examples=50, deadline=None)
@given(submission_id=st.text(min_size=1, max_size=200), user_id=st.text(max_size=200))
def test_every_token_has_the_shape_logs_cut_out(submission_id: str, user_id: str) -> None:
    token = webhook_token([SECRET_KEY], submission_id=submission_id, user_id=user_id)
    assert re.fullmatch(TOKEN_SHAPE, token)
    assert token.rsplit(".", 1)[1] not in redact_tokens(f"/somewhere?t={token}")


#: The search as it stood before it was made linear: leftmost, greedy, backtracking.
_BACKTRACKING = re.compile(
    r"(?P<route>/webhooks/+ittybit/+)[^\s/?#&\"']+|(?:eyJ|\.)[A-Za-z0-9_-]*\.[A-Za-z0-9_-]{27}",
    re.IGNORECASE,
)


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(
    parts=st.lists(
        st.sampled_from(
            [
                *("eyJ", "EYj", ".", "a", "Z", "_", "-", "/", "?", " ", "=", "a" * 27),
                *("." + "b" * 27, "/webhooks/ittybit/", "/webhooks//ittybit/"),
            ]
        ),
        max_size=30,
    )
)
def test_linear_redaction_cuts_what_the_backtracking_pattern_cut(parts: list[str]) -> None:
    text = "".join(parts)
    expected = _BACKTRACKING.sub(lambda m: (m.group("route") or "") + "[token]", text)
    assert redact_tokens(text) == expected


@pytest.fixture
def own_logging() -> Iterator[io.StringIO]:
    """Install the production root handler on a stream; put the root logger back after."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    for handler in saved[0]:
        root.removeHandler(handler)
    stream = io.StringIO()
    configure_logging(level="info", fmt="json", stream=stream)
    try:
        yield stream
    finally:
        for handler in root.handlers[:]:
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])


def test_the_root_handler_cuts_tokens_whoever_logs_them(own_logging: io.StringIO) -> None:
    token = webhook_token([SECRET_KEY], submission_id="sub_1", user_id="user_1")
    logging.getLogger("some.library").warning("posting to https://h.example/x?t=%s", token)
    try:
        raise ValueError(f"bad url /webhooks/ittybit/{token}")
    except ValueError:
        logging.getLogger("some.library").exception("failed")
    text = own_logging.getvalue()
    assert token.rsplit(".", 1)[1] not in text
    assert "posting to https://h.example/x?t=[token]" in text
    assert "ValueError: bad url /webhooks/ittybit/[token]" in text


_ANOTHER_TOKEN = webhook_token([SECRET_KEY], submission_id="sub_2", user_id="user_2")


def _requests_and_lines(
    client: FlaskClient, stream: io.StringIO, status: str
) -> list[dict[str, Any]]:
    """Make requests of every kind a request line tells of; return their lines, parsed.

    The delivery moves sub_1 to ``status``, then comes again: applied, then duplicate.
    """
    body = encode(job_payload(status=status))
    headers = {**signed_headers(body, msg_id=f"msg_{status}"), "X-Request-ID": "req-1"}
    client.post(token_url(), data=body, headers=headers)
    client.post(token_url(), data=body, headers={**headers, "X-Request-ID": "req-2"})
    token = _ANOTHER_TOKEN
    client.post(
        "/webhooks/ittybit", data=b"{}", headers={"X-Request-ID": "req-3", "webhook-id": token}
    )
    client.get(
        f"/webhooks/ittybit/{token}/x",
        headers={"X-Request-ID": "req-4"},
    )
    client.get("/healthz", headers={"X-Request-ID": "req-5"})
    text = stream.getvalue().replace(status, "STATUS")
    stream.truncate(0)
    stream.seek(0)
    lines = [json.loads(line) for line in text.splitlines()]
    return [line for line in lines if line["logger"] == "jobhooks.request"]


def test_a_request_line_written_directly_is_the_line_logging_writes(
    client: FlaskClient, sub_1: None, own_logging: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = logging.getLogger()
    with monkeypatch.context() as patched:
        # With the production handler alone (the test runner's own are set aside), no record
        # is made: the line is written directly.
        patched.setattr(root, "handlers", ours(root))
        patched.setattr(logs.request_log, "makeRecord", _no_record)
        direct = _requests_and_lines(client, own_logging, "processing")
    # Beside the test runner's handlers: logging's own way.
    through_logging = _requests_and_lines(client, own_logging, "succeeded")

    assert len(direct) == len(through_logging) == 4  # the probe's line is DEBUG: not written
    for ours_line, logged in zip(direct, through_logging, strict=True):
        assert list(ours_line) == list(logged)
        for varies in ("time", "duration_ms"):
            assert type(ours_line.pop(varies)) is type(logged.pop(varies))
        assert ours_line == logged
    assert [line["outcome"] for line in direct[:2]] == ["applied", "duplicate"]
    assert (
        direct[2]["message"] == "POST /webhooks/ittybit 415 unsupported_media_type delivery=[token]"
    )
    assert direct[3]["path"] == "/webhooks/ittybit/[token]/x"
    assert _ANOTHER_TOKEN.rsplit(".", 1)[1] not in json.dumps(direct)


def test_a_request_line_written_directly_cuts_tokens_from_its_message(
    own_logging: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", ours(root))
    message = f"GET /somewhere?t={_ANOTHER_TOKEN} 200"

    assert logs._write_line(logging.INFO, message, {"status": 200}, "req-1")

    line = json.loads(own_logging.getvalue())
    assert (line["message"], line["status"]) == ("GET /somewhere?t=[token] 200", 200)


def test_a_request_lines_fields_carry_no_token_whoever_sent_it(
    client: FlaskClient, own_logging: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A token pasted into a job id or an API path reaches the line's fields cut out."""
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", ours(root))
    body = encode(job_payload(job_id=_ANOTHER_TOKEN))
    assert client.post("/webhooks/ittybit", data=body, headers=signed_headers(body)).status_code
    assert client.post(f"/api/v1/submissions/{_ANOTHER_TOKEN}/reconcile").status_code == 401

    text = own_logging.getvalue()
    assert _ANOTHER_TOKEN.rsplit(".", 1)[1] not in text
    assert '"job_id": "[token]"' in text


def test_a_records_fields_carry_no_token_whoever_logs_them(own_logging: io.StringIO) -> None:
    logging.getLogger("some.flow").warning("odd job", extra={"data": {"job_id": _ANOTHER_TOKEN}})
    line = json.loads(own_logging.getvalue())
    assert line["job_id"] == "[token]"


def test_a_second_handler_gets_every_request_line_too(
    client: FlaskClient, own_logging: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = logging.getLogger()
    elsewhere = io.StringIO()
    monkeypatch.setattr(root, "handlers", [*ours(root), logging.StreamHandler(elsewhere)])

    client.get("/api/v1/nothing-here")

    assert "GET /api/v1/nothing-here 404" in own_logging.getvalue()
    assert "GET /api/v1/nothing-here 404" in elsewhere.getvalue()


def _no_record(*_: Any, **__: Any) -> logging.LogRecord:
    raise AssertionError("a record was made")


def test_a_request_line_that_cannot_be_written_is_reported_not_raised(
    client: FlaskClient,
    own_logging: io.StringIO,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = logging.getLogger()
    [handler] = ours(root)
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(_Broken())
    monkeypatch.setattr(root, "handlers", [handler])

    response = client.get("/api/v1/nothing-here")

    assert response.status_code == 404
    assert "--- Logging error ---" in capsys.readouterr().err


class _Broken(io.StringIO):
    def write(self, text: str) -> int:
        raise OSError("the log drain is gone")


def test_httpx_request_lines_carry_no_token_or_query_key(
    own_logging: io.StringIO, httpserver: HTTPServer
) -> None:
    import httpx

    token = webhook_token([SECRET_KEY], submission_id="sub_1", user_id="user_1")
    httpserver.expect_request(f"/webhooks/ittybit/{token}").respond_with_data("ok")
    httpserver.expect_request("/in").respond_with_data("ok")
    httpx.post(httpserver.url_for(f"/webhooks/ittybit/{token}"), content=b"{}")
    httpx.post(httpserver.url_for("/in") + "?key=notify-query-key-9", content=b"{}")
    # The stand-in server's own request lines (werkzeug) are the test's, not the service's.
    lines = [json.loads(line) for line in own_logging.getvalue().splitlines()]
    ours = json.dumps([line for line in lines if line["logger"] != "werkzeug"])
    assert token.rsplit(".", 1)[1] not in ours
    assert "notify-query-key-9" not in ours


def test_database_errors_never_quote_parameters(engine: Engine) -> None:
    import sqlalchemy as sa

    with pytest.raises(sa.exc.DBAPIError) as caught, engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO no_such_table VALUES (:v)"), {"v": "secret-param-9"})
    assert "secret-param-9" not in str(caught.value)
    assert "parameters hidden" in str(caught.value)
