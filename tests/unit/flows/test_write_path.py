"""The one write path, in fact: inbox first, every 403 recorded, expiry through the rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.engine import Engine

from receiver import create_app
from receiver.core.jobstate import normalise
from receiver.flows.apply import find_submission
from receiver.flows.history import submission_timeline
from receiver.flows.outbox import Outbox
from receiver.flows.polling import JobResult, PolledJob, settle_job
from receiver.flows.records import submission_json
from receiver.ittybit.client import ApiUnavailable
from receiver.store.engines import get_engine
from receiver.store.models import Notification, Poll, Submission
from tests.helpers import add_submission, job_payload, token_url
from tests.notify_helpers import default_specs_for
from tests.unit.web.test_webhooks import PROJECT_URL, events, post, submission

T = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
_submissions = Submission.__table__  # type: ignore[attr-defined]
_notifications = Notification.__table__  # type: ignore[attr-defined]
_polls = Poll.__table__  # type: ignore[attr-defined]


def outbox_of(app: Flask) -> Outbox:
    return Outbox(
        render=submission_json,
        defaults=default_specs_for("https://app.example.com/hooks"),
    )


def test_a_late_queued_after_processing_is_stale_and_touches_nothing(
    client: FlaskClient, engine: Engine
) -> None:
    add_submission(engine)
    assert (
        post(client, token_url(), job_payload(status="processing"), msg_id="m1").status_code == 200
    )
    before = submission(engine)
    late = post(client, token_url(), job_payload(status="queued"), msg_id="m2")
    assert (late.status_code, late.get_json()["outcome"]) == (200, "stale")
    assert submission(engine) == before  # updated_at included
    assert [event["outcome"] for event in events(engine)] == ["applied", "stale"]


def test_a_success_without_timestamp_is_not_replaced_by_a_dated_failure(
    client: FlaskClient, engine: Engine
) -> None:
    add_submission(engine)
    assert post(client, token_url(), job_payload(), msg_id="m1").status_code == 200
    failed = job_payload(status="failed", error="x", updated_at="2020-01-01T00:00:00Z")
    answer = post(client, token_url(), failed, msg_id="m2")
    assert answer.get_json()["outcome"] == "stale"
    stored = submission(engine)
    assert (stored["status"], stored["output_url"]) == (
        "succeeded",
        "https://cdn.example.com/job_abc123.mp4",
    )


def test_a_resent_delivery_writes_nothing_even_where_the_rules_would_apply_it(
    client: FlaskClient, engine: Engine
) -> None:
    """The inbox key decides first: no rollback is needed to undo a change never made.

    The first copy came before its submission (kept as unmatched); the resend finds the
    submission, and the rules alone would apply it, but its key is taken.
    """
    first = post(client, PROJECT_URL, job_payload(status="processing"), msg_id="msg_x")
    assert first.status_code == 202
    add_submission(engine)
    before = submission(engine)
    again = post(client, PROJECT_URL, job_payload(status="processing"), msg_id="msg_x")
    assert (again.status_code, again.get_json()["outcome"]) == (200, "duplicate")
    assert submission(engine) == before
    assert [event["outcome"] for event in events(engine)] == ["unmatched"]


# --- every 403 is recorded ------------------------------------------------------------------


def rejected(engine: Engine) -> list[dict[str, Any]]:
    return [event for event in events(engine) if event["outcome"] == "rejected"]


def test_a_token_for_another_user_on_a_missing_submission_is_refused_and_recorded(
    client: FlaskClient, engine: Engine
) -> None:
    url = token_url("sub_new", user_id="user_2")
    response = post(client, url, job_payload(submission_id="sub_new", user_id="user_1"))
    assert response.status_code == 403
    [stored] = rejected(engine)
    assert stored["submission_id"] == "sub_new"
    assert stored["reason"] == "metadata user_id does not match the webhook URL"


@pytest.mark.parametrize(
    ("url_user", "reason"),
    [
        ("user_1", "metadata user_id does not match the webhook URL"),
        ("user_2", "webhook URL was not made for this submission's owner"),
    ],
)
def test_a_refusal_whose_fallback_key_is_taken_is_still_recorded(
    app_config: dict[str, Any], url_user: str, reason: str
) -> None:
    """No webhook-id, no event id: the key is a hash of job, status and time, which a
    genuine earlier delivery of the same job may already hold."""
    app = create_app({**app_config, "ITTYBIT_WEBHOOK_SECRET": ""})  # signed URLs alone
    client, engine = app.test_client(), get_engine(app)
    try:
        add_submission(engine, job_id="job_abc123")
        genuine = job_payload(status="processing")
        first = client.post(token_url(), json=genuine)
        assert first.status_code == 200, first.get_json()
        forged = job_payload(status="processing", user_id="user_2")
        for _ in range(2):  # a resend of the same refusal is not stored twice
            refused = client.post(token_url(user_id=url_user), json=forged)
            assert refused.status_code == 403
        [stored] = rejected(engine)
        assert stored["reason"] == reason
        assert stored["dedupe_key"].startswith("rej:")
    finally:
        engine.dispose()


# --- the reconciler's expiry goes through the rules -----------------------------------------


def _polled(engine: Engine, **values: Any) -> PolledJob:
    add_submission(engine, job_id="job_abc123")
    with engine.begin() as conn:
        conn.execute(sa.update(_submissions).values(status="processing", **values))
        row = conn.execute(sa.select(*(_submissions.c[name] for name in PolledJob.__slots__))).one()
    return PolledJob(*row)


def _settle(app: Flask, engine: Engine, job: PolledJob, fetched: Any) -> tuple[JobResult, str]:
    with engine.begin() as conn:
        result, detail = settle_job(
            conn, job, fetched, now=T, give_up_after=3600, outbox=outbox_of(app), owner="me"
        )
    return result, detail or ""


def test_expiry_is_written_by_the_rules_and_announced(app: Flask, engine: Engine) -> None:
    job = _polled(engine, created_at=T - timedelta(hours=2), provider_status="queued")
    result, detail = _settle(app, engine, job, normalise(job_payload(status="processing")))
    assert result is JobResult.EXPIRED
    stored = submission(engine)
    assert (stored["status"], stored["error"]) == ("expired", detail)
    with engine.connect() as conn:
        kinds = conn.execute(sa.select(_notifications.c.event_type)).scalars().all()
        polls = conn.execute(sa.select(_polls.c.result, _polls.c.source)).all()
    assert kinds == ["submission.expired"]
    assert [tuple(row) for row in polls] == [("expired", "reconcile")]


def test_expiry_never_replaces_a_final_state_that_arrived_meanwhile(
    app: Flask, engine: Engine
) -> None:
    job = _polled(engine, created_at=T - timedelta(hours=2))
    with engine.begin() as conn:  # the final webhook lands while the poll is in flight
        conn.execute(sa.update(_submissions).values(status="succeeded", output_url="https://o"))
    result, _ = _settle(app, engine, job, normalise(job_payload(status="processing")))
    assert result is JobResult.UNCHANGED
    assert submission(engine)["status"] == "succeeded"


def test_a_poll_clears_only_its_own_lease(app: Flask, engine: Engine) -> None:
    job = _polled(engine, lease_owner="someone-else", lease_until=T + timedelta(minutes=5))
    _settle(app, engine, job, ApiUnavailable("GET /jobs/job_abc123: timed out"))
    with engine.connect() as conn:
        lease = conn.execute(sa.select(_submissions.c.lease_owner)).scalar_one()
        current = find_submission(conn, submission_id="sub_1")
    assert lease == "someone-else"
    assert current is not None


def test_the_timeline_puts_deliveries_polls_and_notifications_in_order(
    app: Flask, client: FlaskClient, engine: Engine
) -> None:
    job = _polled(engine, created_at=T - timedelta(hours=2))
    with engine.begin() as conn:
        conn.execute(sa.update(_submissions).values(updated_at=T - timedelta(hours=2)))
    _settle(app, engine, job, ApiUnavailable("GET /jobs/job_abc123: timed out"))
    answer = post(client, token_url(), job_payload(status="succeeded"), msg_id="m9")
    assert answer.status_code == 200
    with engine.connect() as conn:
        timeline = submission_timeline(conn, "sub_1")
    assert [(entry["kind"], entry.get("outcome") or entry.get("result")) for entry in timeline] == [
        ("poll", "errors"),
        ("delivery", "applied"),
    ]
    assert "webhook-signature" not in timeline[1]["headers"]
