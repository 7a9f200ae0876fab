"""A NUL character in any input is a clear 4xx that changes nothing, never a 500.

PostgreSQL's text cannot hold NUL: before this rule, a ``%00`` in an id, a filter or a
search, or a ``\\u0000`` in an API body, reached the database and failed there as a 500
(SQLite stored it, so the other database could not serve it back). One rule now, alike on
both: a URL holding NUL is refused before any view (400), an API body holding one names its
field (422), an admin form holding one is refused (400), a webhook-id holding one does not
verify (401), and a header kept with a delivery keeps U+FFFD in its place.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.engine import Engine

from receiver.core.fields import InvalidField, check_metadata, nul_field
from receiver.flows.admin_accounts import create_admin
from receiver.flows.records import InvalidSubmission, validate_submission
from receiver.store.models import Submission, WebhookEvent, utcnow
from tests.admin_helpers import EMAIL, PASSWORD, csrf_token, sign_in
from tests.api_helpers import INPUT, bearer
from tests.helpers import add_submission, encode, job_payload, signed_headers, stored_events

_submissions = Submission.__table__  # type: ignore[attr-defined]
_events = WebhookEvent.__table__  # type: ignore[attr-defined]


def _counts(engine: Engine) -> tuple[int, int]:
    with engine.connect() as conn:
        return (
            conn.execute(sa.select(sa.func.count()).select_from(_submissions)).scalar_one(),
            conn.execute(sa.select(sa.func.count()).select_from(_events)).scalar_one(),
        )


# --- the rule -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "where"),
    [
        ({"a": "x", "b": {"c": ["ok", "n\x00"]}}, "b.c.1"),
        ({"a": {"k\x00": "v"}}, "a"),
        ({"k\x00": "v"}, ""),
        ("\x00", ""),
        ({"a": "x", "b": [1, None, True, {"c": "fine"}]}, None),
    ],
)
def test_nul_field_names_where_the_first_nul_is(value: Any, where: str | None) -> None:
    assert nul_field(value) == where


@pytest.mark.parametrize("metadata", [{"campaign": "spring\x00"}, {"camp\x00aign": "spring"}])
def test_metadata_holding_nul_is_refused_naming_it(metadata: dict[str, str]) -> None:
    with pytest.raises(InvalidField, match="NUL") as caught:
        check_metadata(metadata)
    assert caught.value.field.startswith("metadata")


def test_an_input_url_holding_nul_is_refused_for_every_writer() -> None:
    record = {"submission_id": "sub_n", "user_id": "user_1", "input_url": f"{INPUT}\x00"}
    with pytest.raises(InvalidSubmission) as caught:
        validate_submission(record)
    assert caught.value.field == "input_url"


# --- URLs: every surface, before any view --------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/submissions?user_id=a%00b"),
        ("GET", "/api/v1/submissions?meta.campaign=a%00b"),
        ("GET", "/api/v1/submissions?meta.a%00b=v"),
        ("GET", "/api/v1/submissions/a%00b"),
        ("GET", "/api/v1/submissions/a%00b/events"),
        ("POST", "/api/v1/submissions/a%00b/reconcile"),
        ("GET", "/api/v1/endpoints/a%00b"),
        ("DELETE", "/api/v1/endpoints/a%00b"),
        ("POST", "/api/v1/endpoints/a%00b/rotate"),
        ("GET", "/api/v1/notifications?submission_id=%00"),
        ("POST", "/webhooks/ittybit/a%00b"),
        ("GET", "/healthz?x=%00"),
    ],
)
def test_a_url_holding_nul_is_refused_as_json(
    app: Flask, client: FlaskClient, engine: Engine, method: str, path: str
) -> None:
    before = _counts(engine)
    answer = client.open(path, method=method, headers=bearer(app))
    assert answer.status_code == 400, answer.text[-300:]
    assert answer.json is not None
    assert answer.json["error"] == "bad_request"
    assert "NUL" in answer.json["message"]
    assert _counts(engine) == before


@pytest.fixture
def admin(client: FlaskClient, engine: Engine) -> FlaskClient:
    create_admin(engine, EMAIL, PASSWORD, now=utcnow())
    assert sign_in(client).status_code == 302
    return client


@pytest.mark.parametrize(
    "path",
    [
        "/admin/submissions?q=%00",
        "/admin/submissions?user=a%00b",
        "/admin/submissions?meta=%00%3Dv",  # SQLite read the key as a broken JSON path
        "/admin/submissions?meta=k%3Dv%00",
        "/admin/deliveries?q=a%00b",
        "/admin/notifications?submission=a%00b",
        "/admin/submissions/a%00b",
    ],
)
def test_an_admin_url_holding_nul_is_refused_as_a_page(admin: FlaskClient, path: str) -> None:
    answer = admin.get(path)
    assert answer.status_code == 400, answer.text[-300:]
    assert answer.mimetype == "text/html"
    assert "NUL" in answer.text


# --- bodies and forms ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        (
            "POST",
            "/api/v1/submissions",
            {"submission_id": "sub_n", "user_id": "u", "input_url": f"{INPUT}\x00"},
            "input_url",
        ),
        (
            "POST",
            "/api/v1/submissions",
            {"submission_id": "sub_n", "user_id": "u", "input_url": INPUT, "kind": "vid\x00"},
            "kind",
        ),
        (
            "POST",
            "/api/v1/submissions",
            {"submission_id": "sub_n", "user_id": "u", "input_url": INPUT, "options": {"a": "\0"}},
            "options.a",
        ),
        (
            "PUT",
            "/api/v1/submissions/sub_n",
            {"user_id": "u", "input_url": INPUT, "metadata": {"campaign": "\x00"}},
            "metadata.campaign",
        ),
        ("POST", "/api/v1/endpoints", {"url": "https://app.example.com/\x00"}, "url"),
        (
            "POST",
            "/api/v1/endpoints",
            {"url": "https://app.example.com/hooks", "description": "d\x00"},
            "description",
        ),
    ],
)
def test_an_api_body_holding_nul_is_refused_naming_the_field(
    app: Flask,
    client: FlaskClient,
    engine: Engine,
    method: str,
    path: str,
    body: dict[str, Any],
    field: str,
) -> None:
    before = _counts(engine)
    answer = client.open(
        path,
        method=method,
        data=json.dumps(body),
        content_type="application/json",
        headers=bearer(app),
    )
    assert answer.status_code == 422, answer.text[-300:]
    assert answer.json == {
        "error": "validation_error",
        "message": f"{field} must not contain a NUL character",
        "field": field,
    }
    assert _counts(engine) == before


@pytest.mark.parametrize(
    ("action", "fields"),
    [
        ("reconcile", {"submission_id": "a\x00b"}),
        ("endpoint-disable", {"endpoint_id": "a\x00b"}),
    ],
)
def test_an_admin_form_holding_nul_is_refused(
    admin: FlaskClient, engine: Engine, action: str, fields: dict[str, str]
) -> None:
    token = csrf_token(admin.get("/admin/submissions").text)
    before = _counts(engine)
    answer = admin.post(f"/admin/actions/{action}", data={"csrf_token": token, **fields})
    assert answer.status_code == 400, answer.text[-300:]
    assert "NUL" in answer.text
    assert _counts(engine) == before


# --- webhooks -----------------------------------------------------------------------------


def test_a_webhook_id_holding_nul_does_not_verify(client: FlaskClient, engine: Engine) -> None:
    add_submission(engine, "sub_1", "user_1")
    body = encode(job_payload())
    headers = signed_headers(body, msg_id="a\x00b")
    answer = client.post("/webhooks/ittybit", data=body, headers=headers)
    assert answer.status_code == 401
    assert answer.json is not None
    assert answer.json["error"] == "malformed_headers"
    assert stored_events(engine) == []


def test_a_header_holding_nul_is_kept_with_a_replacement_character(
    client: FlaskClient, engine: Engine
) -> None:
    add_submission(engine, "sub_1", "user_1")
    body = encode(job_payload())
    headers = {**signed_headers(body), "User-Agent": "ittybit\x00/1"}
    answer = client.post("/webhooks/ittybit", data=body, headers=headers)
    assert answer.status_code == 200, answer.text
    (event,) = stored_events(engine)
    assert event["headers"]["user-agent"] == "ittybit\ufffd/1"
