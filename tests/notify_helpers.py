"""Test helpers for notifications: secrets, status changes through the one write path, rows."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session

from config.settings import Settings
from receiver.core.jobstate import normalise
from receiver.flows.apply import apply_job_state, find_submission
from receiver.flows.endpoints import EndpointSpec, default_specs
from receiver.flows.outbox import Outbox
from receiver.flows.records import create_submission
from receiver.store.models import Notification
from tests.helpers import job_payload

NOTIFY_KEY = b"jobhooks-test-notify-key-32bytes"
NOTIFY_SECRET = "whsec_" + base64.b64encode(NOTIFY_KEY).decode()
OLD_NOTIFY_KEY = b"jobhooks-old-notify-key-32bytes!"
OLD_NOTIFY_SECRET = "whsec_" + base64.b64encode(OLD_NOTIFY_KEY).decode()

_notifications = Notification.__table__  # type: ignore[attr-defined]


def notifications(engine: Engine) -> list[dict[str, Any]]:
    """Return every notification row, oldest first."""
    with engine.connect() as conn:
        rows = conn.execute(sa.select(_notifications).order_by(_notifications.c.id)).mappings()
        return [dict(row) for row in rows]


def default_specs_for(
    *urls: str, events: str = "final", secrets: tuple[str, ...] = (NOTIFY_SECRET,)
) -> tuple[EndpointSpec, ...]:
    """The ``default`` endpoints NOTIFY_URL=urls, NOTIFY_SECRET=secrets would make."""
    settings = Settings.from_env(
        {
            "APP_ENV": "test",
            "SECRET_KEY": "x",
            "NOTIFY_URL": ",".join(urls),
            "NOTIFY_SECRET": ",".join(secrets),
            "NOTIFY_EVENTS": events,
        }
    )
    return default_specs(settings)


def outbox_to(
    *endpoints: str, events: str = "final", secrets: tuple[str, ...] = (NOTIFY_SECRET,)
) -> Outbox:
    """An outbox announcing to ``endpoints`` (as NOTIFY_URL's), signed with ``secrets``.

    It renders submissions as a small object; the endpoints are made at its first change.
    """

    def render(row: Any) -> dict[str, Any]:
        return {
            "submission_id": row.submission_id,
            "status": row.status,
            "output_url": row.output_url,
            "error": row.error,
        }

    return Outbox(
        render=render, defaults=default_specs_for(*endpoints, events=events, secrets=secrets)
    )


def add_submissions(engine: Engine, count: int, *, prefix: str = "sub") -> list[str]:
    """Add ``count`` submissions with a job each; return their ids."""
    ids = [f"{prefix}_{index}" for index in range(count)]
    with Session(engine) as session:
        for submission_id in ids:
            create_submission(
                session,
                submission_id=submission_id,
                user_id="user_1",
                input_url=f"https://uploads.example.com/{submission_id}.mp4",
                job_id=f"job_{submission_id}",
            )
    return ids


def change(engine: Engine, outbox: Outbox, submission_id: str, *statuses: str) -> None:
    """Apply ittybit states to a submission through the one write path, a second apart."""
    start = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    for step, status in enumerate(statuses):
        stamp = (start + timedelta(seconds=step)).isoformat()
        state = normalise(
            job_payload(
                f"job_{submission_id}", status, submission_id=submission_id, updated_at=stamp
            )
        )
        with engine.begin() as conn:
            row = find_submission(conn, submission_id=submission_id)
            assert row is not None
            apply_job_state(conn, row, state, now=datetime.now(UTC), outbox=outbox)
