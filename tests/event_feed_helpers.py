"""Helpers for the event-list tests: stand-in jobs, their submissions, reconcilers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from werkzeug.test import Client

from devtools.standin import DEFAULT_API_KEY, Standin
from receiver.flows.outbox import Outbox
from receiver.ittybit.client import IttybitClient
from receiver.store.models import EventCursor, Notification, Submission, utcnow
from reconcile.passes import PassOptions, Reconciler
from tests.helpers import quiet_outbox
from tests.notify_helpers import outbox_to

_submissions = Submission.__table__  # type: ignore[attr-defined]
_feeds = EventCursor.__table__  # type: ignore[attr-defined]
_notifications = Notification.__table__  # type: ignore[attr-defined]


def create_jobs(
    standin: Standin, count: int, *, prefix: str = "sub_ev", user_id: str = "user_1"
) -> dict[str, str]:
    """Create ``count`` jobs on the stand-in (no webhook URL: every webhook is lost).

    Returns job id by submission id. Made in process, and left out of the request counts.
    """
    client = Client(standin)
    headers = {"Authorization": f"Bearer {DEFAULT_API_KEY}"}
    jobs = {}
    for n in range(count):
        submission_id = f"{prefix}_{n}"
        response = client.post(
            "/jobs",
            json={
                "input": f"https://uploads.example.com/{submission_id}.mp4",
                "metadata": {"submission_id": submission_id, "user_id": user_id},
            },
            headers=headers,
        )
        assert response.status_code == 201, response.get_data(as_text=True)
        jobs[submission_id] = response.get_json()["id"]
    standin.reset_request_counts()
    return jobs


def add_submissions_for(
    engine: Engine, jobs: dict[str, str], *, changed_at: datetime, user_id: str = "user_1"
) -> None:
    """Insert one processing submission per job, last changed at ``changed_at``."""
    rows = [
        {
            "submission_id": submission_id,
            "user_id": user_id,
            "input_url": f"https://uploads.example.com/{submission_id}.mp4",
            "job_id": job_id,
            "status": "processing",
            "provider_status": "queued",
            "meta": {},
            "created_at": changed_at,
            "updated_at": changed_at,
            "submitted_at": changed_at,
        }
        for submission_id, job_id in jobs.items()
    ]
    with engine.begin() as conn:
        conn.execute(sa.insert(_submissions), rows)


def statuses(engine: Engine) -> dict[str, str]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(_submissions.c.submission_id, _submissions.c.status))
        return {submission_id: status for submission_id, status in rows}


def feed_row(engine: Engine) -> dict[str, Any] | None:
    with engine.connect() as conn:
        row = conn.execute(sa.select(_feeds)).first()
    return None if row is None else dict(row._mapping)


def notification_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(_notifications)).scalar())


def counting_outbox() -> Outbox:
    """An outbox with one endpoint: every final state writes one notification row."""
    return outbox_to("https://app.example.com/hook")


@contextmanager
def reconciler(
    engine: Engine,
    standin: Standin,
    *,
    owner: str = "reconciler-1",
    clock: Callable[[], datetime] = utcnow,
    outbox: Outbox | None = None,
    **options: Any,
) -> Iterator[Reconciler]:
    """A reconciler on ``engine`` asking the stand-in; every stuck job is due at once."""
    settings: dict[str, Any] = {"stuck_after": 0.0, "concurrency": 4, **options}
    with IttybitClient(base_url=standin.url, api_key=DEFAULT_API_KEY) as client:
        yield Reconciler(
            engine,
            client,
            PassOptions(**settings),
            outbox=outbox or quiet_outbox(),
            clock=clock,
            owner=owner,
        )


def an_hour_ago() -> datetime:
    return utcnow() - timedelta(hours=1)
