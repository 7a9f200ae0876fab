"""Webhooks kept as ``unmatched`` are applied once their submission exists."""

from __future__ import annotations

import json
from typing import Any

import pytest
import sqlalchemy as sa
from flask.testing import FlaskClient, FlaskCliRunner
from sqlalchemy.engine import Engine

from receiver.core.signing import webhook_token
from receiver.flows.replay import rematch_unmatched
from receiver.store.models import WebhookEvent, utcnow
from tests.helpers import (
    OLD_SECRET_KEY,
    SECRET_KEY,
    encode,
    job_payload,
    quiet_outbox,
    signed_headers,
)
from tests.reconcile_helpers import rows

_events = WebhookEvent.__table__  # type: ignore[attr-defined]


pytestmark = pytest.mark.usefixtures("ittybit_api")


def events(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        result = conn.execute(sa.select(_events).order_by(_events.c.id))
        return [dict(row._mapping) for row in result]


def deliver(client: FlaskClient, payload: dict[str, Any], msg_id: str, url: str = "") -> Any:
    body = encode(payload)
    return client.post(
        f"/webhooks/ittybit{url}", data=body, headers=signed_headers(body, msg_id=msg_id)
    )


def add(runner: FlaskCliRunner, submission_id: str, user_id: str = "user_1") -> None:
    result = runner.invoke(
        args=[
            "submissions",
            "add",
            submission_id,
            "--user-id",
            user_id,
            "--input",
            "https://example.com/in.mp4",
        ]
    )
    assert result.exit_code == 0, result.output


def test_unmatched_events_are_matched_by_reconcile(
    client: FlaskClient, runner: FlaskCliRunner, engine: Engine
) -> None:
    early = deliver(
        client, job_payload("job_9", "succeeded", submission_id="sub_9"), msg_id="msg_1"
    )
    assert early.status_code == 202
    assert events(engine)[0]["outcome"] == "unmatched"
    add(runner, "sub_9")

    result = runner.invoke(args=["reconcile", "--json"])

    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["rematched"], summary["rejected_events"], summary["checked"]) == (1, 0, 0)
    row = rows(engine)["sub_9"]
    assert (row["status"], row["job_id"]) == ("succeeded", "job_9")
    assert row["output_url"] == "https://cdn.example.com/job_9.mp4"
    (event,) = events(engine)
    assert event["outcome"] == "applied"
    assert event["reason"] == "matched later: applied"
    assert event["submission_id"] == "sub_9"
    # Matched once: the next pass finds nothing to do.
    again = json.loads(runner.invoke(args=["reconcile", "--json"]).stdout)
    assert again["rematched"] == 0


def test_an_event_on_a_signed_url_is_matched_to_the_submission_it_names(
    client: FlaskClient, runner: FlaskCliRunner, engine: Engine
) -> None:
    token = webhook_token([SECRET_KEY, OLD_SECRET_KEY], submission_id="sub_7", user_id="user_1")
    payload = job_payload("job_7", "failed", submission_id=None, user_id=None, error="bad codec")
    assert deliver(client, payload, msg_id="m", url=f"/{token}").status_code == 202
    add(runner, "sub_7")

    report = rematch_unmatched(engine, now=utcnow(), outbox=quiet_outbox())

    assert (report.matched, report.rejected) == (1, 0)
    row = rows(engine)["sub_7"]
    assert (row["status"], row["error"], row["job_id"]) == ("failed", "bad codec", "job_7")


def test_an_event_on_a_url_made_for_another_owner_is_rejected_on_matching(
    client: FlaskClient, runner: FlaskCliRunner, engine: Engine
) -> None:
    # The URL named user_2; the payload carries no user_id, so only the stored claim tells.
    token = webhook_token([SECRET_KEY], submission_id="sub_8", user_id="user_2")
    payload = job_payload("job_8", "succeeded", submission_id=None, user_id=None)
    assert deliver(client, payload, msg_id="m", url=f"/{token}").status_code == 202
    assert events(engine)[0]["claimed_user_id"] == "user_2"
    add(runner, "sub_8", user_id="user_1")

    report = rematch_unmatched(engine, now=utcnow(), outbox=quiet_outbox())

    assert (report.matched, report.rejected) == (0, 1)
    (event,) = events(engine)
    assert event["outcome"] == "rejected"
    assert event["reason"] == (
        "matched later, refused: webhook URL was not made for this submission's owner"
    )
    row = rows(engine)["sub_8"]
    assert (row["status"], row["job_id"]) == ("pending", None)


def test_events_are_applied_in_arrival_order_by_the_usual_rules(
    client: FlaskClient, runner: FlaskCliRunner, engine: Engine
) -> None:
    deliveries = [
        job_payload("job_5", "processing", submission_id="sub_5", updated_at=100),
        job_payload("job_5", "succeeded", submission_id="sub_5", updated_at=300),
        job_payload("job_5", "processing", submission_id="sub_5", updated_at=200),
    ]
    for number, payload in enumerate(deliveries):
        assert deliver(client, payload, msg_id=f"m{number}").status_code == 202
    add(runner, "sub_5")

    report = rematch_unmatched(engine, now=utcnow(), outbox=quiet_outbox())

    assert report.matched == 3
    assert [event["outcome"] for event in events(engine)] == ["applied", "applied", "stale"]
    assert rows(engine)["sub_5"]["status"] == "succeeded"


def test_an_event_of_another_owner_is_rejected_on_matching(
    client: FlaskClient, runner: FlaskCliRunner, engine: Engine
) -> None:
    payload = job_payload("job_3", "succeeded", submission_id="sub_3", user_id="mallory")
    assert deliver(client, payload, msg_id="m").status_code == 202
    add(runner, "sub_3", user_id="user_1")

    report = rematch_unmatched(engine, now=utcnow(), outbox=quiet_outbox())

    assert (report.matched, report.rejected) == (0, 1)
    (event,) = events(engine)
    assert event["outcome"] == "rejected"
    assert "user_id does not match" in event["reason"]
    assert rows(engine)["sub_3"]["status"] == "pending"


def test_events_nothing_answers_to_stay_unmatched(
    client: FlaskClient, runner: FlaskCliRunner, engine: Engine
) -> None:
    deliver(client, job_payload("job_1", "succeeded", submission_id="sub_1"), msg_id="m")
    add(runner, "sub_other")
    report = rematch_unmatched(engine, now=utcnow(), outbox=quiet_outbox())
    assert (report.matched, report.rejected, report.errors) == (0, 0, 0)
    assert events(engine)[0]["outcome"] == "unmatched"


def test_dry_run_matches_nothing_for_real(
    client: FlaskClient, runner: FlaskCliRunner, engine: Engine
) -> None:
    deliver(client, job_payload("job_2", "succeeded", submission_id="sub_2"), msg_id="m")
    add(runner, "sub_2")
    before = (rows(engine), events(engine))

    result = runner.invoke(args=["reconcile", "--dry-run", "--json"])

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["rematched"] == 1
    assert (rows(engine), events(engine)) == before


def test_a_job_id_owned_by_another_submission_is_refused(
    client: FlaskClient, runner: FlaskCliRunner, engine: Engine
) -> None:
    add(runner, "sub_owner")
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE submissions SET job_id = 'job_x' WHERE submission_id = :s"),
            {"s": "sub_owner"},
        )
    token = webhook_token([SECRET_KEY], submission_id="sub_new", user_id="user_1")
    payload = job_payload("job_x", "succeeded", submission_id=None, user_id=None)
    assert deliver(client, payload, msg_id="m", url=f"/{token}").status_code == 202
    add(runner, "sub_new")

    report = rematch_unmatched(engine, now=utcnow(), outbox=quiet_outbox())

    assert report.rejected == 1
    (event,) = events(engine)
    assert event["outcome"] == "rejected"
    assert "job id belongs to another submission" in event["reason"]
    assert rows(engine)["sub_new"]["job_id"] is None
