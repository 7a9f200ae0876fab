"""A submission's timeline a page at a time: the API's events and the admin page."""

from __future__ import annotations

import base64
import html as html_text
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from freezegun import freeze_time
from sqlalchemy.engine import Engine

from receiver.flows.admin_accounts import create_admin
from receiver.store.models import Notification, Poll, Submission, WebhookEvent, utcnow
from tests.admin_helpers import EMAIL, PASSWORD, sign_in
from tests.api_helpers import bearer

NOW = (datetime.now(UTC) - timedelta(hours=1)).replace(minute=30, second=0, microsecond=0)
KINDS = ("delivery", "poll", "notification")
TABLES = {
    "delivery": WebhookEvent.__table__,  # type: ignore[attr-defined]
    "poll": Poll.__table__,  # type: ignore[attr-defined]
    "notification": Notification.__table__,  # type: ignore[attr-defined]
}


def _row(kind: str, number: int, at: datetime) -> dict[str, Any]:
    if kind == "delivery":
        return {
            "dedupe_key": f"key_{number}",
            "received_at": at,
            "source": "endpoint",
            "submission_id": "sub_1",
            "job_id": "job_1",
            "body": "{}",
            "headers": {},
            "outcome": "applied",
        }
    if kind == "poll":
        return {
            "submission_id": "sub_1",
            "job_id": "job_1",
            "polled_at": at,
            "source": "reconcile",
            "result": "unchanged",
        }
    return {
        "message_id": f"msg_{number}",
        "submission_id": "sub_1",
        "endpoint": "https://app.example.com/hooks",
        "event_type": "submission.processing",
        "payload": "{}",
        "created_at": at,
        "next_attempt_at": at,
    }


def add_timeline(engine: Engine, count: int = 250) -> list[tuple[str, int]]:
    """Store sub_1 and ``count`` entries, many sharing a moment; return them in order."""
    base = NOW - timedelta(minutes=30)
    keyed = []
    with engine.begin() as conn:
        conn.execute(
            sa.insert(Submission.__table__).values(  # type: ignore[attr-defined]
                submission_id="sub_1",
                user_id="user_1",
                input_url="https://uploads.example.com/a.mp4",
                status="processing",
                job_id="job_1",
                meta={},
            )
        )
        # Inserted newest first, so ids run against time; seven entries share each second
        # (so pages end within one), of every kind: the order rests on (at, kind, id).
        for number in reversed(range(count)):
            kind = KINDS[number % 3]
            at = base + timedelta(seconds=number // 7)
            table = TABLES[kind]
            row_id = conn.execute(
                sa.insert(table).values(_row(kind, number, at)).returning(table.c.id)
            ).scalar_one()
            keyed.append(((at, KINDS.index(kind), int(row_id)), (kind, int(row_id))))
    return [entry for _, entry in sorted(keyed)]


def _walk(client: FlaskClient, headers: dict[str, str]) -> list[dict[str, Any]]:
    pages = []
    params: dict[str, Any] = {}
    for _ in range(10):  # a cursor that goes back would page forever
        response = client.get(
            "/api/v1/submissions/sub_1/events", headers=headers, query_string=params
        )
        assert response.status_code == 200, response.get_json()
        pages.append(response.get_json())
        if pages[-1]["next_cursor"] is None:
            return pages
        params = {"cursor": pages[-1]["next_cursor"]}
    raise AssertionError("more than 10 pages of 250 entries")


def test_the_events_come_a_hundred_at_a_time_in_order(
    app: Flask, client: FlaskClient, engine: Engine
) -> None:
    expected = add_timeline(engine)
    pages = _walk(client, bearer(app))
    assert [len(page["data"]) for page in pages] == [100, 100, 50]
    assert pages[-1]["next_cursor"] is None
    seen = [(entry["kind"], entry["id"]) for page in pages for entry in page["data"]]
    assert len(set(seen)) == 250
    assert seen == expected


def test_a_smaller_limit_pages_the_same_order(
    app: Flask, client: FlaskClient, engine: Engine
) -> None:
    expected = add_timeline(engine, 12)
    headers = bearer(app)
    seen: list[tuple[str, int]] = []
    params: dict[str, Any] = {"limit": 4}
    for _ in range(10):
        page = client.get(
            "/api/v1/submissions/sub_1/events", headers=headers, query_string=params
        ).get_json()
        assert len(page["data"]) <= 4
        seen += [(entry["kind"], entry["id"]) for entry in page["data"]]
        if page["next_cursor"] is None:
            break
        params = {"limit": 4, "cursor": page["next_cursor"]}
    assert seen == expected


def _cursor(values: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "query",
    [
        {"limit": 0},
        {"limit": 101},
        {"cursor": "not a cursor"},
        {"cursor": _cursor(["2026-01-01T00:00:00+00:00", 3, 1])},  # no fourth kind
        {"cursor": _cursor(["2026-01-01T00:00:00+00:00", 0, 2**63])},  # past any id
        {"cursor": _cursor(["2026-01-01T00:00:00", 0, 1])},  # no offset
        {"cursor": _cursor(["2026-01-01T00:00:00+00:00", 1])},  # the list's shape
        {"other": "x"},
    ],
)
def test_a_bad_limit_or_cursor_is_a_400(
    app: Flask, client: FlaskClient, engine: Engine, query: dict[str, Any]
) -> None:
    add_timeline(engine, 3)
    response = client.get(
        "/api/v1/submissions/sub_1/events", headers=bearer(app), query_string=query
    )
    assert response.status_code == 400, response.get_json()


def test_the_admin_page_shows_a_hundred_and_links_to_the_rest(
    client: FlaskClient, engine: Engine
) -> None:
    expected = add_timeline(engine)
    with freeze_time(NOW):
        create_admin(engine, EMAIL, PASSWORD, now=utcnow())
        assert sign_in(client).status_code == 302
    url: str | None = "/admin/submissions/sub_1"
    counts = []
    deliveries: list[int] = []
    while url is not None and len(counts) < 10:
        page = client.get(url)
        assert page.status_code == 200
        text = page.get_data(as_text=True)
        counts.append(text.count('<tr class="kind-'))
        deliveries += [int(n) for n in re.findall(r">delivery (\d+)</a>", text)]
        link = re.search(r'<a href="([^"]+)" rel="next" id="next-page">', text)
        url = None if link is None else html_text.unescape(link.group(1))
    assert counts == [100, 100, 50]
    assert deliveries == [row_id for kind, row_id in expected if kind == "delivery"]


def test_a_token_pasted_in_a_stored_header_is_cut_from_the_events(
    app: Flask, client: FlaskClient, engine: Engine
) -> None:
    """Stored headers are what the sender sent: the API shows them, a token cut out."""
    from receiver.core.signing import webhook_token
    from tests.helpers import SECRET_KEY

    token = webhook_token([SECRET_KEY], submission_id="sub_1", user_id="user_1")
    add_timeline(engine, count=1)
    with engine.begin() as conn:
        conn.execute(
            sa.update(TABLES["delivery"]).values(
                headers={"user-agent": f"curl /webhooks/ittybit/{token}", "webhook-id": "msg_1"}
            )
        )
    answer = client.get("/api/v1/submissions/sub_1/events", headers=bearer(app))
    assert answer.status_code == 200
    (delivery,) = [entry for entry in answer.get_json()["data"] if entry["kind"] == "delivery"]
    assert delivery["headers"] == {
        "user-agent": "curl /webhooks/ittybit/[token]",
        "webhook-id": "msg_1",
    }
