"""The webhook endpoints over the Flask test client: exact answers and exact database state."""

from __future__ import annotations

import base64
import io
import json
import logging
import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from freezegun import freeze_time
from sqlalchemy.engine import Engine
from werkzeug.test import TestResponse

from receiver import create_app
from receiver.core.signing import sign_standard_webhook, webhook_token
from receiver.store.engines import get_engine
from receiver.store.models import Submission, WebhookEvent
from tests.helpers import (
    OLD_SECRET_KEY,
    OTHER_WEBHOOK_KEY,
    SECRET_KEY,
    WEBHOOK_KEY,
    add_submission,
    encode,
    event_envelope,
    job_payload,
    signed_headers,
    token_url,
)

PROJECT_URL = "/webhooks/ittybit"
T = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
T_SECONDS = int(T.timestamp())
SUBMISSION_COLUMNS = (
    "submission_id",
    "user_id",
    "job_id",
    "status",
    "provider_status",
    "output_url",
    "error",
    "provider_updated_at",
    "updated_at",
)


# --- helpers --------------------------------------------------------------------------------


def submission(engine: Engine, submission_id: str = "sub_1") -> dict[str, Any]:
    table = Submission.__table__  # type: ignore[attr-defined]
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(*(table.c[name] for name in SUBMISSION_COLUMNS)).where(
                table.c.submission_id == submission_id
            )
        ).one()
    return dict(row._mapping)


def events(engine: Engine) -> list[dict[str, Any]]:
    table = WebhookEvent.__table__  # type: ignore[attr-defined]
    with engine.connect() as conn:
        rows = conn.execute(sa.select(table).order_by(table.c.id)).all()
    return [dict(row._mapping) for row in rows]


def post(
    client: FlaskClient,
    url: str,
    payload: Any,
    *,
    msg_id: str = "msg_1",
    headers: dict[str, str] | None = None,
) -> TestResponse:
    body = payload if isinstance(payload, bytes) else encode(payload)
    all_headers = signed_headers(body, msg_id=msg_id)
    all_headers.update(headers or {})
    return client.post(url, data=body, headers=all_headers)


def assert_error(response: TestResponse, status: int, code: str) -> None:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"error", "message"}
    assert body["error"] == code
    assert isinstance(body["message"], str)
    assert body["message"]


@pytest.fixture
def sub_1(engine: Engine) -> dict[str, Any]:
    """A pending submission ``sub_1`` of ``user_1``, as stored before any delivery."""
    add_submission(engine)
    return submission(engine)


def assert_untouched(engine: Engine, before: dict[str, Any]) -> None:
    """Nothing changed: the submission is as it was and the inbox is empty."""
    assert submission(engine, before["submission_id"]) == before
    assert events(engine) == []


# --- valid deliveries -----------------------------------------------------------------------


def test_token_url_applies_status_and_output(
    client: FlaskClient, engine: Engine, sub_1: dict[str, Any]
) -> None:
    body = encode(job_payload(updated_at=T_SECONDS))
    response = client.post(token_url(), data=body, headers=signed_headers(body, msg_id="msg_a"))
    assert response.status_code == 200
    assert response.get_json() == {
        "outcome": "applied",
        "submission_id": "sub_1",
        "status": "succeeded",
    }
    stored = submission(engine)
    assert stored["status"] == "succeeded"
    assert stored["provider_status"] == "succeeded"
    assert stored["job_id"] == "job_abc123"
    assert stored["output_url"] == "https://cdn.example.com/job_abc123.mp4"
    assert stored["error"] is None
    assert stored["provider_updated_at"] == T
    assert stored["updated_at"] >= sub_1["updated_at"]
    [event] = events(engine)
    assert event["dedupe_key"] == "wh:msg_a"
    assert event["source"] == "url"
    assert event["delivery_id"] == "msg_a"
    assert event["job_id"] == "job_abc123"
    assert event["submission_id"] == "sub_1"
    assert event["provider_status"] == "succeeded"
    assert event["outcome"] == "applied"
    assert event["body"] == body.decode()
    assert event["headers"]["webhook-id"] == "msg_a"
    assert "webhook-signature" not in event["headers"]


def test_the_stored_headers_are_the_safe_ones_as_sent(
    client: FlaskClient, engine: Engine, sub_1: dict[str, Any]
) -> None:
    body = encode(job_payload())
    headers = signed_headers(body, msg_id="msg_h")
    headers.update(
        {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": "ittybit-webhooks/1.0",
            "svix-id": "msg_h",
            "svix-timestamp": headers["webhook-timestamp"],
            "svix-signature": headers["webhook-signature"],
            "X-Request-ID": "req-h",
            "Authorization": "Bearer secret",
        }
    )
    response = client.post(token_url(), data=body, headers=headers)
    assert response.status_code == 200
    [event] = events(engine)
    assert event["headers"] == {
        "content-type": "application/json; charset=utf-8",
        "user-agent": "ittybit-webhooks/1.0",
        "webhook-id": "msg_h",
        "webhook-timestamp": headers["webhook-timestamp"],
        "svix-id": "msg_h",
        "svix-timestamp": headers["webhook-timestamp"],
        "x-request-id": "req-h",
    }


@pytest.mark.parametrize(
    "name",
    ["webhook-id", "Webhook-Signature", "content-type", "Content-Length", "user_agent",
     "x-request-id", "svix-id", "absent-header", "HOST"],
)  # fmt: skip
def test_the_views_header_lookup_reads_what_werkzeugs_does(name: str) -> None:
    from werkzeug.datastructures import EnvironHeaders
    from werkzeug.test import EnvironBuilder

    from receiver.web.webhooks import _EnvironHeaders

    environ = EnvironBuilder(
        method="POST",
        data=b"{}",
        content_type="application/json",
        headers={"webhook-id": "msg_1", "Webhook-Signature": "v1,x", "User-Agent": "ua"},
    ).get_environ()
    assert _EnvironHeaders(environ).get(name) == EnvironHeaders(environ).get(name)


def test_project_url_matches_by_metadata_and_fills_job_id(
    client: FlaskClient, engine: Engine, sub_1: dict[str, Any]
) -> None:
    response = post(client, PROJECT_URL, job_payload("job_77", "processing"))
    assert response.status_code == 200
    assert response.get_json() == {
        "outcome": "applied",
        "submission_id": "sub_1",
        "status": "processing",
    }
    assert submission(engine)["job_id"] == "job_77"
    [event] = events(engine)
    assert (event["source"], event["outcome"]) == ("endpoint", "applied")


def test_project_url_matches_by_job_id_without_metadata(
    client: FlaskClient, engine: Engine
) -> None:
    add_submission(engine, job_id="job_9")
    payload = job_payload("job_9", "succeeded", submission_id=None, user_id=None)
    response = post(client, PROJECT_URL, payload)
    assert response.status_code == 200
    assert response.get_json()["outcome"] == "applied"
    assert submission(engine)["status"] == "succeeded"


def test_token_signed_with_old_key_is_accepted_after_rotation(
    client: FlaskClient, engine: Engine, sub_1: dict[str, Any]
) -> None:
    response = post(client, token_url(key=OLD_SECRET_KEY), job_payload())
    assert response.status_code == 200
    assert response.get_json()["outcome"] == "applied"
    assert submission(engine)["status"] == "succeeded"


def test_token_alone_suffices_without_webhook_secret(
    app_config: dict[str, Any], engine: Engine
) -> None:
    app_config.pop("ITTYBIT_WEBHOOK_SECRET")
    app = create_app(app_config)
    try:
        add_submission(get_engine(app))
        body = encode(job_payload())
        response = app.test_client().post(
            token_url(), data=body, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 200
        assert response.get_json()["outcome"] == "applied"
        [event] = events(get_engine(app))
        assert event["delivery_id"] is None
        assert event["dedupe_key"].startswith("st:")
    finally:
        get_engine(app).dispose()


@pytest.mark.parametrize("prefix", ["webhook", "svix"])
def test_header_prefixes(
    client: FlaskClient, engine: Engine, sub_1: dict[str, Any], prefix: str
) -> None:
    body = encode(job_payload())
    response = client.post(
        PROJECT_URL, data=body, headers=signed_headers(body, msg_id="msg_p", prefix=prefix)
    )
    assert response.status_code == 200
    assert events(engine)[0]["dedupe_key"] == "wh:msg_p"


def test_several_signatures_one_valid(
    client: FlaskClient, engine: Engine, sub_1: dict[str, Any]
) -> None:
    body = encode(job_payload())
    headers = signed_headers(body)
    stamp = int(headers["webhook-timestamp"])
    wrong = sign_standard_webhook(OTHER_WEBHOOK_KEY, msg_id="msg_1", timestamp=stamp, body=body)
    headers["webhook-signature"] = f"{wrong} v1,AAAA {headers['webhook-signature']}"
    response = client.post(PROJECT_URL, data=body, headers=headers)
    assert response.status_code == 200
    assert submission(engine)["status"] == "succeeded"


@pytest.mark.parametrize("key", [WEBHOOK_KEY, OTHER_WEBHOOK_KEY])
def test_any_configured_secret_verifies(
    app_config: dict[str, Any], key: bytes, database_url: str
) -> None:
    other = "whsec_" + base64.b64encode(OTHER_WEBHOOK_KEY).decode()
    app_config["ITTYBIT_WEBHOOK_SECRET"] = f"{other}, {app_config['ITTYBIT_WEBHOOK_SECRET']}"
    app = create_app(app_config)
    try:
        engine = get_engine(app)
        add_submission(engine)
        body = encode(job_payload())
        response = app.test_client().post(
            PROJECT_URL, data=body, headers=signed_headers(body, key=key)
        )
        assert response.status_code == 200
        assert submission(engine)["status"] == "succeeded"
    finally:
        get_engine(app).dispose()


# --- payload shapes, statuses and timestamps --------------------------------------------------

SHAPES: dict[str, dict[str, Any]] = {
    "bare job": job_payload("job_s", "succeeded", output={"url": "https://cdn/s.mp4"}),
    "job with output string": job_payload("job_s", "succeeded", output="https://cdn/s.mp4"),
    "bare task output object": {
        "id": "job_s",
        "object": "task",
        "status": "ready",
        "output": {"url": "https://cdn/s.mp4"},
        "metadata": {"submission_id": "sub_1", "user_id": "user_1"},
    },
    "bare task outputs list": {
        "id": "job_s",
        "object": "task",
        "status": "completed",
        "outputs": [{"url": "https://cdn/first.mp4"}, {"url": "https://cdn/s.mp4"}],
        "metadata": {"submission_id": "sub_1"},
    },
    "job output from final task": job_payload(
        "job_s",
        "succeeded",
        output=False,
        tasks=[
            {"id": "task_1", "status": "succeeded", "output": {"url": "https://cdn/thumb.jpg"}},
            {"id": "task_2", "status": "succeeded", "outputs": [{"url": "https://cdn/s.mp4"}]},
        ],
    ),
    "event envelope task.succeeded": {
        "id": "evt_s",
        "object": "event",
        "kind": "task.succeeded",
        "created_at": T_SECONDS,
        "data": {
            "id": "job_s",
            "object": "task",
            "output": {"url": "https://cdn/s.mp4"},
            "metadata": {"submission_id": "sub_1", "user_id": "user_1"},
        },
    },
    "legacy wrapper": {
        "meta": {"request_id": "req_1", "type": "object"},
        "data": {
            "id": "job_s",
            "status": "ready",
            "output": {"url": "https://cdn/s.mp4"},
            "metadata": {"submission_id": "sub_1", "user_id": "user_1"},
        },
        "error": None,
    },
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("url", ["token", "project"])
def test_every_payload_shape(
    client: FlaskClient, engine: Engine, sub_1: dict[str, Any], shape: str, url: str
) -> None:
    response = post(client, token_url() if url == "token" else PROJECT_URL, SHAPES[shape])
    assert response.status_code == 200, response.get_json()
    assert response.get_json() == {
        "outcome": "applied",
        "submission_id": "sub_1",
        "status": "succeeded",
    }
    stored = submission(engine)
    assert (stored["status"], stored["job_id"]) == ("succeeded", "job_s")
    assert stored["output_url"] == "https://cdn/s.mp4"
    [event] = events(engine)
    assert event["outcome"] == "applied"


@pytest.mark.parametrize(
    ("provider_status", "status"),
    [
        ("pending", "processing"),
        ("waiting", "processing"),
        ("queued", "processing"),
        ("validating", "processing"),
        ("processing", "processing"),
        ("finishing", "processing"),
        ("shiny_new_status", "processing"),
        ("succeeded", "succeeded"),
        ("completed", "succeeded"),
        ("ready", "succeeded"),
        ("failed", "failed"),
        ("error", "failed"),
        ("cancelled", "cancelled"),
        ("canceled", "cancelled"),
    ],
)
def test_each_status_family(
    client: FlaskClient,
    engine: Engine,
    sub_1: dict[str, Any],
    provider_status: str,
    status: str,
) -> None:
    payload = job_payload("job_f", provider_status, output=False, error={"message": "no codec"})
    response = post(client, PROJECT_URL, payload)
    assert response.status_code == 200
    assert response.get_json() == {"outcome": "applied", "submission_id": "sub_1", "status": status}
    stored = submission(engine)
    assert (stored["status"], stored["provider_status"]) == (status, provider_status)
    expected_error = "no codec" if status in ("failed", "cancelled") else None
    assert stored["error"] == expected_error
    assert events(engine)[0]["provider_status"] == provider_status


@pytest.mark.parametrize(
    "stamp",
    [T_SECONDS, T_SECONDS * 1000, "2024-05-01T12:00:00Z", "2024-05-01T14:00:00+02:00"],
    ids=["seconds", "milliseconds", "iso-z", "iso-offset"],
)
def test_timestamp_forms_are_stored_as_utc(
    client: FlaskClient, engine: Engine, sub_1: dict[str, Any], stamp: Any
) -> None:
    response = post(client, PROJECT_URL, job_payload(updated_at=stamp))
    assert response.status_code == 200
    assert submission(engine)["provider_updated_at"] == T


# --- refusals: exact status, nothing stored -----------------------------------------------------


def test_tampered_body(client: FlaskClient, engine: Engine, sub_1: dict[str, Any]) -> None:
    body = encode(job_payload())
    headers = signed_headers(body)
    tampered = body.replace(b"job_abc123.mp4", b"evil.mp4")
    for url in (PROJECT_URL, token_url()):
        assert_error(client.post(url, data=tampered, headers=headers), 401, "bad_signature")
    assert_untouched(engine, sub_1)


def test_token_signed_with_unknown_key(
    client: FlaskClient, engine: Engine, sub_1: dict[str, Any]
) -> None:
    response = post(client, token_url(key="someone-elses-secret-key-123"), job_payload())
    assert_error(response, 401, "bad_token")
    assert_untouched(engine, sub_1)


def test_tampered_token(client: FlaskClient, engine: Engine, sub_1: dict[str, Any]) -> None:
    url = token_url()
    forged = webhook_token([SECRET_KEY], submission_id="sub_1", user_id="admin")
    payload_part, signature = url.rsplit("/", 1)[1].split(".")
    grafted = f"{forged.split('.')[0]}.{signature}"  # another owner, the real signature
    flipped = f"{payload_part}.{signature[:-2]}{'AA' if signature[-2:] != 'AA' else 'BB'}"
    for bad in (grafted, flipped, payload_part):
        assert_error(post(client, f"/webhooks/ittybit/{bad}", job_payload()), 401, "bad_token")
    assert_untouched(engine, sub_1)


def test_hmac_with_wrong_key(client: FlaskClient, engine: Engine, sub_1: dict[str, Any]) -> None:
    body = encode(job_payload())
    headers = signed_headers(body, key=OTHER_WEBHOOK_KEY)
    for url in (PROJECT_URL, token_url()):
        assert_error(client.post(url, data=body, headers=headers), 401, "bad_signature")
    assert_untouched(engine, sub_1)


@pytest.mark.parametrize(
    ("frozen_at", "reason"),
    [
        (T + timedelta(seconds=301), "timestamp_too_old"),
        (T - timedelta(seconds=301), "timestamp_in_future"),
    ],
)
def test_hmac_timestamp_outside_tolerance(
    client: FlaskClient, engine: Engine, sub_1: dict[str, Any], frozen_at: datetime, reason: str
) -> None:
    body = encode(job_payload())
    headers = signed_headers(body, timestamp=T_SECONDS)
    with freeze_time(frozen_at):
        responses = [
            client.post(url, data=body, headers=headers) for url in (PROJECT_URL, token_url())
        ]
    for response in responses:
        assert_error(response, 401, reason)
    assert_untouched(engine, sub_1)


@pytest.mark.parametrize("skew", [-300, 300])
def test_hmac_timestamp_on_the_edge_is_accepted(
    client: FlaskClient, engine: Engine, sub_1: dict[str, Any], skew: int
) -> None:
    body = encode(job_payload())
    headers = signed_headers(body, timestamp=T_SECONDS)
    with freeze_time(T + timedelta(seconds=skew)):
        response = client.post(PROJECT_URL, data=body, headers=headers)
    assert response.status_code == 200
    assert submission(engine)["status"] == "succeeded"


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature", "all"])
def test_missing_headers(
    client: FlaskClient, engine: Engine, sub_1: dict[str, Any], missing: str
) -> None:
    body = encode(job_payload())
    headers = signed_headers(body)
    if missing == "all":
        headers = {"Content-Type": "application/json"}
    else:
        del headers[missing]
    for url in (PROJECT_URL, token_url()):
        assert_error(client.post(url, data=body, headers=headers), 401, "missing_headers")
    assert_untouched(engine, sub_1)


@pytest.mark.parametrize("signature", ["g0hM9SsE+OTPJTGt", "v1,", "v1,%%%", "v2,abc"])
def test_malformed_signature_header(
    client: FlaskClient, engine: Engine, sub_1: dict[str, Any], signature: str
) -> None:
    response = post(client, PROJECT_URL, job_payload(), headers={"webhook-signature": signature})
    assert_error(response, 401, "malformed_signature")
    assert_untouched(engine, sub_1)


def test_project_url_without_configured_secret(
    app_config: dict[str, Any], database_url: str
) -> None:
    app_config.pop("ITTYBIT_WEBHOOK_SECRET")
    app = create_app(app_config)
    try:
        response = post(app.test_client(), PROJECT_URL, job_payload())
        assert_error(response, 401, "not_configured")
        assert events(get_engine(app)) == []
    finally:
        get_engine(app).dispose()


def test_non_utf8_body(client: FlaskClient, engine: Engine, sub_1: dict[str, Any]) -> None:
    body = '{"id": "job_é", "status": "succeeded"}'.encode("latin-1")
    for url in (PROJECT_URL, token_url()):
        assert_error(client.post(url, data=body, headers=signed_headers(body)), 400, "invalid_json")
    assert_untouched(engine, sub_1)


@pytest.mark.parametrize("body", [b"{not json", b"", b'{"a": NaN}'])
def test_invalid_json(
    client: FlaskClient, engine: Engine, sub_1: dict[str, Any], body: bytes
) -> None:
    assert_error(
        client.post(PROJECT_URL, data=body, headers=signed_headers(body)), 400, "invalid_json"
    )
    assert_untouched(engine, sub_1)


@pytest.mark.parametrize(
    "payload",
    [[1, 2], {"hello": "world"}, {"id": "job_1"}, {"id": "evt_1", "object": "event", "data": 1}],
)
def test_json_that_is_no_job(
    client: FlaskClient, engine: Engine, sub_1: dict[str, Any], payload: Any
) -> None:
    assert_error(post(client, PROJECT_URL, payload), 422, "not_a_job")
    assert_untouched(engine, sub_1)


@pytest.mark.parametrize(
    "payload",
    [
        job_payload("job_\u0000"),
        job_payload("job_1", "failed", error="bad\u0000input"),
        job_payload(submission_id="sub_\u00001"),
        event_envelope(job_payload(), event_id="evt_\u0000"),
    ],
    ids=["job-id", "error", "metadata", "event-id"],
)
def test_nul_characters_are_refused_not_a_server_error(
    client: FlaskClient, engine: Engine, sub_1: dict[str, Any], payload: Any
) -> None:
    # PostgreSQL text cannot hold NUL; both databases answer alike.
    assert_error(post(client, PROJECT_URL, payload), 422, "not_a_job")
    assert_untouched(engine, sub_1)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_wrong_content_type(
    client: FlaskClient, engine: Engine, sub_1: dict[str, Any], content_type: str | None
) -> None:
    body = encode(job_payload())
    headers = signed_headers(body)
    del headers["Content-Type"]
    if content_type:
        headers["Content-Type"] = content_type
    for url in (PROJECT_URL, token_url()):
        assert_error(client.post(url, data=body, headers=headers), 415, "unsupported_media_type")
    assert_untouched(engine, sub_1)


def test_json_content_type_with_charset_is_accepted(
    client: FlaskClient, engine: Engine, sub_1: dict[str, Any]
) -> None:
    response = post(
        client,
        PROJECT_URL,
        job_payload(),
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert response.status_code == 200


def oversized_body() -> bytes:
    return encode(job_payload(padding="x" * 5000))


def test_oversized_body_with_content_length(app_config: dict[str, Any], database_url: str) -> None:
    app_config["MAX_BODY_BYTES"] = "4096"
    app = create_app(app_config)
    try:
        engine = get_engine(app)
        add_submission(engine)
        before = submission(engine)
        body = oversized_body()
        for url in (PROJECT_URL, token_url()):
            response = app.test_client().post(url, data=body, headers=signed_headers(body))
            assert_error(response, 413, "payload_too_large")
        assert_untouched(engine, before)
    finally:
        get_engine(app).dispose()


def test_oversized_chunked_body_without_content_length(
    app_config: dict[str, Any], database_url: str
) -> None:
    app_config["MAX_BODY_BYTES"] = "4096"
    app = create_app(app_config)
    try:
        engine = get_engine(app)
        add_submission(engine)
        before = submission(engine)
        body = oversized_body()
        headers = signed_headers(body)
        headers["Transfer-Encoding"] = "chunked"
        for url in (PROJECT_URL, token_url()):
            response = app.test_client().post(
                url,
                input_stream=io.BytesIO(body),
                headers=headers,
                # What a server that de-chunks the body (gunicorn) tells the app.
                environ_overrides={"wsgi.input_terminated": True},
            )
            assert_error(response, 413, "payload_too_large")
        assert_untouched(engine, before)
    finally:
        get_engine(app).dispose()


def test_unknown_route_and_wrong_method_answer_json(client: FlaskClient) -> None:
    assert_error(client.post("/webhooks/nowhere", data=b"{}"), 404, "not_found")
    response = client.get(PROJECT_URL)
    assert_error(response, 405, "method_not_allowed")
    assert "POST" in response.headers["Allow"]
    assert_error(client.get(token_url()), 405, "method_not_allowed")


# --- duplicates -----------------------------------------------------------------------------


def test_same_delivery_twice(client: FlaskClient, engine: Engine, sub_1: dict[str, Any]) -> None:
    payload = job_payload(updated_at=T_SECONDS)
    first = post(client, token_url(), payload, msg_id="msg_dup")
    after_first = submission(engine)
    second = post(client, token_url(), payload, msg_id="msg_dup")
    assert first.status_code == second.status_code == 200
    assert first.get_json()["outcome"] == "applied"
    assert second.get_json() == {
        "outcome": "duplicate",
        "submission_id": "sub_1",
        "status": "succeeded",
    }
    assert submission(engine) == after_first
    [event] = events(engine)
    assert event["outcome"] == "applied"


def test_same_event_without_webhook_id_is_deduplicated_by_event_id(
    app_config: dict[str, Any], database_url: str
) -> None:
    app_config.pop("ITTYBIT_WEBHOOK_SECRET")
    app = create_app(app_config)
    try:
        engine = get_engine(app)
        add_submission(engine)
        body = encode(event_envelope(job_payload(), event_id="evt_once"))
        headers = {"Content-Type": "application/json"}
        outcomes = [
            app.test_client().post(token_url(), data=body, headers=headers).get_json()["outcome"]
            for _ in range(2)
        ]
        assert outcomes == ["applied", "duplicate"]
        assert [event["dedupe_key"] for event in events(engine)] == ["evt:evt_once"]
    finally:
        get_engine(app).dispose()


def test_an_event_is_keyed_by_its_id_whatever_webhook_id_carries_it(
    client: FlaskClient, engine: Engine, sub_1: dict[str, Any]
) -> None:
    """One event sent to two endpoints (or listed by ittybit too) is stored once."""
    body = encode(event_envelope(job_payload(), event_id="evt_twice"))
    first = client.post(PROJECT_URL, data=body, headers=signed_headers(body, msg_id="msg_a"))
    again = client.post(PROJECT_URL, data=body, headers=signed_headers(body, msg_id="msg_b"))
    assert first.get_json()["outcome"] == "applied"
    assert again.get_json()["outcome"] == "duplicate"
    [event] = events(engine)
    assert (event["dedupe_key"], event["delivery_id"]) == ("evt:evt_twice", "msg_a")


def test_unmatched_delivery_twice_is_stored_once(client: FlaskClient, engine: Engine) -> None:
    payload = job_payload(submission_id="sub_later")
    first = post(client, PROJECT_URL, payload, msg_id="msg_u")
    second = post(client, PROJECT_URL, payload, msg_id="msg_u")
    assert (first.status_code, first.get_json()["outcome"]) == (202, "unmatched")
    assert (second.status_code, second.get_json()["outcome"]) == (200, "duplicate")
    assert len(events(engine)) == 1


def test_same_state_under_a_new_delivery_id_is_stored_as_duplicate(
    client: FlaskClient, engine: Engine, sub_1: dict[str, Any]
) -> None:
    payload = job_payload(updated_at=T_SECONDS)
    post(client, PROJECT_URL, payload, msg_id="msg_first")
    after_first = submission(engine)
    again = post(client, PROJECT_URL, payload, msg_id="msg_resent")
    assert again.status_code == 200
    assert again.get_json() == {
        "outcome": "duplicate",
        "submission_id": "sub_1",
        "status": "succeeded",
    }
    assert submission(engine) == after_first
    stored = [(event["dedupe_key"], event["outcome"]) for event in events(engine)]
    assert stored == [("wh:msg_first", "applied"), ("wh:msg_resent", "duplicate")]


def deliver_concurrently(
    app: Flask, requests: list[tuple[str, bytes, dict[str, str]]]
) -> list[tuple[int, dict[str, Any]]]:
    """Post every request from its own thread, all released at once; return the answers."""
    barrier = threading.Barrier(len(requests))
    results: list[tuple[int, dict[str, Any]]] = []
    lock = threading.Lock()

    def deliver(url: str, body: bytes, headers: dict[str, str]) -> None:
        client = app.test_client()
        barrier.wait()
        response = client.post(url, data=body, headers=headers)
        with lock:
            results.append((response.status_code, response.get_json()))

    threads = [threading.Thread(target=deliver, args=request) for request in requests]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return results


@pytest.mark.postgres
def test_eight_concurrent_copies_apply_once(
    app: Flask, engine: Engine, database_url: str, sub_1: dict[str, Any]
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("concurrent writers are a PostgreSQL scenario")
    body = encode(job_payload(updated_at=T_SECONDS))
    headers = signed_headers(body, msg_id="msg_race")
    results = deliver_concurrently(app, [(token_url(), body, headers)] * 8)
    assert len(results) == 8
    assert all(status == 200 for status, _ in results), results
    outcomes = sorted(payload["outcome"] for _, payload in results)
    assert outcomes == ["applied"] + ["duplicate"] * 7
    [event] = events(engine)
    assert (event["dedupe_key"], event["outcome"]) == ("wh:msg_race", "applied")
    assert submission(engine)["status"] == "succeeded"


@pytest.mark.postgres
def test_eight_concurrent_resends_under_new_ids_apply_once(
    app: Flask, engine: Engine, database_url: str, sub_1: dict[str, Any]
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("concurrent writers are a PostgreSQL scenario")
    body = encode(job_payload(updated_at=T_SECONDS))
    requests = [(PROJECT_URL, body, signed_headers(body, msg_id=f"msg_{n}")) for n in range(8)]
    results = deliver_concurrently(app, requests)
    assert len(results) == 8
    assert all(status == 200 for status, _ in results), results
    outcomes = sorted(payload["outcome"] for _, payload in results)
    assert outcomes == ["applied"] + ["duplicate"] * 7
    stored = sorted(event["outcome"] for event in events(engine))
    assert stored == ["applied"] + ["duplicate"] * 7
    assert submission(engine)["job_id"] == "job_abc123"


# --- ordering -------------------------------------------------------------------------------


def test_running_after_succeeded_is_stale(
    client: FlaskClient, engine: Engine, sub_1: dict[str, Any]
) -> None:
    post(client, PROJECT_URL, job_payload("job_o", "succeeded", updated_at=T_SECONDS), msg_id="m1")
    after_success = submission(engine)
    late = job_payload("job_o", "processing", updated_at=T_SECONDS + 60)
    response = post(client, PROJECT_URL, late, msg_id="m2")
    assert response.status_code == 200
    assert response.get_json() == {
        "outcome": "stale",
        "submission_id": "sub_1",
        "status": "succeeded",
    }
    assert submission(engine) == after_success
    stored = [(event["dedupe_key"], event["outcome"]) for event in events(engine)]
    assert stored == [("wh:m1", "applied"), ("wh:m2", "stale")]
    assert events(engine)[1]["reason"] == "submission is already succeeded"


def test_older_timestamp_after_newer_is_stale(
    client: FlaskClient, engine: Engine, sub_1: dict[str, Any]
) -> None:
    newer = job_payload("job_o", "finishing", updated_at=T_SECONDS * 1000)
    older = job_payload("job_o", "validating", updated_at="2024-05-01T11:59:00Z")
    assert post(client, token_url(), newer, msg_id="m1").get_json()["outcome"] == "applied"
    after_newer = submission(engine)
    response = post(client, token_url(), older, msg_id="m2")
    assert response.status_code == 200
    assert response.get_json()["outcome"] == "stale"
    assert submission(engine) == after_newer
    assert after_newer["provider_status"] == "finishing"
    assert [event["outcome"] for event in events(engine)] == ["applied", "stale"]


# --- metadata and owner mismatches ----------------------------------------------------------


@pytest.mark.parametrize(
    ("url_for", "payload", "recorded_submission"),
    [
        ("token", job_payload(user_id="user_2"), "sub_1"),
        ("token", job_payload(submission_id="sub_other"), "sub_1"),
        ("token-other-owner", job_payload(user_id=None), "sub_1"),
        ("project", job_payload(user_id="user_2"), "sub_1"),
    ],
    ids=["token-vs-meta-user", "token-vs-meta-submission", "token-vs-owner", "meta-vs-owner"],
)
def test_mismatch_is_rejected_and_recorded(
    client: FlaskClient,
    engine: Engine,
    sub_1: dict[str, Any],
    url_for: str,
    payload: dict[str, Any],
    recorded_submission: str,
) -> None:
    url = {
        "token": token_url(),
        "token-other-owner": token_url(user_id="user_2"),
        "project": PROJECT_URL,
    }[url_for]
    response = post(client, url, payload, msg_id="msg_bad")
    assert_error(response, 403, "rejected")
    assert submission(engine) == sub_1
    [event] = events(engine)
    assert event["outcome"] == "rejected"
    assert event["submission_id"] == recorded_submission
    assert event["dedupe_key"] == "wh:msg_bad"
    assert event["reason"]


def test_job_id_owned_by_another_submission_is_rejected(
    client: FlaskClient, engine: Engine, sub_1: dict[str, Any]
) -> None:
    add_submission(engine, "sub_2", job_id="job_taken")
    sub_2 = submission(engine, "sub_2")
    response = post(client, token_url(), job_payload("job_taken", submission_id=None))
    assert_error(response, 403, "rejected")
    assert submission(engine) == sub_1
    assert submission(engine, "sub_2") == sub_2
    [event] = events(engine)
    assert (event["outcome"], event["submission_id"]) == ("rejected", "sub_1")


def test_submission_with_another_job_rejects_a_foreign_job(
    client: FlaskClient, engine: Engine
) -> None:
    add_submission(engine, job_id="job_mine")
    before = submission(engine)
    response = post(client, token_url(), job_payload("job_theirs"))
    assert_error(response, 403, "rejected")
    assert submission(engine) == before
    assert [event["outcome"] for event in events(engine)] == ["rejected"]


# --- unmatched ------------------------------------------------------------------------------


@pytest.mark.parametrize("url_for", ["token", "project"])
def test_unmatched_is_kept(client: FlaskClient, engine: Engine, url_for: str) -> None:
    url = token_url("sub_new") if url_for == "token" else PROJECT_URL
    response = post(client, url, job_payload("job_n", submission_id="sub_new"), msg_id="msg_n")
    assert response.status_code == 202
    assert response.get_json() == {"outcome": "unmatched", "submission_id": "sub_new"}
    [event] = events(engine)
    assert event["outcome"] == "unmatched"
    assert event["submission_id"] == "sub_new"
    assert event["job_id"] == "job_n"
    assert event["reason"] == "no submission matches the job yet"


# --- database unavailable -------------------------------------------------------------------


def _closed_port_url(database_url: str) -> str:
    url = sa.make_url(database_url)
    return url.set(host="127.0.0.1", port=1).render_as_string(hide_password=False)


def test_database_unavailable_answers_503_and_stores_nothing(
    app_config: dict[str, Any], database_url: str
) -> None:
    setup_app = create_app(app_config)
    engine = get_engine(setup_app)
    add_submission(engine)
    before = submission(engine)
    holder: sqlite3.Connection | None = None
    if database_url.startswith("sqlite"):
        # Another process holds SQLite's write lock for longer than the busy timeout.
        holder = sqlite3.connect(sa.make_url(database_url).database or "", isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        broken = create_app({**app_config, "SQLITE_BUSY_TIMEOUT_MS": "50"})
    else:
        # PostgreSQL down: the same database, through a port nothing listens on.
        broken = create_app({**app_config, "DATABASE_URL": _closed_port_url(database_url)})
    body = encode(job_payload())
    headers = signed_headers(body, msg_id="msg_retry")
    try:
        response = broken.test_client().post(token_url(), data=body, headers=headers)
    finally:
        if holder is not None:
            holder.execute("ROLLBACK")
            holder.close()
        get_engine(broken).dispose()
    try:
        assert_error(response, 503, "database_unavailable")
        assert response.headers["Retry-After"] == "5"
        assert_untouched(engine, before)

        # Once the database is back, ittybit's retry of the same delivery is applied.
        retry = setup_app.test_client().post(token_url(), data=body, headers=headers)
        assert retry.status_code == 200
        assert retry.get_json()["outcome"] == "applied"
        assert [event["dedupe_key"] for event in events(engine)] == ["wh:msg_retry"]
    finally:
        engine.dispose()


def test_row_locked_past_the_lock_timeout_answers_503(
    client: FlaskClient, engine: Engine, database_url: str, sub_1: dict[str, Any]
) -> None:
    if database_url.startswith("sqlite"):
        pytest.skip("a row lock held by another writer is a PostgreSQL scenario")
    table = Submission.__table__  # type: ignore[attr-defined]
    body = encode(job_payload())
    headers = signed_headers(body, msg_id="msg_locked")
    with engine.connect() as holder, holder.begin():
        # Another transaction (a stuck reconciler, a long migration) holds the row.
        holder.execute(
            sa.select(table.c.id).where(table.c.submission_id == "sub_1").with_for_update()
        )
        response = client.post(token_url(), data=body, headers=headers)
    assert_error(response, 503, "database_unavailable")
    assert response.headers["Retry-After"] == "5"
    assert_untouched(engine, sub_1)
    retry = client.post(token_url(), data=body, headers=headers)
    assert retry.get_json()["outcome"] == "applied"


# --- logs -----------------------------------------------------------------------------------


def test_logs_carry_no_token_or_signature(
    client: FlaskClient, engine: Engine, sub_1: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    url = token_url()
    token = url.rsplit("/", 1)[1]
    body = encode(job_payload())
    good = signed_headers(body)
    bad = signed_headers(body, key=OTHER_WEBHOOK_KEY)
    with caplog.at_level(logging.DEBUG):
        assert client.post(url, data=body, headers=bad).status_code == 401
        assert client.post(url, data=body, headers=good).status_code == 200
        assert client.post(url + "x", data=body, headers=good).status_code == 401
    assert caplog.records, "expected the deliveries to be logged"
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert "msg_1" in text
    for secret in (token, good["webhook-signature"], bad["webhook-signature"], SECRET_KEY):
        assert secret not in text
        assert secret.removeprefix("v1,") not in text


def test_error_bodies_carry_no_secret(client: FlaskClient, sub_1: dict[str, Any]) -> None:
    url = token_url()
    body = encode(job_payload())
    headers = signed_headers(body, key=OTHER_WEBHOOK_KEY)
    response = client.post(url, data=body, headers=headers)
    text = response.get_data(as_text=True)
    assert response.status_code == 401
    assert url.rsplit("/", 1)[1] not in text
    assert headers["webhook-signature"].removeprefix("v1,") not in text
    assert json.loads(text)["error"] == "bad_signature"


# --- every documented event kind is answered 2xx and stored ---------------------------------


def _kind_event(kind: str, data: dict[str, Any], event_id: str) -> dict[str, Any]:
    return {
        "id": event_id,
        "object": "event",
        "kind": kind,
        "data": data,
        "created_at": int(datetime.now(UTC).timestamp()),
    }


@pytest.mark.parametrize(
    ("kind", "status"),
    [
        ("task.created", "processing"),
        ("task.updated", "processing"),
        ("task.succeeded", "succeeded"),
        ("task.failed", "failed"),
    ],
)
def test_each_task_kind_is_applied(
    client: FlaskClient, engine: Engine, sub_1: dict[str, Any], kind: str, status: str
) -> None:
    data = {"id": "task_1", "object": "task", "metadata": {"submission_id": "sub_1"}}
    response = post(client, PROJECT_URL, _kind_event(kind, data, "evt_t1"))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["outcome"] == "applied"
    assert submission(engine)["status"] == status
    [event] = events(engine)
    assert (event["dedupe_key"], event["outcome"]) == ("evt:evt_t1", "applied")


def test_a_run_naming_a_known_task_is_applied(client: FlaskClient, engine: Engine) -> None:
    add_submission(engine, job_id="task_42")
    run = {"id": "run_1", "object": "run", "status": "completed", "task_id": "task_42"}
    response = post(client, PROJECT_URL, _kind_event("run.completed", run, "evt_r1"))
    assert response.status_code == 200
    assert response.get_json()["outcome"] == "applied"
    assert submission(engine)["status"] == "succeeded"


def test_a_run_with_metadata_is_matched(
    client: FlaskClient, engine: Engine, sub_1: dict[str, Any]
) -> None:
    run = {"id": "run_2", "object": "run", "metadata": {"submission_id": "sub_1"}}
    response = post(client, PROJECT_URL, _kind_event("run.created", run, "evt_r2"))
    assert response.status_code == 200
    assert response.get_json() == {
        "outcome": "applied",
        "submission_id": "sub_1",
        "status": "processing",
    }


def test_a_run_about_another_job_is_kept_as_ignored(client: FlaskClient, engine: Engine) -> None:
    add_submission(engine, job_id="task_1")
    before = submission(engine)
    run = {"id": "run_3", "status": "failed", "metadata": {"submission_id": "sub_1"}}
    response = post(client, PROJECT_URL, _kind_event("run.failed", run, "evt_r3"))
    assert response.status_code == 200
    assert response.get_json()["outcome"] == "ignored"
    assert submission(engine) == before
    [event] = events(engine)
    assert event["outcome"] == "ignored"


def test_an_unknown_kind_is_stored_as_ignored_and_answered_200(
    client: FlaskClient, engine: Engine, sub_1: dict[str, Any]
) -> None:
    payload = _kind_event("media.created", {"id": "med_1", "object": "media"}, "evt_m1")
    response = post(client, PROJECT_URL, payload)
    assert response.status_code == 200
    assert response.get_json() == {"outcome": "ignored"}
    [event] = events(engine)
    assert (event["dedupe_key"], event["outcome"], event["source"]) == (
        "evt:evt_m1",
        "ignored",
        "endpoint",
    )
    assert "media.created" in event["reason"]
    assert submission(engine) == sub_1
    again = post(client, PROJECT_URL, payload)
    assert (again.status_code, again.get_json()) == (200, {"outcome": "duplicate"})
    assert len(events(engine)) == 1
