"""Bad input to the application API gets a clear 4xx in its one error shape, and changes nothing.

On SQLite and PostgreSQL, through ``app.test_client()``. The app's ittybit is
``127.0.0.1:9`` (nothing listens) unless a test points it at the stand-in.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.engine import Engine
from sqlmodel import Session

from devtools.standin import Standin, StandinConfig
from receiver.flows.admin_accounts import create_admin
from receiver.flows.history import parse_since
from receiver.flows.records import InvalidSubmission, create_submission, import_submissions
from receiver.store.models import IdempotentRequest, Submission, SubmissionMeta, utcnow
from tests.admin_helpers import EMAIL, PASSWORD, add_submission, sign_in
from tests.api_helpers import INPUT, bearer, body, use_standin

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
        raws = [f'{start}, "metadata": {{"n": {number}}}}}', f'{start}, "x": [{number}]}}']
        if method == "POST":  # options are stored and sent to ittybit as they are
            raws.insert(0, f'{start}, "options": {{"crop": {{"top": {number}}}}}}}')
        for raw in raws:
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


def cursor(*values: Any) -> str:
    raw = json.dumps(values).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def test_out_of_range_cursors_times_and_limits_are_400(
    client: FlaskClient, headers: dict[str, str]
) -> None:
    moment = "2026-01-01T00:00:00+00:00"
    for path, bad in (
        ("/api/v1/submissions", cursor(moment, 2**70)),
        ("/api/v1/submissions", cursor(moment, -1)),
        ("/api/v1/submissions", cursor("9999-12-31T23:59:59-23:00", 1)),
        ("/api/v1/submissions", cursor("0001-01-01T00:00:00+05:00", 1)),
        ("/api/v1/notifications", cursor(2**70)),
        ("/api/v1/notifications", cursor(2**63)),
    ):
        response = client.get(path, query_string={"cursor": bad}, headers=headers)
        assert problem(response, 400, "invalid_cursor")["field"] == "cursor"
    for after in ("9999-12-31T23:59:59-23:00", "0001-01-01T00:00:00+05:00"):
        response = client.get(CREATE, query_string={"updated_after": after}, headers=headers)
        assert problem(response, 400, "invalid_parameter")["field"] == "updated_after"
    for path in ("/api/v1/submissions", "/api/v1/notifications"):
        for limit in ("9" * 30, "-1", "-" + "9" * 30, "0", "ten", "1.5", ""):
            response = client.get(path, query_string={"limit": limit}, headers=headers)
            assert problem(response, 400, "invalid_parameter")["field"] == "limit", limit
        assert client.get(path, query_string={"limit": "500"}, headers=headers).status_code == 200
    # The admin's and the CLI's --since: a duration or a time too far off is a plain error.
    now = datetime(2026, 1, 1, tzinfo=UTC)
    for since in ("99999999999d", "9" * 30 + "s", "0001-01-01T00:00:00+05:00"):
        with pytest.raises(ValueError, match="further from now than a date can be"):
            parse_since(since, now=now)


def test_a_url_urlsplit_cannot_read_is_422(
    client: FlaskClient, headers: dict[str, str], engine: Engine
) -> None:
    before = snapshot(engine)
    for url in ("http://[x", "https://[::1/a.mp4", "http://]x["):
        create = client.post(CREATE, json=body(input_url=url), headers=headers)
        assert problem(create, 422, "validation_error")["field"] == "input_url"
        register = client.put(REGISTER, json={**REGISTRATION, "input_url": url}, headers=headers)
        assert problem(register, 422, "validation_error")["field"] == "input_url"
    assert snapshot(engine) == before


BAD_IDS = ["a/b c?d", "a b", "x?y", "a#b", "%2F", "sub_\u00fc", "a\nb", "a" * 201]


def test_an_id_the_api_cannot_serve_back_is_refused_everywhere(
    client: FlaskClient, headers: dict[str, str], engine: Engine, runner: Any, tmp_path: Path
) -> None:
    before = snapshot(engine)
    for bad in BAD_IDS:
        payload = problem(
            client.post(CREATE, json=body(bad), headers=headers), 422, "validation_error"
        )
        assert payload["field"] == "submission_id"
        assert "[A-Za-z0-9._:-]" in payload["message"] and "200" in payload["message"]
    for path_id in ("a%20b", "x%3Fy", "sub_%C3%BC"):
        register = client.put(f"{CREATE}/{path_id}", json=REGISTRATION, headers=headers)
        assert problem(register, 422, "validation_error")["field"] == "submission_id"
    # The records flow, and both CLI commands that store submissions, keep the same rule.
    with Session(engine) as session, pytest.raises(InvalidSubmission, match=r"A-Za-z0-9\._:-"):
        create_submission(session, submission_id="a/b", user_id="u", input_url=INPUT)
    result = runner.invoke(
        args=["submissions", "add", "a/b c?d", "--user-id", "u", "--input", INPUT]
    )
    assert result.exit_code != 0 and "[A-Za-z0-9._:-]" in result.output, result.output
    lines = tmp_path / "import.jsonl"
    lines.write_text(
        json.dumps(body("ok_1")) + "\n" + json.dumps(body("a/b c?d")) + "\n", encoding="utf-8"
    )
    result = runner.invoke(args=["submissions", "import", str(lines)])
    assert result.exit_code != 0 and "line 2" in result.output, result.output
    assert "[A-Za-z0-9._:-]" in result.output
    assert snapshot(engine) == before
    # Every character the rule allows, at the longest length, is served back.
    good = ("Ab9._:-" * 29)[:200]
    assert client.put(f"{CREATE}/{good}", json=REGISTRATION, headers=headers).status_code == 201
    shown = client.get(f"{CREATE}/{good}", headers=headers)
    assert shown.status_code == 200 and shown.get_json()["submission_id"] == good


def test_metadata_is_bounded_string_pairs_everywhere(
    client: FlaskClient, headers: dict[str, str], engine: Engine, runner: Any
) -> None:
    before = snapshot(engine)
    long_key = "k" * 41
    for metadata, field in (
        ({f"k{n}": "v" for n in range(51)}, "metadata"),
        ({long_key: "v"}, f"metadata.{long_key[:40]}"),
        ({"": "v"}, "metadata."),
        ({"note": "x" * 501}, "metadata.note"),
        ({"n": 1}, "metadata.n"),
        ({"flag": True}, "metadata.flag"),
        ({"none": None}, "metadata.none"),
        ({"nested": {"a": "b"}}, "metadata.nested"),
        ({"list": ["a"]}, "metadata.list"),
    ):
        create = client.post(CREATE, json=body(metadata=metadata), headers=headers)
        assert problem(create, 422, "validation_error")["field"] == field, metadata
        register = client.put(
            REGISTER, json={**REGISTRATION, "metadata": metadata}, headers=headers
        )
        assert problem(register, 422, "validation_error")["field"] == field, metadata
    with pytest.raises(InvalidSubmission, match=r"metadata\.note"):
        import_submissions(engine, [json.dumps(body("sub_9", metadata={"note": "x" * 501}))])
    add = ["submissions", "add", "sub_9", "--user-id", "u", "--input", INPUT]
    result = runner.invoke(args=[*add, "--meta", f"{long_key}=v"])
    assert result.exit_code != 0 and long_key[:40] in result.output, result.output
    assert snapshot(engine) == before
    # At the bounds it is stored and served back whole.
    widest = {f"{n:02}" + "k" * 38: "v" * 500 for n in range(50)}
    registered = client.put(REGISTER, json={**REGISTRATION, "metadata": widest}, headers=headers)
    assert registered.status_code == 201, registered.get_json()
    assert registered.get_json()["metadata"] == widest

    # The admin list shows a preview of each value, never the whole of it.
    add_submission(engine, "sub_long", at=utcnow(), meta={"note": "N" * 480 + "TAIL"})
    create_admin(engine, EMAIL, PASSWORD, now=utcnow())
    assert sign_in(client).status_code == 302
    html = client.get("/admin/submissions").text
    assert "note=" + "N" * 40 in html
    assert "N" * 100 not in html and "TAIL" not in html


@pytest.fixture
def with_standin(app_config: dict[str, Any], no_retry_waits: None) -> Iterator[Standin]:
    # Jobs stay queued for the test's length: no delivery is attempted.
    with Standin(StandinConfig(step=3600)).start() as standin:
        use_standin(app_config, standin)
        yield standin


def test_one_idempotency_key_used_by_two_api_keys_is_two_requests(
    with_standin: Standin, app: Flask, client: FlaskClient, engine: Engine
) -> None:
    first, second = bearer(app, "first"), bearer(app, "second")
    key = {"Idempotency-Key": "order-1"}
    one = client.post(CREATE, json=body("sub_one"), headers={**first, **key})
    assert one.status_code == 201, one.get_json()
    two = client.post(CREATE, json=body("sub_two"), headers={**second, **key})
    assert two.status_code == 201, two.get_json()
    assert "Idempotent-Replayed" not in two.headers
    retry = client.post(CREATE, json=body("sub_two"), headers={**second, **key})
    assert retry.status_code == 201, retry.get_json()
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert retry.get_json() == two.get_json()
    assert retry.get_json()["submission_id"] == "sub_two"
    first_again = client.post(CREATE, json=body("sub_one"), headers={**first, **key})
    assert first_again.get_json() == one.get_json()


def test_the_document_lists_every_status_the_api_answers(
    client: FlaskClient, headers: dict[str, str]
) -> None:
    document = client.get("/api/v1/openapi.json").get_json()
    answered: dict[tuple[str, str], set[str]] = {}
    for path, item in document["paths"].items():
        for method, operation in item.items():
            answers = set(operation["responses"])
            answered[(method.upper(), path)] = answers
            assert "414" in answers, (method, path)  # gunicorn's request-line limit
            if operation.get("security") != []:
                assert {"401", "503"} <= answers, (method, path)
            if "requestBody" in operation:
                assert {"400", "413", "415", "422"} <= answers, (method, path)
    assert answered[("GET", "/api/v1/openapi.json")] >= {"200", "414"}
    # Each answered for real, in the API's error shape.
    too_big = b'{"x": "' + b"x" * (1024 * 1024) + b'"}'
    register = f"{CREATE}/{{submission_id}}"
    for method, path in (("POST", CREATE), ("PUT", register)):
        url = path.replace("{submission_id}", "sub_new")
        response = client.open(
            url, method=method, data=too_big, content_type="application/json", headers=headers
        )
        problem(response, 413, "request_entity_too_large")
        assert "413" in answered[(method, path)]
        response = client.open(url, method=method, data={"a": "b"}, headers=headers)
        problem(response, 415, "unsupported_media_type")
        assert "415" in answered[(method, path)]
