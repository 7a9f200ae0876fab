"""What the admin view's tests share: an account, signing in, CSRF tokens, seeded rows."""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from flask.testing import FlaskClient
from sqlalchemy.engine import Engine
from werkzeug.test import TestResponse

from receiver.store.models import (
    Notification,
    NotificationAttempt,
    Poll,
    ReconcilePass,
    Submission,
    WebhookEvent,
)

EMAIL = "oncall@example.com"
PASSWORD = "correct horse battery staple"

submissions = Submission.__table__  # type: ignore[attr-defined]
events = WebhookEvent.__table__  # type: ignore[attr-defined]
polls = Poll.__table__  # type: ignore[attr-defined]
notifications = Notification.__table__  # type: ignore[attr-defined]
attempts = NotificationAttempt.__table__  # type: ignore[attr-defined]
passes = ReconcilePass.__table__  # type: ignore[attr-defined]

_TOKEN = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')


def csrf_token(html: str) -> str:
    """Return the CSRF token a page's forms carry."""
    match = _TOKEN.search(html)
    assert match is not None, "no CSRF token on the page"
    return match.group(1)


def sign_in(
    client: FlaskClient, email: str = EMAIL, password: str = PASSWORD, *, next_url: str = ""
) -> TestResponse:
    """Post the login form as a browser would, token included."""
    page = client.get("/admin/login")
    url = f"/admin/login?next={next_url}" if next_url else "/admin/login"
    return client.post(
        url, data={"email": email, "password": password, "csrf_token": csrf_token(page.text)}
    )


def post_form(client: FlaskClient, page: str, action: str, **fields: Any) -> TestResponse:
    """Post an action with the CSRF token of ``page``, as its button would."""
    token = csrf_token(client.get(page).text)
    return client.post(action, data={"csrf_token": token, "next": page, **fields})


def add_submission(engine: Engine, submission_id: str, *, at: datetime, **values: Any) -> None:
    row = {
        "submission_id": submission_id,
        "user_id": "user_1",
        "input_url": f"https://uploads.example.com/{submission_id}.mp4",
        "status": "pending",
        "meta": {},
        "created_at": at,
        "updated_at": at,
    }
    row.update(values)
    with engine.begin() as conn:
        conn.execute(sa.insert(submissions).values(row))


def add_event(engine: Engine, key: str, *, at: datetime, **values: Any) -> int:
    row = {
        "dedupe_key": key,
        "received_at": at,
        "source": "endpoint",
        "job_id": f"job_{key}",
        "body": json.dumps({"id": f"job_{key}", "status": "succeeded"}),
        "headers": {},
        "outcome": "applied",
    }
    row.update(values)
    with engine.begin() as conn:
        return int(conn.execute(sa.insert(events).values(row).returning(events.c.id)).scalar_one())


def add_notification(engine: Engine, message_id: str, *, at: datetime, **values: Any) -> int:
    row = {
        "message_id": message_id,
        "submission_id": "sub_1",
        "endpoint": "https://app.example.com/hooks?key=app-secret-in-query",
        "event_type": "submission.succeeded",
        "payload": "{}",
        "status": "pending",
        "attempts": 0,
        "created_at": at,
        "next_attempt_at": at,
    }
    row.update(values)
    with engine.begin() as conn:
        return int(
            conn.execute(
                sa.insert(notifications).values(row).returning(notifications.c.id)
            ).scalar_one()
        )


def add_attempt(engine: Engine, notification_id: int, *, at: datetime, **values: Any) -> int:
    """Keep one attempt of a notification, as the notifier does (a 200 in 0.1 s unless told)."""
    row = {
        "notification_id": notification_id,
        "attempted_at": at,
        "status_code": 200,
        "seconds": 0.1,
        "response": "ok",
    }
    row.update(values)
    with engine.begin() as conn:
        return int(
            conn.execute(sa.insert(attempts).values(row).returning(attempts.c.id)).scalar_one()
        )


def shown(html: str, element_id: str) -> str:
    """Return the text of the element with ``element_id`` (tags stripped)."""
    match = re.search(rf'id="{element_id}"[^>]*>(.*?)</', html, re.S)
    assert match is not None, f"no element {element_id!r}"
    return re.sub(r"<[^>]+>", "", match.group(1)).strip()
