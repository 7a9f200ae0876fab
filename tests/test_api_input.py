"""Bad input to the application API gets a clear 4xx in its one error shape, and changes nothing.

On SQLite and PostgreSQL, through ``app.test_client()``. The app's ittybit is
``127.0.0.1:9`` (nothing listens) unless a test points it at the stand-in.
"""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.engine import Engine

from receiver.store.models import IdempotentRequest, Submission, SubmissionMeta
from tests.api_helpers import INPUT, bearer, body

_TABLES = [model.__table__ for model in (Submission, SubmissionMeta, IdempotentRequest)]  # type: ignore[attr-defined]
CREATE = "/api/v1/submissions"
REGISTER = "/api/v1/submissions/sub_new"
REGISTRATION = {"user_id": "user_1", "input_url": INPUT}


@pytest.fixture
def headers(app: Flask) -> dict[str, str]:
    return bearer(app)


def snapshot(engine: Engine) -> list[int]:
    """Return how many rows the tables an API write touches hold."""
    with engine.connect() as conn:
        return [
            conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
            for table in _TABLES
        ]


def problem(response: Any, status: int, code: str) -> dict[str, Any]:
    """Assert the API's error shape, status and code; return the body."""
    payload: dict[str, Any] = response.get_json()
    assert response.status_code == status, (response.status_code, payload)
    assert set(payload) <= {"error", "message", "field"}, payload
    assert payload["error"] == code, payload
    assert isinstance(payload["message"], str) and payload["message"]
    assert "Retry-After" not in response.headers
    return payload


def send(client: FlaskClient, method: str, raw: str, headers: dict[str, str]) -> Any:
    """Send ``raw`` as an application/json body to create (POST) or register (PUT)."""
    path = CREATE if method == "POST" else REGISTER
    return client.open(
        path, method=method, data=raw, content_type="application/json", headers=headers
    )


def test_a_form_or_multipart_body_is_415(
    client: FlaskClient, headers: dict[str, str], engine: Engine
) -> None:
    before = snapshot(engine)
    for method, path, fields in (("POST", CREATE, body()), ("PUT", REGISTER, REGISTRATION)):
        # curl -d: application/x-www-form-urlencoded.
        form = client.open(path, method=method, data=fields, headers=headers)
        problem(form, 415, "unsupported_media_type")
        upload = {**fields, "file": (io.BytesIO(b"video"), "a.mp4")}
        multipart = client.open(path, method=method, data=upload, headers=headers)
        problem(multipart, 415, "unsupported_media_type")
        text = client.open(
            path, method=method, data=json.dumps(fields), content_type="text/plain", headers=headers
        )
        problem(text, 415, "unsupported_media_type")
    assert snapshot(engine) == before


@pytest.mark.parametrize("method", ["POST", "PUT"])
def test_non_finite_numbers_and_repeated_keys_are_400(
    client: FlaskClient, headers: dict[str, str], engine: Engine, method: str
) -> None:
    fields = body() if method == "POST" else REGISTRATION
    before = snapshot(engine)
    start = json.dumps(fields)[:-1]
    for number in ("NaN", "Infinity", "-Infinity", "1e400", "-1e400"):
        for raw in (f'{start}, "metadata": {{"n": {number}}}}}', f'{start}, "x": [{number}]}}'):
            payload = problem(send(client, method, raw, headers), 400, "invalid_json")
            assert number.lstrip("-") in payload["message"], payload
    for raw in (
        f'{start}, "user_id": "user_2"}}',
        f'{start}, "metadata": {{"a": "1", "a": "2"}}}}',
    ):
        payload = problem(send(client, method, raw, headers), 400, "invalid_json")
        assert "duplicate key" in payload["message"]
    assert snapshot(engine) == before


@pytest.mark.parametrize(("method", "required"), [("POST", 3), ("PUT", 2)])
def test_null_empty_and_non_object_bodies_say_what_is_missing(
    client: FlaskClient, headers: dict[str, str], engine: Engine, method: str, required: int
) -> None:
    names = ["submission_id", "user_id", "input_url"][-required:]
    before = snapshot(engine)

    null = problem(send(client, method, "null", headers), 422, "validation_error")
    assert "not valid JSON" not in null["message"]
    assert "null" in null["message"] and "expected an object" in null["message"]
    assert all(name in null["message"] for name in names), null

    for raw in ("{}", ""):
        empty = problem(send(client, method, raw, headers), 422, "validation_error")
        assert all(name in empty["message"] for name in names), empty
        assert empty["field"] == names[0]

    for raw, kind in (('"' + "x" * 300 + '"', "a string"), ("[1]", "an array"), ("7", "a number")):
        payload = problem(send(client, method, raw, headers), 422, "validation_error")
        assert f"is {kind}; expected an object" in payload["message"], payload

    fields = body() if method == "POST" else REGISTRATION
    nested = {**fields, "metadata": "x" * 300}
    payload = problem(send(client, method, json.dumps(nested), headers), 422, "validation_error")
    assert payload == {
        "error": "validation_error",
        "field": "metadata",
        "message": "metadata: expected an object",
    }
    assert snapshot(engine) == before
