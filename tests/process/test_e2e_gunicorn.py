"""End to end: the Procfile's processes, real gunicorn on a free port, webhooks over HTTP."""

from __future__ import annotations

import http.client
import json
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from devtools.processes import ROOT, WebProcess, jobhooks_command
from receiver.store.models import Submission, WebhookEvent
from tests.helpers import WEBHOOK_SECRET, encode, job_payload, signed_headers

SECRET = "an-e2e-production-secret-0123456789"

pytestmark = pytest.mark.slow

Start = Callable[..., WebProcess]


@pytest.fixture
def server(gunicorn: Start, database_url: str) -> WebProcess:
    """The Procfile's release then web process, in production mode, on a migrated database."""
    return gunicorn(
        {
            "APP_ENV": "production",
            "DATABASE_URL": database_url,
            "SECRET_KEY": SECRET,
            "ITTYBIT_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "MAX_BODY_BYTES": "65536",
            "WEB_CONCURRENCY": "2",
            "LOG_LEVEL": "info",
        }
    )


def jobhooks(server: WebProcess, *args: str) -> str:
    result = subprocess.run(
        jobhooks_command(*args),
        cwd=ROOT,
        env=server.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def stored(database_url: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    engine: Engine = sa.create_engine(database_url)
    submissions = Submission.__table__  # type: ignore[attr-defined]
    events = WebhookEvent.__table__  # type: ignore[attr-defined]
    try:
        with engine.connect() as conn:
            row = conn.execute(sa.select(submissions)).one()
            inbox = conn.execute(sa.select(events).order_by(events.c.id)).all()
    finally:
        engine.dispose()
    return dict(row._mapping), [dict(event._mapping) for event in inbox]


def test_signed_webhook_over_http_updates_the_submission(
    server: WebProcess, database_url: str
) -> None:
    added = json.loads(
        jobhooks(
            server,
            "submissions",
            "add",
            "sub_1",
            "--user-id",
            "user_1",
            "--input",
            "https://uploads.example.com/sub_1.mp4",
        )
    )
    assert added["submission_id"] == "sub_1"
    url = jobhooks(server, "webhook-url", "sub_1").strip()
    assert url.startswith(f"{server.url}/webhooks/ittybit/")
    body = encode(job_payload())
    headers = signed_headers(body, msg_id="msg_e2e")

    status, answer = post(url, body, headers)
    assert (status, answer) == (
        200,
        {"outcome": "applied", "submission_id": "sub_1", "status": "succeeded"},
    )
    status, again = post(url, body, headers)
    assert (status, again["outcome"]) == (200, "duplicate")

    row, inbox = stored(database_url)
    assert (row["status"], row["job_id"]) == ("succeeded", "job_abc123")
    assert row["output_url"] == "https://cdn.example.com/job_abc123.mp4"
    assert [(event["dedupe_key"], event["outcome"]) for event in inbox] == [
        ("wh:msg_e2e", "applied")
    ]

    shown = json.loads(jobhooks(server, "submissions", "show", "sub_1"))
    assert shown["output_url"] == "https://cdn.example.com/job_abc123.mp4"

    with urllib.request.urlopen(f"{server.url}/readyz", timeout=5) as response:
        assert json.loads(response.read())["status"] == "ready"

    # Nothing secret reaches the logs: not the URL's token, not the signature.
    server.stop()
    logs = server.log_path.read_text(errors="replace")
    token = url.rsplit("/", 1)[1]
    assert "POST /webhooks/ittybit/" in logs, logs
    assert token not in logs
    assert token.split(".")[-1] not in logs
    assert headers["webhook-signature"].removeprefix("v1,") not in logs
    assert SECRET not in logs


def test_oversized_chunked_body_is_refused_over_http(server: WebProcess, database_url: str) -> None:
    body = encode(job_payload(padding="x" * 70_000))
    headers = signed_headers(body)
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        connection.request(
            "POST",
            "/webhooks/ittybit",
            body=iter([body[:30_000], body[30_000:]]),
            headers=headers,
            encode_chunked=True,
        )
        response = connection.getresponse()
        answer = json.loads(response.read())
    finally:
        connection.close()
    assert response.status == 413
    assert answer["error"] == "payload_too_large"
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            events = WebhookEvent.__table__  # type: ignore[attr-defined]
            assert conn.execute(sa.select(sa.func.count()).select_from(events)).scalar_one() == 0
    finally:
        engine.dispose()
