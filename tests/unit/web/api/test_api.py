"""The application API through ``app.test_client()``, on SQLite and PostgreSQL.

Creates go to the real ittybit stand-in (``devtools/standin``) on 127.0.0.1, or to a
local HTTP server scripted to fail; nothing leaves the machine.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from pytest_httpserver import HTTPServer
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from werkzeug.wrappers import Request, Response

from devtools.standin import Standin, StandinConfig
from receiver.core.signing import verify_webhook_token
from receiver.flows.api_keys import revoke_key
from receiver.flows.records import submission_json
from receiver.ittybit.client import idempotency_key
from receiver.store.models import IdempotentRequest, Submission, WebhookEvent, utcnow
from tests.api_helpers import (
    INPUT,
    bearer,
    body,
    built,
    created_jobs,
    meta_pairs,
    standin_job,
    stored,
    use_standin,
)
from tests.helpers import SECRET_KEY, WEBHOOK_SECRET, encode, job_payload, signed_headers

_submissions = Submission.__table__  # type: ignore[attr-defined]
_events = WebhookEvent.__table__  # type: ignore[attr-defined]


@pytest.fixture
def standin() -> Iterator[Standin]:
    # Jobs stay queued for the test's length: no delivery is attempted.
    with Standin(StandinConfig(step=3600)).start() as running:
        yield running


@pytest.fixture
def with_standin(app_config: dict[str, Any], standin: Standin, no_retry_waits: None) -> Standin:
    use_standin(app_config, standin)
    return standin


@pytest.fixture
def headers(app: Flask) -> dict[str, str]:
    return bearer(app)


def error_of(response: Any) -> dict[str, Any]:
    payload: dict[str, Any] = response.get_json()
    assert set(payload) <= {"error", "message", "field"}, payload
    assert isinstance(payload["error"], str) and isinstance(payload["message"], str)
    return payload


# --- keys -------------------------------------------------------------------------------------


def test_every_request_needs_a_key(client: FlaskClient) -> None:
    for method, path in (
        ("GET", "/api/v1/submissions"),
        ("GET", "/api/v1/submissions/sub_1"),
        ("POST", "/api/v1/submissions"),
        ("PUT", "/api/v1/submissions/sub_1"),
        ("GET", "/api/v1/submissions/sub_1/events"),
        ("POST", "/api/v1/submissions/sub_1/reconcile"),
        ("GET", "/api/v1/notifications"),
        ("GET", "/api/v1/notifications/1/attempts"),
    ):
        response = client.open(path, method=method, json={})
        assert response.status_code == 401, (method, path)
        assert error_of(response)["error"] == "unauthorized"
        assert response.headers["WWW-Authenticate"] == "Bearer"


def test_unknown_and_revoked_keys_are_refused(app: Flask, client: FlaskClient) -> None:
    headers = bearer(app, "app")
    assert client.get("/api/v1/submissions", headers=headers).status_code == 200
    wrong = {"Authorization": headers["Authorization"][:-1] + "x"}
    assert client.get("/api/v1/submissions", headers=wrong).status_code == 401
    basic = {"Authorization": "Basic " + headers["Authorization"].removeprefix("Bearer ")}
    assert client.get("/api/v1/submissions", headers=basic).status_code == 401

    revoke_key(app.extensions["jobhooks.engine"], "app", now=utcnow())
    response = client.get("/api/v1/submissions", headers=headers)
    assert response.status_code == 401
    assert "revoked" in error_of(response)["message"]


def test_the_key_is_never_logged_but_its_name_is(
    app: Flask, client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    headers = bearer(app, "billing-service")
    key = headers["Authorization"].removeprefix("Bearer ")
    with caplog.at_level(logging.DEBUG):
        client.get("/api/v1/submissions", headers=headers)
        client.get("/api/v1/submissions", headers={"Authorization": f"Bearer {key}x"})
    lines = [record for record in caplog.records if record.name == "jobhooks.request"]
    assert [line.data["status"] for line in lines] == [200, 401]  # type: ignore[attr-defined]
    assert lines[0].data["api_key"] == "billing-service"  # type: ignore[attr-defined]
    everything = "\n".join(f"{record.getMessage()} {record.__dict__}" for record in caplog.records)
    assert key not in everything
    assert key[3:20] not in everything


def test_last_use_is_recorded(app: Flask, client: FlaskClient, engine: Engine) -> None:
    headers = bearer(app, "app")
    with engine.connect() as conn:
        before = conn.execute(sa.text("SELECT last_used_at FROM api_keys")).scalar_one()
    assert before is None
    client.get("/api/v1/submissions", headers=headers)
    with engine.connect() as conn:
        after = conn.execute(sa.text("SELECT last_used_at FROM api_keys")).scalar_one()
    assert after is not None


# --- create -----------------------------------------------------------------------------------


def test_create_makes_the_job_with_metadata_and_signed_webhook_url(
    with_standin: Standin, client: FlaskClient, headers: dict[str, str], engine: Engine
) -> None:
    response = client.post(
        "/api/v1/submissions",
        json=body(metadata={"campaign": "summer-launch"}, options={"width": 640}),
        headers=headers,
    )
    assert response.status_code == 201, response.get_json()
    answer = response.get_json()
    assert response.headers["Location"] == "/api/v1/submissions/sub_1"
    assert answer["submission_id"] == "sub_1"
    assert answer["status"] == "processing"
    assert answer["job_id"].startswith("job_")
    assert answer["metadata"] == {"campaign": "summer-launch"}

    job = standin_job(with_standin, answer["job_id"])
    assert job["metadata"] == {
        "campaign": "summer-launch",
        "submission_id": "sub_1",
        "user_id": "user_1",
    }
    assert job["options"] == {"width": 640}
    assert "webhook_url" not in answer  # a bearer credential: only ittybit gets it
    token = job["webhook_url"].rsplit("/", 1)[1]
    claims = verify_webhook_token([SECRET_KEY], token)
    assert (claims.submission_id, claims.user_id) == ("sub_1", "user_1")
    assert created_jobs(with_standin) == 1
    row = stored(engine, "sub_1")
    assert (row["job_kind"], row["job_options"]) == ("video", {"width": 640})
    assert ("sub_1", "campaign", "summer-launch") in meta_pairs(engine)


def test_the_same_create_again_answers_200_and_makes_no_second_job(
    with_standin: Standin, client: FlaskClient, headers: dict[str, str]
) -> None:
    first = client.post("/api/v1/submissions", json=body(), headers=headers)
    again = client.post("/api/v1/submissions", json=body(), headers=headers)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.get_json()["job_id"] == first.get_json()["job_id"]
    assert created_jobs(with_standin) == 1


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"user_id": "someone_else"}, "user_id"),
        ({"input_url": "https://uploads.example.com/other.mp4"}, "input_url"),
        ({"metadata": {"campaign": "other"}}, "metadata"),
        ({"kind": "image"}, "kind"),
        ({"options": {"width": 1}}, "options"),
    ],
)
def test_an_existing_id_with_other_data_is_409(
    with_standin: Standin,
    client: FlaskClient,
    headers: dict[str, str],
    change: dict[str, Any],
    field: str,
) -> None:
    assert client.post("/api/v1/submissions", json=body(), headers=headers).status_code == 201
    response = client.post("/api/v1/submissions", json=body(**change), headers=headers)
    assert response.status_code == 409
    assert error_of(response) == {
        "error": "conflict",
        "message": error_of(response)["message"],
        "field": field,
    }
    assert created_jobs(with_standin) == 1


def test_ittybit_down_stores_it_pending_with_202(
    app: Flask, client: FlaskClient, headers: dict[str, str], engine: Engine, no_retry_waits: None
) -> None:
    # ITTYBIT_API_URL points at 127.0.0.1:9, where nothing listens.
    response = client.post(
        "/api/v1/submissions",
        json=body(kind="audio", options={"format": "mp3"}, metadata={"campaign": "c"}),
        headers=headers,
    )
    assert response.status_code == 202
    answer = response.get_json()
    assert (answer["status"], answer["job_id"]) == ("pending", None)
    assert "submit failed" in answer["error"]
    row = stored(engine, "sub_1")
    assert (row["job_kind"], row["job_options"], row["meta"]) == (
        "audio",
        {"format": "mp3"},
        {"campaign": "c"},
    )
    assert row["job_requested_at"] is not None


class JobsEndpoint:
    """``POST /jobs`` answering one scripted status."""

    def __init__(self, server: HTTPServer, status: int, headers: dict[str, str] | None = None):
        self.status = status
        self.headers = headers or {}
        self.requests: list[Request] = []
        server.expect_request("/jobs", method="POST").respond_with_handler(self)

    def __call__(self, request: Request) -> Response:
        self.requests.append(request)
        payload = json.dumps({"error": {"message": f"scripted {self.status}"}})
        return Response(payload, self.status, self.headers, content_type="application/json")


@pytest.mark.parametrize("status", [500, 503, 429])
def test_ittybit_5xx_or_429_stores_it_pending_with_202(
    ittybit_api: HTTPServer,
    app: Flask,
    client: FlaskClient,
    headers: dict[str, str],
    engine: Engine,
    status: int,
) -> None:
    jobs = JobsEndpoint(ittybit_api, status, {"Retry-After": "1"} if status == 429 else None)
    response = client.post("/api/v1/submissions", json=body(), headers=headers)
    assert response.status_code == 202
    assert response.get_json()["status"] == "pending"
    assert jobs.requests  # it was asked
    assert {request.headers["Idempotency-Key"] for request in jobs.requests} == {
        idempotency_key("sub_1")
    }
    assert stored(engine, "sub_1")["job_requested_at"] is not None


def test_a_job_ittybit_refuses_is_422_and_not_asked_for_again(
    ittybit_api: HTTPServer,
    app: Flask,
    client: FlaskClient,
    headers: dict[str, str],
    engine: Engine,
) -> None:
    JobsEndpoint(ittybit_api, 422)
    response = client.post("/api/v1/submissions", json=body(), headers=headers)
    assert response.status_code == 422
    assert error_of(response)["error"] == "job_refused"
    assert "scripted 422" in error_of(response)["message"]
    row = stored(engine, "sub_1")
    assert (row["status"], row["job_id"], row["job_requested_at"]) == ("pending", None, None)


def test_without_an_ittybit_key_create_is_503(
    app_config: dict[str, Any], client: FlaskClient, headers: dict[str, str], engine: Engine
) -> None:
    # The fixture's app has an ittybit key; build another without it, on the same database.
    with built({**app_config, "ITTYBIT_API_KEY": ""}) as app:
        response = app.test_client().post("/api/v1/submissions", json=body(), headers=headers)
    assert response.status_code == 503
    assert error_of(response)["error"] == "ittybit_not_configured"
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(_submissions)).scalar() == 0


@pytest.mark.parametrize(
    ("payload", "status", "code", "field"),
    [
        ({"user_id": "u", "input_url": INPUT}, 422, "validation_error", "submission_id"),
        (body(input_url="ftp://x/y.mp4"), 422, "validation_error", "input_url"),
        (body(submission_id="test_1"), 422, "validation_error", "submission_id"),
        (body(user_id="a\x00b"), 422, "validation_error", "user_id"),
        (body(submission_id="x" * 201), 422, "validation_error", "submission_id"),
        (body(metadata={"user_id": "x"}), 422, "validation_error", "metadata.user_id"),
        (body(metadata=[1]), 422, "validation_error", "metadata"),
        (body(surprise=1), 422, "validation_error", "surprise"),
    ],
)
def test_invalid_creates_name_the_field(
    client: FlaskClient,
    headers: dict[str, str],
    payload: dict[str, Any],
    status: int,
    code: str,
    field: str,
) -> None:
    response = client.post("/api/v1/submissions", json=payload, headers=headers)
    assert response.status_code == status
    error = error_of(response)
    assert (error["error"], error.get("field")) == (code, field)


def test_a_body_that_is_not_json_is_400_or_415(
    client: FlaskClient, headers: dict[str, str]
) -> None:
    response = client.post(
        "/api/v1/submissions",
        data=b"{not json",
        headers={**headers, "Content-Type": "application/json"},
    )
    assert (response.status_code, error_of(response)["error"]) == (400, "invalid_json")
    response = client.post(
        "/api/v1/submissions", data=b"a=b", headers={**headers, "Content-Type": "text/plain"}
    )
    assert (response.status_code, error_of(response)["error"]) == (415, "unsupported_media_type")


# --- idempotency ------------------------------------------------------------------------------


def test_an_idempotency_key_replays_the_first_answer(
    with_standin: Standin, app: Flask, client: FlaskClient, headers: dict[str, str]
) -> None:
    keyed = {**headers, "Idempotency-Key": "create-sub-1"}
    first = client.post("/api/v1/submissions", json=body(), headers=keyed)
    # Another client changed the submission meanwhile; the retry still gets the first answer.
    again = client.post("/api/v1/submissions", json=body(), headers=keyed)
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.get_data() == first.get_data()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert created_jobs(with_standin) == 1

    other_body = client.post(
        "/api/v1/submissions", json=body(metadata={"campaign": "x"}), headers=keyed
    )
    assert other_body.status_code == 422
    assert error_of(other_body)["error"] == "idempotency_key_reused"
    assert error_of(other_body)["field"] == "Idempotency-Key"

    # Keys belong to one API key: another application's same Idempotency-Key is its own.
    other_app = {**bearer(app, "other"), "Idempotency-Key": "create-sub-1"}
    response = client.post("/api/v1/submissions", json=body("sub_2"), headers=other_app)
    assert response.status_code == 201
    assert response.get_json()["submission_id"] == "sub_2"


def test_a_refused_answer_is_replayed_too_but_a_5xx_is_not_kept(
    app: Flask, client: FlaskClient, headers: dict[str, str], engine: Engine
) -> None:
    keyed = {**headers, "Idempotency-Key": "k1"}
    bad = body(input_url="ftp://nope")
    first = client.post("/api/v1/submissions", json=bad, headers=keyed)
    assert first.status_code == 422
    again = client.post("/api/v1/submissions", json=bad, headers=keyed)
    assert (again.status_code, again.headers.get("Idempotent-Replayed")) == (422, "true")
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT status FROM api_idempotency")).scalars().all()
    assert rows == [422]


def test_answers_kept_past_a_day_are_deleted_as_new_ones_are_stored(
    client: FlaskClient, headers: dict[str, str], engine: Engine
) -> None:
    table = IdempotentRequest.__table__  # type: ignore[attr-defined]
    with engine.begin() as conn:
        key_id = conn.execute(sa.text("SELECT id FROM api_keys")).scalar_one()
        now = utcnow()
        rows = [(f"old-{n}", now - timedelta(hours=25, minutes=n)) for n in range(150)]
        rows += [(f"recent-{n}", now - timedelta(hours=23)) for n in range(3)]
        conn.execute(
            sa.insert(table),
            [
                {
                    "api_key_id": key_id,
                    "idempotency_key": name,
                    "request_hash": "0" * 64,
                    "status": 201,
                    "body": "{}",
                    "created_at": at,
                }
                for name, at in rows
            ],
        )

    def kept() -> list[str]:
        with engine.connect() as conn:
            names = conn.execute(sa.text("SELECT idempotency_key FROM api_idempotency"))
            return sorted(names.scalars())

    bad = body(input_url="ftp://nope")  # a 422: an answer kept like any other
    first = client.post(
        "/api/v1/submissions", json=bad, headers={**headers, "Idempotency-Key": "a"}
    )
    assert first.status_code == 422
    # The oldest 100 went with it; the 50 newest of the old, the recent ones and "a" stay.
    assert kept() == sorted(
        ["a", *(f"old-{n}" for n in range(50)), *(f"recent-{n}" for n in range(3))]
    )
    second = client.post(
        "/api/v1/submissions", json=bad, headers={**headers, "Idempotency-Key": "b"}
    )
    assert second.status_code == 422
    assert kept() == ["a", "b", "recent-0", "recent-1", "recent-2"]
    replayed = client.post(
        "/api/v1/submissions", json=bad, headers={**headers, "Idempotency-Key": "a"}
    )
    assert replayed.headers.get("Idempotent-Replayed") == "true"


@pytest.mark.parametrize("value", ["", "x" * 201, "two words"])
def test_a_malformed_idempotency_key_is_400(
    client: FlaskClient, headers: dict[str, str], value: str
) -> None:
    response = client.post(
        "/api/v1/submissions", json=body(), headers={**headers, "Idempotency-Key": value}
    )
    assert response.status_code == 400
    assert error_of(response)["field"] == "Idempotency-Key"


# --- register ---------------------------------------------------------------------------------


def test_register_stores_it_and_matches_its_waiting_webhooks(
    client: FlaskClient, headers: dict[str, str], engine: Engine
) -> None:
    payload = encode(job_payload("job_app_1", "succeeded", submission_id="sub_9", user_id="u9"))
    early = client.post("/webhooks/ittybit", data=payload, headers=signed_headers(payload))
    assert (early.status_code, early.get_json()["outcome"]) == (202, "unmatched")

    registration = {"user_id": "u9", "input_url": INPUT, "job_id": "job_app_1"}
    response = client.put("/api/v1/submissions/sub_9", json=registration, headers=headers)
    assert response.status_code == 201, response.get_json()
    answer = response.get_json()
    assert (answer["status"], answer["job_id"]) == ("succeeded", "job_app_1")
    assert answer["output_url"] == "https://cdn.example.com/job_app_1.mp4"
    with engine.connect() as conn:
        outcome = conn.execute(sa.select(_events.c.outcome)).scalar_one()
    assert outcome == "applied"
    assert stored(engine, "sub_9")["job_requested_at"] is None  # its job is made elsewhere

    again = client.put("/api/v1/submissions/sub_9", json=registration, headers=headers)
    assert again.status_code == 200
    assert again.get_json() == answer


def test_register_refuses_another_owner_and_other_data(
    client: FlaskClient, headers: dict[str, str]
) -> None:
    registration = {"user_id": "u9", "input_url": INPUT, "metadata": {"a": "1"}}
    assert (
        client.put("/api/v1/submissions/s", json=registration, headers=headers).status_code == 201
    )
    owner = client.put(
        "/api/v1/submissions/s", json={**registration, "user_id": "u8"}, headers=headers
    )
    assert (owner.status_code, error_of(owner)["field"]) == (409, "user_id")
    assert "another owner" in error_of(owner)["message"]
    data = client.put(
        "/api/v1/submissions/s", json={**registration, "metadata": {"a": "2"}}, headers=headers
    )
    assert (data.status_code, error_of(data)["field"]) == (409, "metadata")


def test_register_refuses_a_job_id_of_another_submission(
    client: FlaskClient, headers: dict[str, str]
) -> None:
    first = {"user_id": "u", "input_url": INPUT, "job_id": "job_shared"}
    assert client.put("/api/v1/submissions/a", json=first, headers=headers).status_code == 201
    response = client.put("/api/v1/submissions/b", json=first, headers=headers)
    assert (response.status_code, error_of(response)["field"]) == (409, "job_id")


# --- read -------------------------------------------------------------------------------------


def test_get_answers_what_submissions_show_prints(
    app: Flask, client: FlaskClient, headers: dict[str, str]
) -> None:
    runner = app.test_cli_runner()
    added = runner.invoke(
        args=["submissions", "add", "sub_5", "--user-id", "u", "--input", INPUT, "--meta", "k=v"]
    )
    assert added.exit_code == 0, added.output
    shown = runner.invoke(args=["submissions", "show", "sub_5"])
    response = client.get("/api/v1/submissions/sub_5", headers=headers)
    assert response.status_code == 200
    assert response.get_json() == json.loads(shown.stdout)

    missing = client.get("/api/v1/submissions/nope", headers=headers)
    assert (missing.status_code, error_of(missing)["error"]) == (404, "not_found")


def test_a_get_checks_the_key_and_reads_on_one_connection_given_back_after(
    app: Flask, client: FlaskClient, engine: Engine, headers: dict[str, str]
) -> None:
    runner = app.test_cli_runner()
    added = runner.invoke(args=["submissions", "add", "sub_6", "--user-id", "u", "--input", INPUT])
    assert added.exit_code == 0, added.output
    client.get("/api/v1/submissions/sub_6", headers=headers)  # the key's first use is written
    checkouts: list[object] = []

    def checked_out(*_: object) -> None:
        checkouts.append(_)

    sa.event.listen(engine, "checkout", checked_out)
    try:
        for path in (
            "/api/v1/submissions/sub_6",
            "/api/v1/submissions",
            "/api/v1/submissions/sub_6/events",
            "/api/v1/notifications",
        ):
            assert client.get(path, headers=headers).status_code == 200, path
            assert (len(checkouts), engine.pool.checkedout()) == (1, 0), path
            checkouts.clear()
        assert client.get("/api/v1/submissions/nope", headers=headers).status_code == 404
        wrong = {"Authorization": "Bearer jh_wrong"}
        assert client.get("/api/v1/submissions", headers=wrong).status_code == 401
        same = {"user_id": "u", "input_url": INPUT}
        put = client.put("/api/v1/submissions/sub_6", json=same, headers=headers)
        assert put.status_code == 200, put.get_json()
        assert engine.pool.checkedout() == 0
    finally:
        sa.event.remove(engine, "checkout", checked_out)


_ticks = itertools.count()


def test_answers_keep_the_keys_in_the_order_written(
    client: FlaskClient, headers: dict[str, str], engine: Engine
) -> None:
    """A page is not sorted key by key (a quarter of encoding an owner's page of 100):
    each object reads as the document lays it out, the submission's id first."""
    _add(engine, 2, tag="o")
    response = client.get("/api/v1/submissions?user_id=u1&limit=1", headers=headers)
    assert response.status_code == 200
    page = json.loads(response.data, object_pairs_hook=list)
    assert page[0][0] == "data"
    first = page[0][1][0]
    assert [key for key, _ in first[:3]] == ["submission_id", "user_id", "input_url"]


def _add(engine: Engine, count: int, **columns: Any) -> None:
    """Insert ``count`` submissions, each changed a second after the one added before it."""
    start = utcnow() - timedelta(days=1)
    rows = []
    for n in range(count):
        values = {
            "submission_id": f"sub_{columns.get('tag', 'x')}_{n}",
            "user_id": "u1",
            "input_url": INPUT,
            "status": "processing",
            "meta": {},
            "created_at": start,
            "updated_at": start + timedelta(seconds=next(_ticks)),
        }
        values.update({key: value for key, value in columns.items() if key != "tag"})
        rows.append(values)
    with engine.begin() as conn:
        conn.execute(sa.insert(_submissions), rows)


def test_list_filters_and_pages(
    client: FlaskClient, headers: dict[str, str], engine: Engine
) -> None:
    _add(engine, 5, tag="a", status="succeeded", meta={"campaign": "summer-launch", "n": 1})
    _add(engine, 4, tag="b", status="processing", user_id="u2", meta={"campaign": "winter"})
    _add(engine, 3, tag="c", status="failed", meta={"campaign": "summer-launch", "vip": True})

    def ids(query: str) -> list[str]:
        response = client.get(f"/api/v1/submissions?{query}", headers=headers)
        assert response.status_code == 200, response.get_json()
        return [item["submission_id"] for item in response.get_json()["data"]]

    everything = ids("")
    assert len(everything) == 12
    assert everything[:3] == ["sub_c_2", "sub_c_1", "sub_c_0"]  # newest change first
    assert set(ids("status=succeeded")) == {f"sub_a_{n}" for n in range(5)}
    assert set(ids("user_id=u2")) == {f"sub_b_{n}" for n in range(4)}
    assert set(ids("meta.campaign=summer-launch")) == {
        *(f"sub_a_{n}" for n in range(5)),
        *(f"sub_c_{n}" for n in range(3)),
    }
    assert set(ids("meta.campaign=summer-launch&status=failed")) == {f"sub_c_{n}" for n in range(3)}
    assert set(ids("meta.campaign=summer-launch&meta.vip=true")) == {f"sub_c_{n}" for n in range(3)}
    assert len(ids("meta.n=1")) == 5
    assert ids("meta.campaign=nothing") == []

    with engine.connect() as conn:
        moment = conn.execute(
            sa.select(_submissions.c.updated_at).where(_submissions.c.submission_id == "sub_c_0")
        ).scalar_one()
    assert ids(f"updated_after={moment.isoformat().replace('+', '%2B')}") == ["sub_c_2", "sub_c_1"]

    seen: list[str] = []
    cursor = None
    while True:
        query = "limit=5" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(f"/api/v1/submissions?{query}", headers=headers).get_json()
        seen += [item["submission_id"] for item in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == everything


def test_pages_show_each_submission_as_submissions_show_prints_it(
    client: FlaskClient, headers: dict[str, str], engine: Engine
) -> None:
    """Pages build their objects from the driver's rows: every field as the one rule gives."""
    _add(engine, 3, tag="a", meta={"campaign": "été ☀", "n": "1"}, job_id=None)
    _add(
        engine,
        4,
        tag="b",
        meta={"campaign": "été ☀"},
        status="failed",
        provider_status="failed",
        error="codec",
        output_url="https://cdn.example.com/v.mp4",
        provider_updated_at=datetime(2026, 7, 1, 23, 30, tzinfo=timezone(timedelta(hours=-5))),
    )
    _add(engine, 2, tag="c", created_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    with Session(engine) as session:
        expected = {
            submission.submission_id: json.loads(json.dumps(submission_json(submission)))
            for submission in session.exec(select(Submission))
        }

    def walk(query: str) -> list[dict[str, Any]]:
        """Every item of a filter, two a page, through the cursors."""
        items: list[dict[str, Any]] = []
        cursor = None
        while True:
            suffix = f"&cursor={cursor}" if cursor else ""
            response = client.get(f"/api/v1/submissions?{query}&limit=2{suffix}", headers=headers)
            assert response.status_code == 200, response.get_json()
            page = response.get_json()
            items += page["data"]
            cursor = page["next_cursor"]
            if cursor is None:
                return items

    walks = {"": 9, "user_id=u1": 9, "meta.campaign=été ☀": 7, "status=failed": 4}
    for query, count in walks.items():
        items = walk(query)
        assert len(items) == count, query
        assert items == [expected[item["submission_id"]] for item in items], query
        assert [item["updated_at"] for item in items] == sorted(
            (item["updated_at"] for item in items), reverse=True
        ), query
    one = client.get("/api/v1/submissions/sub_b_0", headers=headers)
    assert one.get_json() == expected["sub_b_0"]
    assert expected["sub_b_0"]["provider_updated_at"] == "2026-07-02T04:30:00+00:00"


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=501", "limit"),
        ("limit=0", "limit"),
        ("status=nope", "status"),
        ("updated_after=yesterday", "updated_after"),
        ("updated_after=2026-01-01T00:00:00", "updated_after"),
        ("cursor=bm9wZQ", "cursor"),
        ("colour=red", "colour"),
        ("meta.=x", "meta."),
    ],
)
def test_list_refuses_bad_parameters_with_400(
    client: FlaskClient, headers: dict[str, str], query: str, field: str
) -> None:
    response = client.get(f"/api/v1/submissions?{query}", headers=headers)
    assert response.status_code == 400
    assert error_of(response)["field"] == field


def test_list_leaves_test_submissions_out(
    app: Flask, client: FlaskClient, headers: dict[str, str], engine: Engine
) -> None:
    _add(engine, 2, tag="real")
    _add(engine, 1, tag="test", is_test=True)
    response = client.get("/api/v1/submissions", headers=headers)
    assert {item["submission_id"] for item in response.get_json()["data"]} == {
        "sub_real_0",
        "sub_real_1",
    }


def test_metadata_pairs_follow_every_change_of_metadata(engine: Engine) -> None:
    _add(engine, 1, tag="m", meta={"a": "1", "b": 2.5, "c": False, "d": None, "e": [1]})
    assert meta_pairs(engine) == {
        ("sub_m_0", "a", "1"),
        ("sub_m_0", "b", "2.5"),
        ("sub_m_0", "c", "false"),
    }
    with engine.begin() as conn:
        conn.execute(sa.update(_submissions).values(meta={"a": "2", "long": "x" * 201}))
    assert meta_pairs(engine) == {("sub_m_0", "a", "2")}
    with engine.begin() as conn:
        conn.execute(sa.update(_submissions).values(status="succeeded"))
        conn.execute(sa.delete(_submissions))
    assert meta_pairs(engine) == set()


# --- events -----------------------------------------------------------------------------------


def test_events_show_deliveries_and_polls_without_secrets(
    client: FlaskClient, headers: dict[str, str], engine: Engine
) -> None:
    registration = {"user_id": "user_1", "input_url": INPUT, "job_id": "job_abc123"}
    assert (
        client.put("/api/v1/submissions/sub_1", json=registration, headers=headers).status_code
        == 201
    )
    payload = encode(job_payload("job_abc123", "processing"))
    delivery_headers = signed_headers(payload, msg_id="msg_events")
    assert (
        client.post("/webhooks/ittybit", data=payload, headers=delivery_headers).status_code == 200
    )
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO polls (submission_id, job_id, polled_at, source, result, detail)"
                " VALUES ('sub_1', 'job_abc123', :now, 'api', 'unchanged', 'still running')"
            ),
            {"now": utcnow().replace(tzinfo=None) if engine.dialect.name == "sqlite" else utcnow()},
        )
    response = client.get("/api/v1/submissions/sub_1/events", headers=headers)
    assert response.status_code == 200
    data = response.get_json()["data"]
    assert [(entry["kind"], entry.get("outcome"), entry.get("result")) for entry in data] == [
        ("delivery", "applied", None),
        ("poll", None, "unchanged"),
    ]
    assert data[0]["delivery_id"] == "msg_events"
    assert data[0]["headers"]["webhook-id"] == "msg_events"
    text = response.get_data(as_text=True)
    assert "webhook-signature" not in text
    assert delivery_headers["webhook-signature"].removeprefix("v1,") not in text

    missing = client.get("/api/v1/submissions/nope/events", headers=headers)
    assert missing.status_code == 404


# --- reconcile --------------------------------------------------------------------------------


def test_reconcile_applies_what_ittybit_says(
    with_standin: Standin, client: FlaskClient, headers: dict[str, str], engine: Engine
) -> None:
    created = client.post("/api/v1/submissions", json=body(), headers=headers).get_json()
    assert created["status"] == "processing"
    with engine.begin() as conn:  # the job is gone from ittybit's side: it answers 404
        conn.execute(sa.update(_submissions).values(job_id="job_gone"))
    response = client.post("/api/v1/submissions/sub_1/reconcile", headers=headers)
    assert response.status_code == 200, response.get_json()
    assert (response.get_json()["status"], response.get_json()["error"]) == (
        "failed",
        "job not found",
    )
    events = client.get("/api/v1/submissions/sub_1/events", headers=headers).get_json()["data"]
    assert [(entry["kind"], entry["source"], entry["result"]) for entry in events] == [
        ("poll", "api", "failed")
    ]


@pytest.fixture
def short_budget(app_config: dict[str, Any]) -> float:
    app_config["API_ITTYBIT_BUDGET"] = "500ms"
    return 0.5


def test_reconcile_answers_502_and_504_when_ittybit_cannot(
    short_budget: float,
    ittybit_api: HTTPServer,
    client: FlaskClient,
    headers: dict[str, str],
) -> None:
    registration = {"user_id": "u", "input_url": INPUT, "job_id": "job_1"}
    assert (
        client.put("/api/v1/submissions/s", json=registration, headers=headers).status_code == 201
    )
    ittybit_api.expect_request("/jobs/job_1").respond_with_json({"error": "boom"}, status=400)
    response = client.post("/api/v1/submissions/s/reconcile", headers=headers)
    assert (response.status_code, error_of(response)["error"]) == (502, "ittybit_error")
    assert "HTTP 400" in error_of(response)["message"]

    ittybit_api.clear()

    def slow(request: Request) -> Response:
        time.sleep(1.5)
        return Response("{}", 200, content_type="application/json")

    ittybit_api.expect_request("/jobs/job_1").respond_with_handler(slow)
    started = time.monotonic()
    response = client.post("/api/v1/submissions/s/reconcile", headers=headers)
    elapsed = time.monotonic() - started
    assert (response.status_code, error_of(response)["error"]) == (504, "ittybit_timeout")
    assert "0.5s budget" in error_of(response)["message"]
    assert elapsed < short_budget + 0.5


def test_reconcile_without_a_job_or_on_an_unknown_id(
    client: FlaskClient, headers: dict[str, str], app: Flask
) -> None:
    registration = {"user_id": "u", "input_url": INPUT}
    assert (
        client.put("/api/v1/submissions/s", json=registration, headers=headers).status_code == 201
    )
    response = client.post("/api/v1/submissions/s/reconcile", headers=headers)
    assert (response.status_code, error_of(response)["error"]) == (409, "no_job")
    missing = client.post("/api/v1/submissions/nope/reconcile", headers=headers)
    assert missing.status_code == 404


# --- notifications ----------------------------------------------------------------------------


def test_notifications_list_the_outbox_page_by_page(
    app_config: dict[str, Any], engine: Engine
) -> None:
    config = {
        **app_config,
        "NOTIFY_URL": "https://app.example.com/hooks?token=s3cret",
        "NOTIFY_SECRET": WEBHOOK_SECRET,
    }
    with built(config) as app:
        _check_notifications(app)


def _check_notifications(app: Flask) -> None:
    client = app.test_client()
    headers = bearer(app)
    for n in range(3):
        registration = {"user_id": "user_1", "input_url": INPUT, "job_id": f"job_{n}"}
        put = client.put(f"/api/v1/submissions/sub_{n}", json=registration, headers=headers)
        assert put.status_code == 201
        payload = encode(job_payload(f"job_{n}", "succeeded", submission_id=f"sub_{n}"))
        delivered = client.post(
            "/webhooks/ittybit", data=payload, headers=signed_headers(payload, msg_id=f"m{n}")
        )
        assert delivered.status_code == 200
    first = client.get("/api/v1/notifications?status=pending&limit=2", headers=headers)
    assert first.status_code == 200
    page = first.get_json()
    assert [item["submission_id"] for item in page["data"]] == ["sub_2", "sub_1"]
    assert {item["event_type"] for item in page["data"]} == {"submission.succeeded"}
    assert page["data"][0]["endpoint"] == "https://app.example.com/hooks"
    assert "s3cret" not in first.get_data(as_text=True)
    rest = client.get(
        f"/api/v1/notifications?status=pending&limit=2&cursor={page['next_cursor']}",
        headers=headers,
    ).get_json()
    assert [item["submission_id"] for item in rest["data"]] == ["sub_0"]
    assert rest["next_cursor"] is None
    delivered_only = client.get("/api/v1/notifications?status=delivered", headers=headers)
    assert delivered_only.get_json() == {"data": [], "next_cursor": None}
    bad = client.get("/api/v1/notifications?status=lost", headers=headers)
    assert (bad.status_code, error_of(bad)["field"]) == (400, "status")
