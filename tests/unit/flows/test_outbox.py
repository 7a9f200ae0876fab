"""The outbox: every path that changes a status leaves one notification per endpoint, in the
change's transaction; a change rolled back, or answered 503, leaves none."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from pytest_httpserver import HTTPServer
from sqlalchemy.engine import Engine
from sqlmodel import Session

from config.settings import Settings
from receiver import create_app
from receiver.core.jobstate import normalise
from receiver.flows.apply import apply_job_state, find_submission
from receiver.flows.endpoints import add_endpoint
from receiver.flows.outbox import Outbox, endpoint_label, get_outbox, retry_notifications
from receiver.flows.polling import ask_ittybit_now
from receiver.flows.records import create_test_submission, get_submission, submission_json
from receiver.flows.replay import rematch_unmatched
from receiver.flows.trigger import build_trigger
from receiver.ittybit.client import client_from_settings
from receiver.store.models import Submission
from tests.helpers import add_submission, event_envelope, job_payload, token_url
from tests.notify_helpers import NOTIFY_SECRET, notifications
from tests.reconcile_helpers import FakeIttybit
from tests.unit.web.test_webhooks import PROJECT_URL, post, submission

ENDPOINTS = ("https://app.example.com/hooks/a", "https://app.example.com/hooks/b")
FAILED = "submission.failed"
_submissions = Submission.__table__  # type: ignore[attr-defined]


@pytest.fixture(autouse=True)
def notify_config(app_config: dict[str, Any]) -> None:
    """Two endpoints of the application: each change is owed to both."""
    app_config.update(NOTIFY_URL=",".join(ENDPOINTS), NOTIFY_SECRET=NOTIFY_SECRET)


def assert_announced(engine: Engine, *kinds: str, submission_id: str = "sub_1") -> None:
    """The notifications are exactly ``kinds``, in order, each once per endpoint."""
    rows = notifications(engine)
    assert [row["event_type"] for row in rows] == [kind for kind in kinds for _ in ENDPOINTS]
    assert len({row["message_id"] for row in rows}) == len(rows)
    for first, second in zip(rows[::2], rows[1::2], strict=True):
        assert (first["endpoint"], second["endpoint"]) == ENDPOINTS
        assert first["payload"] == second["payload"]
        assert first["submission_id"] == second["submission_id"] == submission_id
        assert (first["status"], first["attempts"]) == ("pending", 0)
        assert json.loads(first["payload"])["type"] == first["event_type"]


def test_a_webhook_on_the_signed_url_announces_a_final_state(
    app: Flask, client: FlaskClient, engine: Engine
) -> None:
    add_submission(engine)
    assert post(client, token_url(), job_payload(), msg_id="m1").status_code == 200
    assert_announced(engine, "submission.succeeded")
    body = json.loads(notifications(engine)[0]["payload"])
    # The submission object, as `submissions show` prints it and as it was committed.
    with Session(engine) as session:
        stored = get_submission(session, "sub_1")
        assert stored is not None
        assert body["data"] == submission_json(stored)
    assert body["data"]["output_url"] == "https://cdn.example.com/job_abc123.mp4"
    assert datetime.fromisoformat(body["timestamp"]) <= datetime.now(UTC)


def test_a_webhook_on_the_project_url_announces_it_and_resends_add_nothing(
    client: FlaskClient, engine: Engine
) -> None:
    add_submission(engine, job_id="job_abc123")
    failed = event_envelope(job_payload(status="failed", error="bad input"), event_id="evt_9")
    assert post(client, PROJECT_URL, failed, msg_id="m1").status_code == 200
    assert post(client, PROJECT_URL, failed, msg_id="m1").get_json()["outcome"] == "duplicate"
    assert post(client, PROJECT_URL, failed, msg_id="m2").get_json()["outcome"] == "duplicate"
    late = job_payload(status="processing")
    assert post(client, PROJECT_URL, late, msg_id="m3").get_json()["outcome"] == "stale"
    assert_announced(engine, "submission.failed")


def test_a_webhook_announces_to_each_endpoint_record_taking_its_type_in_its_write(
    client: FlaskClient, engine: Engine
) -> None:
    """Endpoint records made beside NOTIFY_URL's get what they take, and nothing else.

    On PostgreSQL the endpoints come back from the statement that stores the delivery and
    its change: no statement reads them on its own.
    """
    now = datetime.now(UTC)
    with engine.begin() as conn:
        every = add_endpoint(conn, "https://every.example.com/in", now=now, event_types=("*",))
        add_endpoint(conn, "https://failed.example.com/in", now=now, event_types=(FAILED,))
    add_submission(engine)
    statements: list[str] = []

    def heard(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    sa.event.listen(engine, "before_cursor_execute", heard)
    try:
        assert post(client, token_url(), job_payload(), msg_id="m1").status_code == 200
    finally:
        sa.event.remove(engine, "before_cursor_execute", heard)
    rows = notifications(engine)
    assert sorted(row["endpoint"] for row in rows) == sorted([*ENDPOINTS, every["url"]])
    assert {row["event_type"] for row in rows} == {"submission.succeeded"}
    reads = [statement for statement in statements if "notify_endpoints" in statement]
    if engine.dialect.name == "postgresql":
        assert len(reads) == 1
        assert "webhook_events" in reads[0]
        assert "UPDATE submissions" in reads[0]


def test_running_changes_are_announced_only_with_notify_events_all(
    app_config: dict[str, Any], engine: Engine
) -> None:
    add_submission(engine)
    for events, expected in (("final", 0), ("all", 2)):
        app = create_app({**app_config, "NOTIFY_EVENTS": events})
        try:
            with app.app_context():
                outbox = get_outbox(app)
            with engine.begin() as conn:
                row = find_submission(conn, submission_id="sub_1")
                assert row is not None
                state = normalise(job_payload(status="processing"))
                apply_job_state(conn, row, state, now=datetime.now(UTC), outbox=outbox)
                conn.execute(sa.update(_submissions).values(status="pending"))
        finally:
            app.extensions["jobhooks.engine"].dispose()
        assert len(notifications(engine)) == expected
    assert_announced(engine, "submission.updated")


def test_a_reconcile_pass_and_its_expiry_announce_through_the_same_rules(
    ittybit_api: HTTPServer, app: Flask, runner: FlaskCliRunner, engine: Engine
) -> None:
    fake = FakeIttybit(ittybit_api)
    add_submission(engine, "sub_1", job_id="job_1")
    add_submission(engine, "sub_2", job_id="job_2")
    fake.job("job_1", "succeeded")
    fake.job("job_2", "processing")
    with engine.begin() as conn:  # sub_2 was sent two days ago and never finished
        conn.execute(
            sa.update(_submissions)
            .where(_submissions.c.submission_id == "sub_2")
            .values(submitted_at=datetime.now(UTC) - timedelta(days=2))
        )
    result = runner.invoke(args=["reconcile", "--older-than", "0s"])
    assert result.exit_code == 0, result.output
    rows = notifications(engine)
    assert sorted((row["submission_id"], row["event_type"]) for row in rows) == sorted(
        [("sub_1", "submission.succeeded")] * 2 + [("sub_2", "submission.expired")] * 2
    )
    # A second pass finds nothing new to say.
    assert runner.invoke(args=["reconcile", "--older-than", "0s"]).exit_code == 0
    assert len(notifications(engine)) == 4


def test_re_matching_and_replaying_announce_once(
    app: Flask, client: FlaskClient, runner: FlaskCliRunner, engine: Engine
) -> None:
    first = job_payload("job_1", "succeeded", submission_id="sub_1")
    second = job_payload("job_2", "failed", submission_id="sub_2", error="x")
    assert post(client, PROJECT_URL, first, msg_id="m1").status_code == 202
    assert post(client, PROJECT_URL, second, msg_id="m2").status_code == 202
    assert notifications(engine) == []
    add_submission(engine, "sub_1")
    add_submission(engine, "sub_2")

    report = rematch_unmatched(engine, now=datetime.now(UTC), outbox=get_outbox(app), batch=1)
    assert report.matched == 2
    replayed = runner.invoke(args=["events", "replay", "1", "2"])
    assert replayed.exit_code == 0, replayed.output
    assert "duplicate" in replayed.output
    rows = notifications(engine)
    assert [(row["submission_id"], row["event_type"]) for row in rows] == [
        ("sub_1", "submission.succeeded"),
        ("sub_1", "submission.succeeded"),
        ("sub_2", "submission.failed"),
        ("sub_2", "submission.failed"),
    ]


def test_a_replay_that_changes_a_status_announces_it(
    client: FlaskClient, runner: FlaskCliRunner, engine: Engine
) -> None:
    add_submission(engine)
    assert post(client, token_url(), job_payload(), msg_id="m1").status_code == 200
    with engine.begin() as conn:  # the state was lost since (a restore, a hand edit)
        conn.execute(sa.update(_submissions).values(status="processing", output_url=None))
        conn.execute(sa.text("DELETE FROM notifications"))
    result = runner.invoke(args=["events", "replay", "1"])
    assert result.exit_code == 0, result.output
    assert_announced(engine, "submission.succeeded")


def test_the_api_reconcile_announces_what_it_applies(
    ittybit_api: HTTPServer, app: Flask, engine: Engine
) -> None:
    fake = FakeIttybit(ittybit_api)
    fake.job("job_abc123", "cancelled")
    add_submission(engine, job_id="job_abc123")
    settings: Settings = app.extensions["jobhooks.settings"]
    with client_from_settings(settings) as client:
        outcome = ask_ittybit_now(
            engine,
            client,
            "sub_1",
            guard=nullcontext(True),
            now=datetime.now(UTC),
            give_up_after=3600,
            outbox=get_outbox(app),
            source="api",
        )
    assert outcome is not None
    assert_announced(engine, "submission.cancelled")


def test_submit_announces_its_running_state_with_notify_events_all(
    ittybit_api: HTTPServer, app_config: dict[str, Any]
) -> None:
    ittybit_api.expect_request("/jobs", method="POST").respond_with_json(
        {"id": "job_1", "object": "job", "status": "processing"}, status=201
    )
    app = create_app({**app_config, "NOTIFY_EVENTS": "all"})
    engine = app.extensions["jobhooks.engine"]
    try:
        result = app.test_cli_runner().invoke(
            args=[
                "submit",
                "--input",
                "https://example.com/a.mp4",
                "--user-id",
                "user_1",
                "--submission-id",
                "sub_1",
            ]
        )
        assert result.exit_code == 0, result.output
        assert_announced(engine, "submission.updated")
    finally:
        engine.dispose()


def test_test_submissions_are_never_announced(
    app: Flask, client: FlaskClient, engine: Engine
) -> None:
    settings: Settings = app.extensions["jobhooks.settings"]
    with Session(engine) as session:
        test_submission = create_test_submission(session, now=datetime.now(UTC))
    trigger = build_trigger(
        settings, test_submission, "succeeded", base_url="http://x", now=datetime.now(UTC)
    )
    path = trigger.url.removeprefix("http://x")
    answer = client.post(path, data=trigger.body, headers=trigger.headers)
    assert answer.get_json()["outcome"] == "applied"
    assert notifications(engine) == []


def test_a_change_rolled_back_leaves_no_notification(app: Flask, engine: Engine) -> None:
    add_submission(engine)
    with pytest.raises(RuntimeError, match="after the change"), engine.begin() as conn:
        row = find_submission(conn, submission_id="sub_1")
        assert row is not None
        apply_job_state(
            conn, row, normalise(job_payload()), now=datetime.now(UTC), outbox=get_outbox(app)
        )
        assert len(conn.execute(sa.text("SELECT id FROM notifications")).all()) == 2
        raise RuntimeError("something failed after the change, in its transaction")
    assert notifications(engine) == []
    assert submission(engine)["status"] == "pending"


@pytest.fixture
def outbox_locked(
    app_config: dict[str, Any], database_url: str
) -> Callable[[], AbstractContextManager[None]]:
    """Return a context that makes a webhook's transaction fail as 'database unavailable'.

    SQLite: another connection holds the write lock. PostgreSQL: another transaction holds
    a lock on the notifications table alone, so the webhook's inbox row and submission
    update are written and its notification insert is what waits and then fails
    (lock_timeout): the change is rolled back after being written, as at a failed commit.
    """
    if database_url.startswith("sqlite"):
        app_config["SQLITE_BUSY_TIMEOUT_MS"] = "300"

    @contextmanager
    def locked() -> Iterator[None]:
        if database_url.startswith("sqlite"):
            conn = sqlite3.connect(sa.make_url(database_url).database or "", isolation_level=None)
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield
            finally:
                conn.execute("ROLLBACK")
                conn.close()
            return
        engine = sa.create_engine(database_url)
        try:
            with engine.connect() as conn, conn.begin():
                conn.execute(sa.text("LOCK TABLE notifications IN EXCLUSIVE MODE"))
                yield
        finally:
            engine.dispose()

    return locked


def test_a_webhook_answered_503_leaves_no_notification_and_its_retry_one(
    outbox_locked: Callable[[], AbstractContextManager[None]],
    client: FlaskClient,
    engine: Engine,
) -> None:
    add_submission(engine)
    before = submission(engine)
    with outbox_locked():
        answer = post(client, token_url(), job_payload(), msg_id="m1")
    assert answer.status_code == 503, answer.get_data(as_text=True)
    assert notifications(engine) == []
    assert submission(engine) == before
    # ittybit retries the same delivery: now it is applied, and announced once.
    assert post(client, token_url(), job_payload(), msg_id="m1").status_code == 200
    assert_announced(engine, "submission.succeeded")


def test_an_endpoint_named_twice_is_owed_one_notification() -> None:
    settings = Settings.from_env(
        {
            "APP_ENV": "test",
            "SECRET_KEY": "x",
            "NOTIFY_URL": f"{ENDPOINTS[0]},{ENDPOINTS[1]},{ENDPOINTS[0]}",
            "NOTIFY_SECRET": NOTIFY_SECRET,
        }
    )
    defaults = Outbox.from_settings(settings).defaults
    assert tuple(spec.url for spec in defaults) == ENDPOINTS
    assert [spec.id for spec in defaults] == ["ep_default", "ep_default_2"]


def test_an_endpoint_is_shown_without_credentials() -> None:
    url = "https://user:pw@app.example.com:8443/hooks/in?key=k-123#frag"
    assert endpoint_label(url) == "https://app.example.com:8443/hooks/in"
    assert endpoint_label("http://[::1]:9000/x?y=1") == "http://[::1]:9000/x"


def test_retry_revives_dead_ones_and_leaves_delivered_and_leased_ones(
    app: Flask, client: FlaskClient, engine: Engine
) -> None:
    add_submission(engine)
    assert post(client, token_url(), job_payload(), msg_id="m1").status_code == 200
    now = datetime.now(UTC)
    later = now + timedelta(hours=1)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE notifications SET status = 'delivered' WHERE id = 1"))
        conn.execute(
            sa.text(
                "UPDATE notifications SET status = 'pending', lease_owner = 'w', "
                "lease_until = :until, next_attempt_at = :later WHERE id = 2"
            ),
            {"until": later, "later": later},
        )
    with engine.begin() as conn:
        assert retry_notifications(conn, [1, 2, 99], now=now) == 1
    delivered, leased = notifications(engine)
    assert delivered["status"] == "delivered"
    # Due now, but the worker sending it keeps its lease: nobody else sends it meanwhile.
    assert (leased["status"], leased["lease_owner"]) == ("pending", "w")
    assert leased["next_attempt_at"] == now
