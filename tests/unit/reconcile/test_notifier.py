"""Delivering the outbox to a real local application that verifies with ``standardwebhooks``.

The application (``devtools.notify_app``) checks every request with the reference library,
never with jobhooks' own code, dedupes on ``webhook-id`` and records what it saw.
"""

from __future__ import annotations

import itertools
import json
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.engine import Engine

from config.settings import Settings
from devtools.notify_app import Answer, NotifyApp, Received
from receiver.flows.outbox import retry_dead_notifications
from receiver.ittybit.client import tls_context
from receiver.observe.metrics import get_metrics
from receiver.store.engines import create_db_engine
from receiver.store.models import Notification
from reconcile.notifier import Backoff, Notifier
from reconcile.notify_claims import claim_due, record_failed
from tests.helpers import wait_until
from tests.notify_helpers import (
    NOTIFY_KEY,
    NOTIFY_SECRET,
    OLD_NOTIFY_SECRET,
    add_submissions,
    change,
    notifications,
    outbox_to,
)

_notifications = Notification.__table__  # type: ignore[attr-defined]
#: Quick retries for tests: 50 ms doubling up to 400 ms (each drawn from its upper half).
FAST = Backoff(first=0.05, cap=0.4)


def fast_notifier(engine: Engine, **options: Any) -> Notifier:
    """A notifier quick to retry and to look for due rows (it signs with the endpoints')."""
    values: dict[str, Any] = {
        "max_age": 60.0,
        "backoff": FAST,
        "poll_interval": 0.02,
    }
    values.update(options)
    return Notifier(engine, **values)


@contextmanager
def looping(notifier: Notifier) -> Iterator[Notifier]:
    """Run ``notifier``'s loop on a thread while the block runs; stop and join it after."""
    thread = threading.Thread(target=notifier.run_forever, name="test-notifier")
    thread.start()
    try:
        yield notifier
    finally:
        notifier.stop.set()
        thread.join(timeout=30)
        notifier.close()
        assert not thread.is_alive(), "the notifier did not stop"


def by_submission(received: list[Received]) -> dict[str | None, list[str]]:
    """Return, per submission, the types applied by the application in the order applied."""
    order: dict[str | None, list[str]] = {}
    for item in received:
        if item.applied:
            order.setdefault(item.submission_id, []).append(item.type)
    return order


@pytest.fixture
def application() -> Iterator[NotifyApp]:
    with NotifyApp([NOTIFY_SECRET]) as app:
        yield app


def all_delivered(engine: Engine) -> bool:
    return all(row["status"] == "delivered" for row in notifications(engine))


def test_a_notification_is_signed_sent_once_and_recorded(
    engine: Engine, application: NotifyApp
) -> None:
    [sid] = add_submissions(engine, 1)
    change(engine, outbox_to(application.url), sid, "succeeded")
    [row] = notifications(engine)

    with fast_notifier(engine) as notifier:
        tally = notifier.run()

    assert (tally.delivered, tally.failed, tally.dead) == (1, 0, 0)
    [received] = application.received
    assert received.verified and received.applied
    assert received.webhook_id == row["message_id"]
    # The exact body committed with the change, verified byte for byte by the library.
    assert received.body == json.loads(row["payload"])
    assert received.body["type"] == "submission.succeeded"
    assert received.body["data"]["output_url"] == f"https://cdn.example.com/job_{sid}.mp4"
    [stored] = notifications(engine)
    assert stored["status"] == "delivered"
    assert (stored["attempts"], stored["last_status"], stored["last_error"]) == (1, 204, None)
    assert stored["delivered_at"] is not None
    assert (stored["lease_owner"], stored["lease_until"]) == (None, None)


def test_notifiers_verify_tls_with_the_shared_context(engine: Engine) -> None:
    for _ in range(2):
        with fast_notifier(engine) as notifier:
            assert notifier.client._transport._pool._ssl_context is tls_context()  # type: ignore[attr-defined]


def test_the_endpoint_down_then_back_gets_everything_once_and_in_order(
    engine: Engine, application: NotifyApp
) -> None:
    outbox = outbox_to(application.url, events="all")
    application.stop()  # connections refused from now on
    ids = add_submissions(engine, 6)
    for sid in ids:
        change(engine, outbox, sid, "processing", "succeeded")
    rows = notifications(engine)
    assert len(rows) == 12

    with looping(fast_notifier(engine)):
        # Several failed attempts while it is down, at the head of each submission only.
        assert wait_until(
            lambda: all(row["attempts"] >= 2 for row in notifications(engine)[::2]), 10
        )
        down = notifications(engine)
        assert {row["attempts"] for row in down[1::2]} == {0}, "a later one went before"
        assert all("ConnectError" in (row["last_error"] or "") for row in down[::2])
        application.start()  # back, on the same port
        assert application.wait_applied(12, timeout=20)
        assert wait_until(lambda: all_delivered(engine))

    applied = [item.webhook_id for item in application.applied]
    assert sorted(applied) == sorted(row["message_id"] for row in rows)
    assert len(set(applied)) == 12
    assert by_submission(application.received) == {
        sid: ["submission.updated", "submission.succeeded"] for sid in ids
    }
    # Per submission, nothing of the later notification reached the application before the
    # earlier one was applied.
    for sid in ids:
        requests = [item for item in application.received if item.submission_id == sid]
        first_applied = next(i for i, item in enumerate(requests) if item.applied)
        assert all(item.type == "submission.updated" for item in requests[: first_applied + 1])


def test_half_the_requests_failing_with_500_all_arrive_with_backoff(
    app: Flask, engine: Engine, application: NotifyApp
) -> None:
    chance = random.Random(11)
    lock = threading.Lock()

    def flaky(_webhook_id: str, _attempt: int, _body: dict[str, Any]) -> Answer:
        with lock:
            return Answer(500) if chance.random() < 0.5 else Answer(200)

    application.answer = flaky
    outbox = outbox_to(application.url)
    for sid in add_submissions(engine, 10):
        change(engine, outbox, sid, "succeeded")
    backoff = Backoff(first=0.1, cap=0.8)

    with looping(fast_notifier(engine, backoff=backoff, metrics=get_metrics(app))):
        assert application.wait_applied(10, timeout=30)
        assert wait_until(lambda: all_delivered(engine))

    received = application.received
    failures = [item for item in received if item.status == 500]
    assert failures, "the seed should fail some requests"
    attempts = Counter(item.webhook_id for item in received)
    for row in notifications(engine):
        # Each attempt the application saw was recorded, and the last one delivered it.
        assert row["attempts"] == attempts[row["message_id"]]
        assert row["last_status"] == 200
        times = [item.at for item in received if item.webhook_id == row["message_id"]]
        for number, (before, after) in enumerate(itertools.pairwise(times), start=1):
            least = min(backoff.cap, backoff.first * 2 ** (number - 1)) * 0.5
            assert after - before >= least - 0.01, (row["message_id"], number, after - before)
    assert len(set(attempts)) == 10
    scraped = app.test_client().get("/metrics").get_data(as_text=True)
    assert f'jobhooks_notification_deliveries_total{{result="failed"}} {len(failures)}.0' in scraped
    assert 'jobhooks_notification_deliveries_total{result="delivered"} 10.0' in scraped


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_on_429_and_503_is_honoured(
    engine: Engine, application: NotifyApp, status: int
) -> None:
    def busy_once(_webhook_id: str, attempt: int, _body: dict[str, Any]) -> Answer:
        if attempt == 1:
            return Answer(status, (("Retry-After", "1"),))
        return Answer(200)

    application.answer = busy_once
    [sid] = add_submissions(engine, 1)
    change(engine, outbox_to(application.url), sid, "failed")

    with looping(fast_notifier(engine)):
        assert wait_until(lambda: notifications(engine)[0]["attempts"] == 1, 10)
        [waiting] = notifications(engine)
        assert (waiting["status"], waiting["last_status"]) == ("pending", status)
        wait = waiting["next_attempt_at"] - waiting["last_attempt_at"]
        assert wait >= timedelta(seconds=1), wait  # far above the 50 ms backoff
        assert application.wait_applied(1, timeout=10)

    first, second = application.received
    assert second.webhook_id == first.webhook_id
    assert second.at - first.at >= 0.99
    assert notifications(engine)[0]["status"] == "delivered"


def test_past_max_age_it_is_dead_kept_and_retryable_by_hand(
    app: Flask, client: FlaskClient, engine: Engine, application: NotifyApp
) -> None:
    [sid] = add_submissions(engine, 1)
    change(engine, outbox_to(application.url), sid, "succeeded")
    application.stop()

    with looping(fast_notifier(engine, max_age=0.5, metrics=get_metrics(app))):
        assert wait_until(lambda: notifications(engine)[0]["status"] == "dead", 10)
    [dead] = notifications(engine)
    assert dead["attempts"] >= 2
    # The last attempt came at the deadline, not later and not never.
    deadline = dead["created_at"] + timedelta(seconds=0.5)
    assert dead["last_attempt_at"] >= deadline - timedelta(seconds=0.1)
    scraped = client.get("/metrics").get_data(as_text=True)
    assert "jobhooks_notifications_dead 1.0" in scraped
    assert "jobhooks_notifications_pending 0.0" in scraped
    assert "jobhooks_notifications_given_up_total 1.0" in scraped

    # Dead ones are not retried on their own, however long the worker runs.
    application.start()
    with looping(fast_notifier(engine, max_age=0.5)):
        time.sleep(0.3)
    assert application.received == []

    with engine.begin() as conn:
        assert retry_dead_notifications(conn, now=datetime.now(UTC)) == 1
    with fast_notifier(engine, max_age=0.5) as notifier:
        assert notifier.run().delivered == 1
    [received] = application.received
    assert received.webhook_id == dead["message_id"]
    assert notifications(engine)[0]["status"] == "delivered"


def test_pending_gauges_read_the_database_at_scrape_time(
    client: FlaskClient, engine: Engine
) -> None:
    [sid] = add_submissions(engine, 1)
    change(
        engine, outbox_to("https://app.example.com/a", "https://app.example.com/b"), sid, "failed"
    )
    with engine.begin() as conn:
        conn.execute(
            sa.update(_notifications).values(created_at=datetime.now(UTC) - timedelta(minutes=10))
        )
    scraped = client.get("/metrics").get_data(as_text=True)
    assert "jobhooks_notifications_pending 2.0" in scraped
    [age] = [
        float(line.split()[-1])
        for line in scraped.splitlines()
        if line.startswith("jobhooks_notifications_oldest_pending_age_seconds ")
    ]
    assert 600 <= age < 660


def test_key_rotation_the_old_secret_still_verifies(engine: Engine) -> None:
    """NOTIFY_SECRET=new,old: an application holding either one verifies every request."""
    with (
        NotifyApp([OLD_NOTIFY_SECRET]) as on_old,
        NotifyApp([NOTIFY_SECRET]) as on_new,
        NotifyApp(["whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3OA=="]) as stranger,
    ):
        [sid] = add_submissions(engine, 1)
        outbox = outbox_to(
            on_old.url, on_new.url, stranger.url, secrets=(NOTIFY_SECRET, OLD_NOTIFY_SECRET)
        )
        change(engine, outbox, sid, "succeeded")
        with fast_notifier(engine) as notifier:
            tally = notifier.run()
        assert (tally.delivered, tally.failed) == (2, 1)
        assert [item.verified for item in on_old.received] == [True]
        assert [item.verified for item in on_new.received] == [True]
        # The checks are real: an application with another secret refuses it.
        assert [(item.verified, item.status) for item in stranger.received] == [(False, 401)]
    by_endpoint = {row["endpoint"]: row for row in notifications(engine)}
    assert by_endpoint[stranger.url]["status"] == "pending"
    assert by_endpoint[stranger.url]["last_status"] == 401


@pytest.mark.slow
def test_several_workers_never_send_one_notification_at_the_same_time(
    app: Flask, database_url: str, application: NotifyApp
) -> None:
    """Three notifiers, each with its own pool of connections (processes would be the same to
    the database), share 90 notifications; the application answers slowly and often 500."""
    chance = random.Random(5)
    lock = threading.Lock()

    def slow_and_flaky(_webhook_id: str, _attempt: int, _body: dict[str, Any]) -> Answer:
        time.sleep(0.01)
        with lock:
            return Answer(500) if chance.random() < 0.3 else Answer(200)

    application.answer = slow_and_flaky
    settings: Settings = app.extensions["jobhooks.settings"]
    engines = [create_db_engine(settings) for _ in range(3)]
    try:
        outbox = outbox_to(application.url, events="all")
        ids = add_submissions(engines[0], 30)
        for sid in ids:
            change(engines[0], outbox, sid, "processing", "succeeded", "failed")
        workers = [
            fast_notifier(engine, owner=f"worker-{n}", concurrency=4, backoff=FAST)
            for n, engine in enumerate(engines)
        ]
        with looping(workers[0]), looping(workers[1]), looping(workers[2]):
            assert application.wait_applied(90, timeout=60)
            assert wait_until(lambda: all_delivered(engines[0]))
        rows = notifications(engines[0])
    finally:
        for engine in engines:
            engine.dispose()

    assert application.overlaps == []
    applied = [item.webhook_id for item in application.applied]
    assert sorted(applied) == sorted(row["message_id"] for row in rows)
    attempts = Counter(item.webhook_id for item in application.received)
    assert all(row["attempts"] == attempts[row["message_id"]] for row in rows)
    # A later one never overtook an earlier one of its submission, whoever sent them.
    assert by_submission(application.received) == {
        sid: ["submission.updated", "submission.succeeded", "submission.failed"] for sid in ids
    }


def test_a_lease_held_by_another_is_skipped_and_its_record_wins(engine: Engine) -> None:
    [sid] = add_submissions(engine, 1)
    change(engine, outbox_to("https://app.example.com/a"), sid, "succeeded")
    now = datetime.now(UTC)
    with engine.begin() as conn:
        [first] = claim_due(conn, now=now, limit=5, owner="first", lease_seconds=60)
    with engine.begin() as conn:
        assert claim_due(conn, now=now, limit=5, owner="second", lease_seconds=60) == []
    later = now + timedelta(seconds=61)  # the first one's lease has run out
    with engine.begin() as conn:
        [second] = claim_due(conn, now=later, limit=5, owner="second", lease_seconds=60)
    assert second.message_id == first.message_id
    with engine.begin() as conn:
        held = record_failed(
            conn,
            first.id,
            owner="first",
            attempted_at=now,
            status=500,
            error="HTTP 500",
            next_attempt_at=None,
        )
    assert held is False
    [row] = notifications(engine)
    assert (row["status"], row["lease_owner"], row["attempts"]) == ("pending", "second", 0)


def test_one_log_line_per_attempt_and_never_the_secret(
    engine: Engine, application: NotifyApp, caplog: pytest.LogCaptureFixture
) -> None:
    application.answer = lambda _id, attempt, _body: Answer(500 if attempt == 1 else 204)
    [sid] = add_submissions(engine, 1)
    endpoint = f"{application.url}?key=app-query-credential-77"
    change(
        engine, outbox_to(endpoint, secrets=(NOTIFY_SECRET, OLD_NOTIFY_SECRET)), sid, "succeeded"
    )
    caplog.set_level(logging.INFO, logger="reconcile.notifier")
    with looping(fast_notifier(engine)):
        assert application.wait_applied(1, timeout=10)
        assert wait_until(lambda: all_delivered(engine))

    lines = [
        record.data  # type: ignore[attr-defined]
        for record in caplog.records
        if getattr(record, "data", {}).get("event") == "notification_attempt"
    ]
    [row] = notifications(engine)
    assert [(line["status"], line["result"], line["attempt"]) for line in lines] == [
        (500, "failed", 1),
        (204, "delivered", 2),
    ]
    for line in lines:
        assert line["message_id"] == row["message_id"]
        assert line["endpoint"] == application.url  # the query string is left out
        assert 0 <= line["seconds"] < 10
    text = caplog.text + json.dumps(lines)
    for secret in ("app-query-credential-77", NOTIFY_SECRET, OLD_NOTIFY_SECRET):
        assert secret not in text
    assert NOTIFY_KEY.decode() not in text
