"""Real gunicorn, as the Procfile runs it: no log line carries a webhook URL's token."""

from __future__ import annotations

import http.client
import importlib
import json
import logging
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from devtools.processes import WebProcess
from receiver.core.signing import webhook_token
from receiver.observe.logs import JsonFormatter
from tests.helpers import WEBHOOK_SECRET, encode, job_payload

SECRET = "a-gunicorn-log-test-secret-0123456789"
TOKEN = webhook_token([SECRET], submission_id="sub_1", user_id="user_1")
TOKEN_URL = f"/webhooks/ittybit/{TOKEN}"


@pytest.fixture
def server(gunicorn: Callable[..., WebProcess], tmp_path: Path) -> WebProcess:
    """gunicorn with its own access log turned on, as an operator may do."""
    return gunicorn(
        {
            "APP_ENV": "production",
            "DATABASE_URL": f"sqlite:///{tmp_path}/jobhooks.db",
            "SECRET_KEY": SECRET,
            "ITTYBIT_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "WEB_CONCURRENCY": "1",
            "LOG_LEVEL": "info",
            "GUNICORN_CMD_ARGS": "--access-logfile -",
        }
    )


def request(server: WebProcess, method: str, url: str, headers: dict[str, str]) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        body = encode(job_payload()) if method in ("POST", "PUT") else None
        connection.request(method, url, body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def raw_request_line(server: WebProcess, line: str) -> bytes:
    """Send a request line gunicorn itself refuses (and logs), return its answer."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(line.encode() + b"\r\n\r\n")
        return sock.recv(200)


def test_gunicorn_lines_never_carry_the_token(server: WebProcess) -> None:
    json_content = {"Content-Type": "application/json"}
    cases = [
        ("POST", f"{TOKEN_URL}/", 404),
        ("POST", f"{TOKEN_URL}/x", 404),
        ("GET", TOKEN_URL, 405),
        ("PUT", TOKEN_URL, 405),
        ("HEAD", TOKEN_URL, 405),
        ("POST", f"{TOKEN_URL}?attempt=2", 401),
        ("GET", f"/webhooks/ittybit?token={TOKEN}", 405),
    ]
    for method, url, status in cases:
        headers = {**json_content, "Referer": f"https://app.example.com{TOKEN_URL}"}
        assert request(server, method, url, headers) == status, (method, url)
    # Lines gunicorn answers itself (400), quoting the request line in its error log.
    for line in (f"GET {TOKEN_URL}", f"GET /webhooks/ittybit?token={TOKEN}"):
        assert raw_request_line(server, line).startswith(b"HTTP/1.1 400 ")

    server.stop()
    text = server.log_path.read_text(errors="replace")
    assert TOKEN not in text
    assert TOKEN.rsplit(".", 1)[1] not in text
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]

    def by(logger: str) -> list[dict[str, Any]]:
        return [line for line in lines if line["logger"] == logger]

    access = [  # the probes WebProcess made while waiting for it to be ready left out
        line["message"] for line in by("gunicorn.access") if "/readyz" not in line["message"]
    ]
    # gthread workers write each access line after the answer has gone out, so the next
    # request's line may come first: match each case to its line, not by position.
    redacted = {
        f"{TOKEN_URL}/": "/webhooks/ittybit/[token]/",
        f"{TOKEN_URL}/x": "/webhooks/ittybit/[token]/x",
        TOKEN_URL: "/webhooks/ittybit/[token]",
        f"{TOKEN_URL}?attempt=2": "/webhooks/ittybit/[token]?attempt=2",
        f"/webhooks/ittybit?token={TOKEN}": "/webhooks/ittybit?token=[token]",
    }
    assert len(access) == len(cases)
    for method, url, status in cases:
        request_line = f'"{method} {redacted[url]} HTTP/1.1" {status} '
        matching = [message for message in access if request_line in message]
        assert len(matching) == 1, (request_line, access)
        assert '"https://app.example.com/webhooks/ittybit/[token]"' in matching[0]  # the referer

    refused = [
        line["message"] for line in by("gunicorn.error") if "Invalid request" in line["message"]
    ]
    assert refused == [
        "Invalid request from ip=127.0.0.1: Invalid HTTP request line: "
        "'GET /webhooks/ittybit/[token]'",
        "Invalid request from ip=127.0.0.1: Invalid HTTP request line: "
        "'GET /webhooks/ittybit?token=[token]'",
    ]
    app_paths = [line["path"] for line in by("jobhooks.request") if line["status"] != 200]
    assert sorted(app_paths) == sorted(
        [
            "/webhooks/ittybit/[token]/",
            "/webhooks/ittybit/[token]/x",
            "/webhooks/ittybit/[token]",
            "/webhooks/ittybit/[token]",
            "/webhooks/ittybit/[token]",
            "/webhooks/ittybit/[token]",
            "/webhooks/ittybit",
        ]
    )


def test_the_filter_cuts_tokens_out_of_tracebacks_too(monkeypatch: pytest.MonkeyPatch) -> None:
    # config/gunicorn.py checks the environment when it is imported, as gunicorn does.
    monkeypatch.setenv("APP_ENV", "test")
    monkeypatch.setenv("SECRET_KEY", SECRET)
    gunicorn_config = importlib.import_module("config.gunicorn")
    try:
        raise ValueError(f"cannot route https://h.example{TOKEN_URL}?a=b")
    except ValueError:
        record = logging.LogRecord(
            "gunicorn.error",
            logging.ERROR,
            __file__,
            1,
            "Error handling request %s",
            (f"{TOKEN_URL}?a=b",),
            sys.exc_info(),
        )
    # The filter RedactingLogger.setup() puts on gunicorn's error and access logs.
    assert gunicorn_config._REDACT.filter(record)
    for formatter in (logging.Formatter("%(message)s"), JsonFormatter()):
        text = formatter.format(record)
        assert TOKEN not in text
        assert "ValueError: cannot route https://h.example/webhooks/ittybit/[token]?a=b" in text
        assert "Error handling request /webhooks/ittybit/[token]?a=b" in text
