"""An id from outside larger than a key can hold names no row, on both databases.

PostgreSQL's integer keys are 32-bit and it refuses to compare one with a larger number (a
DataError: a 500 or a traceback), where SQLite finds no row. Every surface that takes a row
id from outside (API paths and cursors, admin pages and forms, commands) says "not found"
or "not a cursor" instead, the same on both.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from sqlalchemy.engine import Engine

from receiver.flows.admin_accounts import create_admin
from tests.admin_helpers import EMAIL, PASSWORD, post_form, sign_in
from tests.api_helpers import bearer

HUGE = (2**31, 2**40, 2**63 - 1)
AT = "2026-01-01T00:00:00+00:00"


def cursor(*values: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


@pytest.mark.parametrize("number", HUGE)
def test_api_paths_and_cursors(app: Flask, client: FlaskClient, number: int) -> None:
    headers = bearer(app)
    attempts = client.get(f"/api/v1/notifications/{number}/attempts", headers=headers)
    assert (attempts.status_code, attempts.get_json()["error"]) == (404, "not_found")
    for path, bad in (
        ("/api/v1/submissions", cursor(AT, number)),
        ("/api/v1/notifications", cursor(number)),
    ):
        response = client.get(path, query_string={"cursor": bad}, headers=headers)
        assert (response.status_code, response.get_json()["error"]) == (400, "invalid_cursor")


@pytest.mark.parametrize("number", HUGE)
def test_admin_pages_and_forms(
    app: Flask, client: FlaskClient, engine: Engine, number: int
) -> None:
    create_admin(engine, EMAIL, PASSWORD, now=datetime.now(UTC))
    sign_in(client)
    assert client.get(f"/admin/deliveries/{number}").status_code == 404
    replayed = post_form(client, "/admin/deliveries", "/admin/actions/replay", event_id=number)
    assert replayed.status_code == 302
    assert f"no event {number}" in client.get(replayed.headers["Location"]).text
    retried = post_form(
        client, "/admin/notifications", "/admin/actions/retry-notification", notification_id=number
    )
    assert retried.status_code == 302
    assert "was not retried" in client.get(retried.headers["Location"]).text


@pytest.mark.parametrize("number", HUGE)
def test_commands(runner: FlaskCliRunner, number: int) -> None:
    for args, said in (
        (["events", "show", str(number)], "no event"),
        (["events", "replay", str(number)], f"no event {number}"),
        (["notify", "attempts", str(number)], f"no attempts recorded for notification {number}"),
        (["notify", "retry", str(number)], ""),
    ):
        result = runner.invoke(args=args)
        # Said, not raised: a DataError would be the result's exception, with exit status 1.
        assert result.exception is None or isinstance(result.exception, SystemExit), (
            args,
            result.exception,
        )
        assert said in result.output + result.stderr, (args, result.output, result.stderr)
