"""``GET /api/v1/notifications/{id}/attempts``: each delivery attempt, oldest first, as data."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.engine import Engine

from tests.admin_helpers import add_attempt, add_notification
from tests.api_helpers import bearer

AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
#: What an endpoint may answer: markup, and what a browser would run if it were read as such.
HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>&amp;'


@pytest.fixture
def headers(app: Flask) -> dict[str, str]:
    return bearer(app)


def _url(notification_id: int | str) -> str:
    return f"/api/v1/notifications/{notification_id}/attempts"


def _problem(response: Any, status: int, code: str) -> dict[str, Any]:
    payload: dict[str, Any] = response.get_json()
    assert response.status_code == status, (response.status_code, payload)
    assert set(payload) <= {"error", "message", "field"}, payload
    assert payload["error"] == code, payload
    return payload


def test_attempts_are_listed_oldest_first_a_page_at_a_time(
    client: FlaskClient, engine: Engine, headers: dict[str, str]
) -> None:
    mine = add_notification(engine, "msg_1", at=AT, attempts=3, status="delivered")
    other = add_notification(engine, "msg_2", at=AT)
    add_attempt(engine, other, at=AT, response="not this one's")
    first = add_attempt(
        engine,
        mine,
        at=AT + timedelta(seconds=1),
        endpoint_id="ep_1",
        status_code=500,
        error="HTTP 500",
        seconds=0.25,
        response=HOSTILE,
    )
    add_attempt(
        engine,
        mine,
        at=AT + timedelta(seconds=10),
        status_code=None,
        error="no answer within 15s",
        seconds=15.0,
        response=None,
    )
    add_attempt(engine, mine, at=AT + timedelta(seconds=40), response="ok")

    page = client.get(_url(mine), query_string={"limit": 2}, headers=headers)
    assert page.status_code == 200
    assert page.mimetype == "application/json"
    body = page.get_json()
    assert body["data"][0] == {
        "id": first,
        "attempted_at": "2026-03-01T12:00:01+00:00",
        "endpoint_id": "ep_1",
        "status_code": 500,
        "error": "HTTP 500",
        "seconds": 0.25,
        # The endpoint's answer comes back as the string it was, never read as markup.
        "response": HOSTILE,
    }
    assert [item["error"] for item in body["data"]] == ["HTTP 500", "no answer within 15s"]
    assert body["data"][1]["status_code"] is None and body["data"][1]["response"] is None
    rest = client.get(
        _url(mine), query_string={"limit": 2, "cursor": body["next_cursor"]}, headers=headers
    ).get_json()
    assert [(item["status_code"], item["response"]) for item in rest["data"]] == [(200, "ok")]
    assert rest["next_cursor"] is None
    whole = client.get(_url(mine), headers=headers).get_json()
    assert [item["id"] for item in whole["data"]] == sorted(item["id"] for item in whole["data"])
    assert len(whole["data"]) == 3


def test_a_notification_not_yet_tried_has_no_attempts(
    client: FlaskClient, engine: Engine, headers: dict[str, str]
) -> None:
    waiting = add_notification(engine, "msg_w", at=AT)
    response = client.get(_url(waiting), headers=headers)
    assert response.get_json() == {"data": [], "next_cursor": None}


def test_an_unknown_notification_is_404_in_the_apis_shape(
    client: FlaskClient, engine: Engine, headers: dict[str, str]
) -> None:
    known = add_notification(engine, "msg_k", at=AT)
    # Attempts kept of a notification that is gone (its endpoint removed) name no notification.
    add_attempt(engine, known + 1, at=AT)
    payload = _problem(client.get(_url(known + 1), headers=headers), 404, "not_found")
    assert payload["message"] == f"no notification {known + 1}"
    # PostgreSQL's keys are 32-bit: a larger id is no notification there either, not a 500.
    for odd in (2**31, 2**40, 2**63, 2**70, -1, "abc", "1.5"):
        _problem(client.get(_url(odd), headers=headers), 404, "not_found")


def test_the_attempts_need_a_key_and_valid_paging(
    client: FlaskClient, engine: Engine, headers: dict[str, str]
) -> None:
    known = add_notification(engine, "msg_a", at=AT)
    add_attempt(engine, known, at=AT, response=HOSTILE)
    refused = client.get(_url(known))
    _problem(refused, 401, "unauthorized")
    assert refused.headers["WWW-Authenticate"] == "Bearer"
    assert HOSTILE not in refused.get_data(as_text=True)
    wrong = {"Authorization": headers["Authorization"][:-1] + "x"}
    _problem(client.get(_url(known), headers=wrong), 401, "unauthorized")
    # A cursor at the last id a key can hold: an empty page; past it, no cursor the API gave.
    for last, status in ((2**31 - 1, 200), (2**31, 400), (2**63 - 1, 400)):
        far = base64.urlsafe_b64encode(json.dumps([last]).encode()).decode().rstrip("=")
        response = client.get(_url(known), query_string={"cursor": far}, headers=headers)
        assert response.status_code == status, last
        if status == 200:
            assert response.get_json() == {"data": [], "next_cursor": None}
    for query, field in (
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"limit": "0"}, "limit"),
        ({"limit": "501"}, "limit"),
        ({"since": "1h"}, "since"),
    ):
        code = "invalid_cursor" if field == "cursor" else "invalid_parameter"
        response = client.get(_url(known), query_string=query, headers=headers)
        assert _problem(response, 400, code).get("field") == field, query
