"""``jobhooks events``: list, show, replay and prune the inbox from the command line."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import Result
from flask.testing import FlaskClient, FlaskCliRunner
from sqlalchemy.engine import Engine

from receiver.flows.history import parse_since
from receiver.store.models import Submission, WebhookEvent
from tests.helpers import add_submission, encode, job_payload, signed_headers, token_url

_events = WebhookEvent.__table__  # type: ignore[attr-defined]
_submissions = Submission.__table__  # type: ignore[attr-defined]
NOW = datetime.now(UTC)


def deliver(
    client: FlaskClient, payload: dict[str, Any], msg_id: str, *, url: str = "/webhooks/ittybit"
) -> int:
    body = encode(payload)
    return client.post(url, data=body, headers=signed_headers(body, msg_id=msg_id)).status_code


def run(runner: FlaskCliRunner, *args: str) -> Result:
    return runner.invoke(args=["events", *args])


def ok(runner: FlaskCliRunner, *args: str) -> str:
    result = run(runner, *args)
    assert result.exit_code == 0, result.output
    return result.output


def stored_events(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(sa.select(_events).order_by("id"))]


def submission(engine: Engine, submission_id: str) -> dict[str, Any]:
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(_submissions).where(_submissions.c.submission_id == submission_id)
        ).one()
    return dict(row._mapping)


@pytest.fixture
def inbox(client: FlaskClient, engine: Engine) -> None:
    """Four deliveries: applied (1), unmatched (2), rejected (3), applied on sub_2's URL (4)."""
    add_submission(engine, "sub_1")
    add_submission(engine, "sub_2")
    earlier = (NOW - timedelta(hours=1)).isoformat()
    assert (
        deliver(client, job_payload("job_1", submission_id="sub_1", updated_at=earlier), "msg_1")
        == 200
    )
    assert deliver(client, job_payload("job_3", submission_id="sub_3"), "msg_2") == 202
    later = job_payload("job_1", "failed", user_id="user_9", updated_at=NOW.isoformat())
    assert deliver(client, later, "msg_3") == 403
    payload = job_payload("job_2", "processing", submission_id="sub_2")
    assert deliver(client, payload, "msg_4", url=token_url("sub_2")) == 200


# --- list and show --------------------------------------------------------------------------


def test_list_prints_a_table_newest_first(runner: FlaskCliRunner, inbox: None) -> None:
    header, *rows = ok(runner, "list").splitlines()
    assert header.split()[:4] == ["ID", "RECEIVED", "(UTC)", "SOURCE"]
    assert [row.split()[0] for row in rows] == ["4", "3", "2", "1"]
    assert rows[1].split()[3:7] == ["endpoint", "rejected", "sub_1", "job_1"]
    assert "metadata user_id does not match the submission's owner" in rows[1]
    assert rows[0].split()[3:5] == ["url", "applied"]


def test_list_filters(runner: FlaskCliRunner, inbox: None) -> None:
    def ids(*args: str) -> list[int]:
        return [json.loads(line)["id"] for line in ok(runner, "list", "--json", *args).splitlines()]

    assert ids("--outcome", "unmatched") == [2]
    assert ids("--outcome", "unmatched", "--outcome", "rejected") == [3, 2]
    assert ids("--submission", "sub_1") == [3, 1]
    assert ids("--job", "job_2") == [4]
    assert ids("--since", "1h") == [4, 3, 2, 1]
    assert ids("--since", (NOW + timedelta(days=1)).isoformat()) == []
    assert ids("--limit", "2") == [4, 3]
    assert ids("--outcome", "applied", "--submission", "sub_2") == [4]
    assert "no events match" in run(runner, "list", "--submission", "nobody").output


def test_list_shows_ignored_events(client: FlaskClient, runner: FlaskCliRunner) -> None:
    event = {"id": "evt_m", "object": "event", "kind": "media.created", "data": {"id": "m"}}
    assert deliver(client, event, "msg_m") == 200
    [line] = ok(runner, "list", "--json", "--outcome", "ignored").splitlines()
    assert json.loads(line)["outcome"] == "ignored"


def test_list_json_has_the_fields_but_not_the_body(runner: FlaskCliRunner, inbox: None) -> None:
    line = json.loads(ok(runner, "list", "--json", "--outcome", "unmatched"))
    assert line == {
        "id": 2,
        "received_at": line["received_at"],
        "source": "endpoint",
        "outcome": "unmatched",
        "submission_id": "sub_3",
        "job_id": "job_3",
        "provider_status": "succeeded",
        "delivery_id": "msg_2",
        "reason": "no submission matches the job yet",
    }
    assert datetime.fromisoformat(line["received_at"]) > NOW - timedelta(minutes=5)


def test_list_refuses_bad_filters(runner: FlaskCliRunner) -> None:
    for args in (("--outcome", "lost"), ("--since", "yesterday"), ("--limit", "0")):
        result = run(runner, "list", *args)
        assert result.exit_code == 2, result.output


def test_show_prints_the_delivery_and_what_was_done(runner: FlaskCliRunner, inbox: None) -> None:
    shown = json.loads(ok(runner, "show", "3"))
    assert shown["outcome"] == "rejected"
    assert shown["reason"] == "metadata user_id does not match the submission's owner"
    assert shown["body"]["metadata"] == {"submission_id": "sub_1", "user_id": "user_9"}
    assert shown["headers"]["webhook-id"] == "msg_3"
    assert "webhook-signature" not in shown["headers"]
    assert shown["dedupe_key"] == "wh:msg_3"


def test_show_an_unknown_event(runner: FlaskCliRunner, inbox: None) -> None:
    result = run(runner, "show", "999")
    assert result.exit_code == 1
    assert "no event 999" in result.output


def test_parse_since() -> None:
    now = datetime(2024, 5, 1, 12, tzinfo=UTC)
    assert parse_since("90m", now=now) == datetime(2024, 5, 1, 10, 30, tzinfo=UTC)
    assert parse_since("2024-04-30T00:00:00", now=now) == datetime(2024, 4, 30, tzinfo=UTC)
    assert parse_since("2024-04-30T02:00:00+02:00", now=now) == datetime(2024, 4, 30, tzinfo=UTC)
    with pytest.raises(ValueError, match="neither a duration"):
        parse_since("last week", now=now)


# --- replay ---------------------------------------------------------------------------------


def test_replay_an_unmatched_delivery_once_its_submission_exists(
    runner: FlaskCliRunner, engine: Engine, inbox: None
) -> None:
    output = ok(runner, "replay", "2")
    assert output.strip() == "event 2: still unmatched (sub_3): no submission matches the job yet"

    add_submission(engine, "sub_3")
    assert ok(runner, "replay", "2", "--dry-run").startswith(
        "event 2: was unmatched, would be applied"
    )
    assert submission(engine, "sub_3")["status"] == "pending"

    assert ok(runner, "replay", "2").startswith(
        "event 2: was unmatched, now applied (sub_3, succeeded)"
    )
    stored = submission(engine, "sub_3")
    assert (stored["status"], stored["job_id"]) == ("succeeded", "job_3")
    event = stored_events(engine)[1]
    assert (event["outcome"], event["submission_id"]) == ("applied", "sub_3")

    # Idempotent: the same state again changes nothing.
    again = ok(runner, "replay", "2", "--json")
    assert json.loads(again)["outcome"] == "duplicate"
    assert json.loads(again)["changed"] is False
    assert submission(engine, "sub_3")["updated_at"] == stored["updated_at"]
    assert stored_events(engine)[1]["outcome"] == "applied"


def test_replay_an_applied_delivery_is_a_duplicate(
    runner: FlaskCliRunner, engine: Engine, inbox: None
) -> None:
    before = submission(engine, "sub_2")
    results = [json.loads(line) for line in ok(runner, "replay", "1", "4", "--json").splitlines()]
    assert [(r["event_id"], r["previous"], r["outcome"]) for r in results] == [
        (1, "applied", "duplicate"),
        (4, "applied", "duplicate"),
    ]
    assert results[1]["submission_id"] == "sub_2"
    assert submission(engine, "sub_2") == before
    assert [event["outcome"] for event in stored_events(engine)] == [
        "applied",
        "unmatched",
        "rejected",
        "applied",
    ]


def test_replay_re_applies_a_state_lost_since(
    runner: FlaskCliRunner, engine: Engine, inbox: None
) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.update(_submissions)
            .where(_submissions.c.submission_id == "sub_1")
            .values(status="pending", output_url=None, provider_status=None)
        )
    assert ok(runner, "replay", "1").startswith(
        "event 1: was applied, now applied (sub_1, succeeded)"
    )
    assert submission(engine, "sub_1")["status"] == "succeeded"


def test_replay_a_rejected_delivery_once_the_owner_is_put_right(
    runner: FlaskCliRunner, engine: Engine, inbox: None
) -> None:
    output = ok(runner, "replay", "3")
    assert output.startswith(
        "event 3: still rejected (sub_1): metadata user_id does not match the submission's owner"
    )
    assert submission(engine, "sub_1")["status"] == "succeeded"

    with engine.begin() as conn:
        conn.execute(
            sa.update(_submissions)
            .where(_submissions.c.submission_id == "sub_1")
            .values(user_id="user_9")
        )
    assert ok(runner, "replay", "3").startswith(
        "event 3: was rejected, now applied (sub_1, failed)"
    )
    assert submission(engine, "sub_1")["status"] == "failed"
    event = stored_events(engine)[2]
    assert (event["outcome"], event["reason"]) == ("applied", "replayed: applied")


def test_a_rejected_delivery_on_a_signed_url_is_checked_against_its_url_again(
    client: FlaskClient, runner: FlaskCliRunner, engine: Engine
) -> None:
    add_submission(engine, "sub_1")
    payload = job_payload(user_id="user_9")
    assert deliver(client, payload, "msg_x", url=token_url("sub_1")) == 403
    assert stored_events(engine)[0]["claimed_user_id"] == "user_1"
    output = ok(runner, "replay", "1")
    assert output.startswith("event 1: still rejected (sub_1)")
    assert submission(engine, "sub_1")["status"] == "pending"


def test_a_rejected_signed_url_delivery_without_its_owner_is_not_replayed(
    client: FlaskClient, runner: FlaskCliRunner, engine: Engine
) -> None:
    add_submission(engine, "sub_1")
    payload = job_payload(user_id="user_9")
    assert deliver(client, payload, "msg_x", url=token_url("sub_1")) == 403
    # A row stored before the URL's owner was kept with each delivery.
    with engine.begin() as conn:
        conn.execute(sa.update(_events).values(claimed_user_id=None))
    result = run(runner, "replay", "1")
    assert result.exit_code == 1
    assert "cannot be checked again" in result.output
    assert submission(engine, "sub_1")["status"] == "pending"


def test_replay_every_unmatched_delivery(
    client: FlaskClient, runner: FlaskCliRunner, engine: Engine
) -> None:
    for number in (1, 2, 3):
        payload = job_payload(f"job_{number}", submission_id=f"sub_{number}")
        assert deliver(client, payload, f"msg_{number}") == 202
    add_submission(engine, "sub_1")
    add_submission(engine, "sub_3", user_id="user_7")

    summary = json.loads(ok(runner, "replay", "--outcome", "unmatched", "--dry-run", "--json"))
    assert summary == {
        "matched": 1,
        "rejected": 1,
        "errors": 0,
        "still_unmatched": 3,
        "dry_run": True,
    }
    output = ok(runner, "replay", "--outcome", "unmatched")
    assert output.strip() == "matched 1, rejected 1, unreadable 0; 1 still unmatched"
    assert [event["outcome"] for event in stored_events(engine)] == [
        "applied",
        "unmatched",
        "rejected",
    ]
    assert submission(engine, "sub_1")["status"] == "succeeded"
    assert submission(engine, "sub_3")["status"] == "pending"
    assert ok(runner, "replay", "--outcome", "unmatched").startswith("matched 0, rejected 0")


def test_replay_arguments(runner: FlaskCliRunner, inbox: None) -> None:
    assert run(runner, "replay").exit_code == 2
    assert run(runner, "replay", "1", "--outcome", "unmatched").exit_code == 2
    assert run(runner, "replay", "--outcome", "applied").exit_code == 2
    missing = run(runner, "replay", "999", "1")
    assert missing.exit_code == 1
    assert "event 999: no event 999" in missing.output
    assert "event 1: was applied, now duplicate" in missing.output


# --- prune ----------------------------------------------------------------------------------


def add_event(engine: Engine, key: str, *, days_ago: float, submission_id: str | None) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.insert(_events).values(
                dedupe_key=key,
                received_at=NOW - timedelta(days=days_ago),
                source="endpoint",
                submission_id=submission_id,
                body="{}",
                headers={},
                outcome="applied" if submission_id else "unmatched",
            )
        )


def keys(engine: Engine) -> list[str]:
    return [event["dedupe_key"] for event in stored_events(engine)]


def test_prune_keeps_recent_events_and_each_submissions_latest(
    runner: FlaskCliRunner, engine: Engine
) -> None:
    for number, days in enumerate((90, 60, 45), start=1):
        add_event(engine, f"a{number}", days_ago=days, submission_id="sub_a")  # a3 is latest
    add_event(engine, "b1", days_ago=50, submission_id="sub_b")  # old, but sub_b's only one
    add_event(engine, "c1", days_ago=40, submission_id="sub_c")
    add_event(engine, "c2", days_ago=1, submission_id="sub_c")  # recent
    for number in range(1, 6):
        add_event(engine, f"n{number}", days_ago=31 + number, submission_id=None)
    add_event(engine, "n6", days_ago=2, submission_id=None)

    dry = ok(runner, "prune", "--older-than", "30d", "--dry-run")
    assert dry.startswith("dry run: would delete 8 event(s) received before ")
    assert len(keys(engine)) == 12

    output = ok(runner, "prune", "--older-than", "30d", "--batch", "3")
    assert output.startswith("deleted 8 event(s)")
    assert keys(engine) == ["a3", "b1", "c2", "n6"]
    assert ok(runner, "prune", "--older-than", "30d").startswith("deleted 0 event(s)")
    assert ok(runner, "prune", "--older-than", "1h").startswith("deleted 1 event(s)")
    assert keys(engine) == ["a3", "b1", "c2"]


def test_prune_arguments(runner: FlaskCliRunner) -> None:
    for args in (
        (),
        ("--older-than", "soon"),
        ("--older-than", "0s"),
        ("--older-than", "1d", "--batch", "0"),
    ):
        assert run(runner, "prune", *args).exit_code == 2
