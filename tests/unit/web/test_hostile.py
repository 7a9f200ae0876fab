"""Hostile input on both webhook URLs: arbitrary bytes and JSON, mutated payloads, odd
headers and forged tokens. Every answer is a 2xx or one of the documented 4xx, never a
500, and nothing changes without a valid signature."""

from __future__ import annotations

import itertools
import json
import string
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from itsdangerous import URLSafeSerializer
from sqlalchemy.engine import Engine
from sqlmodel import Session

from receiver.core.signing import TOKEN_SALT
from receiver.flows.records import create_submission
from receiver.store.models import Submission, WebhookEvent
from tests.helpers import (
    OTHER_WEBHOOK_KEY,
    SECRET_KEY,
    encode,
    event_envelope,
    job_payload,
    signed_headers,
    token_url,
)

PROJECT_URL = "/webhooks/ittybit"
#: The answers DESIGN.md lists: applied/duplicate/stale, unmatched, and each refusal.
DOCUMENTED = frozenset({200, 202, 400, 401, 403, 413, 415, 422})
REFUSED_UNVERIFIED = frozenset({401, 413, 415})
_submissions = Submission.__table__  # type: ignore[attr-defined]
_events = WebhookEvent.__table__  # type: ignore[attr-defined]

hostile = settings(
    max_examples=200,
    deadline=None,
    # One app and database per test: examples share it, so each asserts on what it did
    # (a snapshot before and after), never on a fresh database.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
_ids = itertools.count()


def unique(prefix: str) -> str:
    return f"{prefix}_{next(_ids)}"


def snapshot(engine: Engine) -> tuple[list[tuple[Any, ...]], int]:
    """Every submission as stored, and how many deliveries the inbox holds."""
    with engine.connect() as conn:
        rows = [tuple(row) for row in conn.execute(sa.select(_submissions).order_by("id"))]
        count = conn.execute(sa.select(sa.func.count()).select_from(_events)).scalar_one()
    return rows, count


@pytest.fixture
def sub_1(engine: Engine) -> str:
    """A pending submission sub_1 of user_1 with job job_abc123; returns its webhook URL."""
    with Session(engine) as session:
        create_submission(
            session,
            submission_id="sub_1",
            user_id="user_1",
            input_url="https://uploads.example.com/sub_1.mp4",
            job_id="job_abc123",
        )
    return token_url()


def post(client: FlaskClient, url: str, body: bytes, headers: dict[str, str]) -> int:
    response = client.post(url, data=body, headers=headers)
    assert response.mimetype == "application/json"
    return response.status_code


#: Lone surrogates, control characters, other scripts, symbols and odd spaces.
weird_text = st.text(
    st.characters(categories=["Cc", "Lo", "So", "Zs"]), min_size=1, max_size=6
) | st.text(st.characters(categories=["Cs"]), min_size=1, max_size=2)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
    | weird_text,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
job_like = st.fixed_dictionaries(
    {},
    optional={
        "id": st.sampled_from(["job_abc123", "job_other", "task_1", ""]) | weird_text | json_values,
        "object": st.sampled_from(["job", "task", "event"]) | json_values,
        "status": st.sampled_from(["succeeded", "failed", "processing", "canceled", "???"])
        | weird_text
        | json_values,
        "metadata": st.fixed_dictionaries(
            {},
            optional={
                "submission_id": st.sampled_from(["sub_1", "sub_2", 1]) | weird_text | json_values,
                "user_id": st.sampled_from(["user_1", "user_2", 1]) | weird_text | json_values,
            },
        )
        | json_values,
        "output": json_values,
        "outputs": json_values,
        "tasks": json_values,
        "error": json_values,
        "updated_at": st.integers() | st.floats() | st.text(max_size=30) | json_values,
        "data": json_values,
        "meta": json_values,
        "kind": json_values,
    },
)


# --- anything without a valid signature changes nothing ----------------------------------


@pytest.mark.slow
@hostile
@given(
    body=st.binary(max_size=2048),
    content_type=st.sampled_from(["application/json", "application/json; charset=utf-8", None]),
    target=st.sampled_from(["url", "endpoint", "forged-token"]),
    signing=st.sampled_from(["none", "other-key", "garbage", "stale"]),
    token=st.text(string.ascii_letters + string.digits + "-_.", min_size=1, max_size=300),
)
def test_arbitrary_bytes_without_a_valid_signature_change_nothing(
    client: FlaskClient,
    engine: Engine,
    sub_1: str,
    body: bytes,
    content_type: str | None,
    target: str,
    signing: str,
    token: str,
) -> None:
    url = {"url": sub_1, "endpoint": PROJECT_URL, "forged-token": f"{PROJECT_URL}/{token}"}[target]
    headers: dict[str, str] = {}
    if signing == "other-key":
        headers = signed_headers(body, msg_id=unique("msg"), key=OTHER_WEBHOOK_KEY)
    elif signing == "garbage":
        headers = {"webhook-id": "x", "webhook-timestamp": "1", "webhook-signature": "v1,AAAA"}
    elif signing == "stale":
        headers = signed_headers(body, msg_id=unique("msg"), timestamp=1_000_000_000)
    if content_type is not None:
        headers["Content-Type"] = content_type
    before = snapshot(engine)
    status = post(client, url, body, headers)
    assert status in REFUSED_UNVERIFIED
    assert snapshot(engine) == before


@pytest.mark.slow
@hostile
@given(payload=job_like | json_values, target=st.sampled_from(["url", "endpoint"]))
def test_a_tampered_body_changes_nothing(
    client: FlaskClient, engine: Engine, sub_1: str, payload: Any, target: str
) -> None:
    body = encode(payload)
    headers = signed_headers(body, msg_id=unique("msg"))
    tampered = body + b" " if body[-1:] != b" " else body[:-1]
    before = snapshot(engine)
    assert post(client, sub_1 if target == "url" else PROJECT_URL, tampered, headers) == 401
    assert snapshot(engine) == before


# --- signed but hostile: a documented answer, never a 500 -----------------------------------


@pytest.mark.slow
@hostile
@given(payload=job_like | json_values, target=st.sampled_from(["url", "endpoint"]))
def test_arbitrary_signed_json_gets_a_documented_answer(
    client: FlaskClient, engine: Engine, sub_1: str, payload: Any, target: str
) -> None:
    body = encode(payload)
    url = sub_1 if target == "url" else PROJECT_URL
    before = snapshot(engine)
    status = post(client, url, body, signed_headers(body, msg_id=unique("msg")))
    assert status in DOCUMENTED
    if status in (400, 422):
        assert snapshot(engine) == before  # refused before anything was stored


_PATHS = [
    ("id",),
    ("status",),
    ("metadata",),
    ("metadata", "submission_id"),
    ("metadata", "user_id"),
    ("output",),
    ("output", "url"),
    ("updated_at",),
    ("error",),
    ("tasks",),
]


@st.composite
def mutated_payloads(draw: st.DrawFn) -> Any:
    """A valid delivery for sub_1 with a few fields replaced, removed or re-wrapped."""
    payload: dict[str, Any] = job_payload(
        status=draw(st.sampled_from(["succeeded", "failed", "processing", "queued"])),
        updated_at=draw(st.sampled_from([None, 1714564800, "2024-05-01T12:00:00Z"])),
    )
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_PATHS))
        parent: Any = payload
        for key in path[:-1]:
            if not isinstance(parent.get(key), dict):
                parent[key] = {}
            parent = parent[key]
        if draw(st.booleans()):
            parent.pop(path[-1], None)
        else:
            parent[path[-1]] = draw(weird_text | json_values)
    wrapping = draw(st.sampled_from(["bare", "event", "legacy"]))
    if wrapping == "event":
        return event_envelope(payload, event_id=unique("evt"))
    if wrapping == "legacy":
        return {"meta": {"version": 1}, "data": payload, "error": draw(json_values)}
    return payload


@pytest.mark.slow
@hostile
@given(payload=mutated_payloads(), target=st.sampled_from(["url", "endpoint"]))
def test_mutated_valid_payloads_get_a_documented_answer(
    client: FlaskClient, engine: Engine, sub_1: str, payload: Any, target: str
) -> None:
    body = encode(payload)
    url = sub_1 if target == "url" else PROJECT_URL
    status = post(client, url, body, signed_headers(body, msg_id=unique("msg")))
    assert status in DOCUMENTED


# --- one test per kind of hostile input ------------------------------------------------------


def test_header_injection_is_not_echoed(client: FlaskClient, engine: Engine, sub_1: str) -> None:
    body = encode(job_payload())
    headers = signed_headers(body)
    injected = "abc\r\nSet-Cookie: session=stolen"
    response = client.post(
        sub_1,
        data=body,
        headers=headers,
        environ_overrides={"HTTP_X_REQUEST_ID": injected},
    )
    assert response.status_code == 200
    assert "Set-Cookie" not in response.headers
    assert "\n" not in response.headers["X-Request-ID"]
    assert response.headers["X-Request-ID"] != injected

    # A delivery id with a line break is only text: stored as such, never a header.
    msg_id = "msg\r\nX-Injected: 1"
    headers = signed_headers(body, msg_id=msg_id)
    response = client.post(PROJECT_URL, data=body, headers={"Content-Type": "application/json"},
                           environ_overrides={
                               "HTTP_WEBHOOK_ID": headers["webhook-id"],
                               "HTTP_WEBHOOK_TIMESTAMP": headers["webhook-timestamp"],
                               "HTTP_WEBHOOK_SIGNATURE": headers["webhook-signature"],
                           })  # fmt: skip
    assert response.status_code == 200
    assert response.get_json()["outcome"] == "duplicate"
    assert "X-Injected" not in response.headers
    with engine.connect() as conn:
        stored = conn.execute(sa.select(_events.c.delivery_id).order_by(_events.c.id)).scalars()
        assert list(stored) == ["msg_1", msg_id]


@pytest.mark.parametrize(
    ("header", "size", "error"),
    [
        ("webhook-signature", 20_000, "malformed_headers"),
        ("webhook-id", 20_000, "malformed_headers"),
        ("webhook-timestamp", 20_000, "malformed_timestamp"),
    ],
)
def test_huge_headers_are_refused(
    client: FlaskClient, engine: Engine, sub_1: str, header: str, size: int, error: str
) -> None:
    body = encode(job_payload())
    headers = signed_headers(body)
    headers[header] = "v1," + "A" * size if header == "webhook-signature" else "1" * size
    before = snapshot(engine)
    response = client.post(PROJECT_URL, data=body, headers=headers)
    assert response.status_code == 401
    assert response.get_json()["error"] == error
    assert snapshot(engine) == before


def test_a_huge_request_id_is_replaced(client: FlaskClient, sub_1: str) -> None:
    response = client.get("/healthz", headers={"X-Request-ID": "r" * 50_000})
    assert response.status_code == 200
    assert len(response.headers["X-Request-ID"]) == 32


@pytest.mark.parametrize("opener", ["[", '{"a":'])
def test_deeply_nested_json_is_refused(
    client: FlaskClient, engine: Engine, sub_1: str, opener: str
) -> None:
    body = (opener * 100_000).encode()
    before = snapshot(engine)
    response = client.post(PROJECT_URL, data=body, headers=signed_headers(body))
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_json"
    assert snapshot(engine) == before


def test_nested_metadata_within_reason_is_accepted(
    client: FlaskClient, engine: Engine, sub_1: str
) -> None:
    nested: Any = "leaf"
    for _ in range(200):
        nested = {"n": nested}
    body = encode(job_payload(metadata_extra=nested))
    response = client.post(sub_1, data=body, headers=signed_headers(body))
    assert response.status_code == 200
    assert response.get_json()["outcome"] == "applied"


@pytest.mark.parametrize(
    "body",
    [
        b'{"id": "job_abc123", "status": "failed", "status": "succeeded"}',
        b'{"id": "job_abc123", "status": "succeeded", "metadata": '
        b'{"user_id": "user_1", "user_id": "user_2"}}',
        b'{"id": "evt_1", "object": "event", "data": {"id": "job_abc123", "id": "job_x", '
        b'"status": "succeeded"}}',
    ],
)
def test_json_with_duplicate_keys_is_refused(
    client: FlaskClient, engine: Engine, sub_1: str, body: bytes
) -> None:
    before = snapshot(engine)
    response = client.post(sub_1, data=body, headers=signed_headers(body))
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_json"
    assert "duplicate key" in response.get_json()["message"]
    assert snapshot(engine) == before


def submission_row(engine: Engine, submission_id: str = "sub_1") -> dict[str, Any]:
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(_submissions).where(_submissions.c.submission_id == submission_id)
        ).one()
    return dict(row._mapping)


def test_numbers_as_strings(client: FlaskClient, engine: Engine) -> None:
    with Session(engine) as session:
        create_submission(
            session, submission_id="42", user_id="7", input_url="https://uploads.example.com/42"
        )
    # Ids sent as numbers match their text; a Unix time in milliseconds as a string is read.
    payload = job_payload("job_n", submission_id=None, user_id=None, updated_at="1714564800000")
    payload["metadata"] = {"submission_id": 42, "user_id": 7}
    body = encode(payload)
    response = client.post(PROJECT_URL, data=body, headers=signed_headers(body))
    assert response.status_code == 200, response.get_json()
    stored = submission_row(engine, "42")
    assert stored["status"] == "succeeded"
    assert stored["provider_updated_at"].isoformat() == "2024-05-01T12:00:00+00:00"

    # "7.0" is not 7: ids are compared as text.
    payload = job_payload("job_n", "failed", submission_id="42", user_id=None)
    payload["metadata"]["user_id"] = "7.0"
    body = encode(payload)
    response = client.post(PROJECT_URL, data=body, headers=signed_headers(body, msg_id="m2"))
    assert response.status_code == 403
    # A status sent as a number is no status.
    body = encode({"id": "job_n", "status": 3})
    response = client.post(PROJECT_URL, data=body, headers=signed_headers(body, msg_id="m3"))
    assert response.status_code == 422
    assert submission_row(engine, "42")["status"] == "succeeded"


def test_unicode_in_ids_and_metadata(client: FlaskClient, engine: Engine) -> None:
    submission_id, user_id = "sub_\u00fc\u00f1\u00ee\U0001f600", "\u7528\u6237"
    # Stored before ids were held to [A-Za-z0-9._:-] (receiver.core.fields): still served.
    with Session(engine) as session:
        session.add(
            Submission(
                submission_id=submission_id,
                user_id=user_id,
                input_url="https://uploads.example.com/\u00fc.mp4",
                status="pending",
                meta={},
            )
        )
        session.commit()
    payload = job_payload("job_\u00e9", submission_id=submission_id, user_id=user_id)
    payload["metadata"]["title"] = (
        "\u202eevil\u202c \ufffd \U0001f3ac \u0645\u0631\u062d\u0628\u0627"
    )
    payload["output"] = {"url": "https://cdn.example.com/\u00fc\u00f1.mp4"}
    body = json.dumps(payload, ensure_ascii=False).encode()
    url = token_url(submission_id, user_id)
    response = client.post(url, data=body, headers=signed_headers(body))
    assert response.status_code == 200, response.get_json()
    stored = submission_row(engine, submission_id)
    assert (stored["job_id"], stored["status"]) == ("job_\u00e9", "succeeded")
    assert stored["output_url"] == "https://cdn.example.com/\u00fc\u00f1.mp4"
    with engine.connect() as conn:
        kept = conn.execute(sa.select(_events.c.body)).scalar_one()
    assert kept.encode() == body


def test_lone_surrogates_are_refused_not_a_server_error(
    client: FlaskClient, engine: Engine, sub_1: str
) -> None:
    body = b'{"id": "job_\\ud800", "status": "succeeded", "metadata": {"user_id": "user_1"}}'
    before = snapshot(engine)
    response = client.post(sub_1, data=body, headers=signed_headers(body))
    assert response.status_code in (400, 422)
    assert snapshot(engine) == before


@pytest.mark.parametrize("updated_at", ["9999-12-31T23:59:59-23:00", "0001-01-01T00:00:00+14:00"])
def test_a_time_past_the_range_in_utc_is_refused_not_a_server_error(
    client: FlaskClient, engine: Engine, sub_1: str, updated_at: str
) -> None:
    body = encode(job_payload(updated_at=updated_at))
    before = snapshot(engine)
    response = client.post(sub_1, data=body, headers=signed_headers(body))
    assert response.status_code == 422
    assert response.json == {"error": "not_a_job", "message": "timestamp is out of range"}
    assert snapshot(engine) == before


@pytest.mark.parametrize(
    "value",
    [
        "sub_1'; DROP TABLE submissions; --",
        "' OR '1'='1",
        'sub_1" OR 1=1 --',
        "%",
        "sub_%",
        "\\x00",
    ],
)
def test_sql_looking_metadata_is_only_text(
    client: FlaskClient, engine: Engine, sub_1: str, value: str
) -> None:
    before = snapshot(engine)
    payload = job_payload("job_sql", submission_id=value)
    body = encode(payload)
    response = client.post(PROJECT_URL, data=body, headers=signed_headers(body))
    assert response.status_code == 202
    assert response.get_json() == {"outcome": "unmatched", "submission_id": value}

    payload = job_payload(user_id=value)
    body = encode(payload)
    response = client.post(sub_1, data=body, headers=signed_headers(body, msg_id="msg_2"))
    assert response.status_code == 403
    rows, count = snapshot(engine)
    assert rows == before[0]  # sub_1 untouched, and the table is still there
    assert count == 2
    with engine.connect() as conn:
        kept = conn.execute(sa.select(_events.c.submission_id).order_by(_events.c.id)).scalars()
        assert list(kept) == [value, "sub_1"]


@pytest.mark.parametrize(
    "token",
    [
        # Same key, another salt: a token made for some other purpose.
        URLSafeSerializer(SECRET_KEY, salt="itsdangerous").dumps({"s": "sub_1", "u": "user_1"}),
        URLSafeSerializer(SECRET_KEY, salt="cookie-session").dumps({"s": "sub_1", "u": "user_1"}),
        # Same salt, another deployment's key.
        URLSafeSerializer("another-deployment-secret-0123456789", salt=TOKEN_SALT).dumps(
            {"s": "sub_1", "u": "user_1"}
        ),
        # Well signed, but not the claims a webhook URL carries.
        URLSafeSerializer(SECRET_KEY, salt=TOKEN_SALT).dumps(["sub_1", "user_1"]),
        URLSafeSerializer(SECRET_KEY, salt=TOKEN_SALT).dumps({"s": 1, "u": "user_1"}),
    ],
)
def test_tokens_from_another_salt_or_deployment_are_refused(
    client: FlaskClient, engine: Engine, sub_1: str, token: str
) -> None:
    body = encode(job_payload())
    before = snapshot(engine)
    response = client.post(f"{PROJECT_URL}/{token}", data=body, headers=signed_headers(body))
    assert response.status_code == 401
    assert response.get_json()["error"] == "bad_token"
    assert snapshot(engine) == before


def test_another_deployments_webhook_secret_is_refused(
    app: Flask, engine: Engine, sub_1: str
) -> None:
    body = encode(job_payload())
    before = snapshot(engine)
    for url in (sub_1, PROJECT_URL):
        headers = signed_headers(body, key=OTHER_WEBHOOK_KEY)
        response = app.test_client().post(url, data=body, headers=headers)
        assert response.status_code == 401
        assert response.get_json()["error"] == "bad_signature"
    assert snapshot(engine) == before
