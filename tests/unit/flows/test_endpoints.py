"""Notification endpoints as records: commands, fan-out, signing, isolation, attempts, health.

Every application here is a real local HTTP server; ``devtools.notify_app`` verifies with the
``standardwebhooks`` reference library, never with jobhooks' own code.
"""

from __future__ import annotations

import base64
import http.server
import json
import logging
import re
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from sqlalchemy.engine import Engine
from standardwebhooks.webhooks import Webhook

from config.settings import Settings
from devtools.notify_app import Answer, NotifyApp
from receiver import create_app
from receiver.flows.admin_accounts import create_admin
from receiver.flows.endpoints import add_endpoint, disable_endpoint, rotate_secret
from receiver.observe.metrics import DatabaseCollector
from receiver.store.engines import get_engine
from receiver.store.models import NotificationAttempt, NotifyEndpoint
from reconcile.notifier import Backoff, Notifier
from tests.admin_helpers import EMAIL, PASSWORD, post_form, sign_in
from tests.api_helpers import bearer
from tests.helpers import wait_until
from tests.notify_helpers import NOTIFY_SECRET, add_submissions, change, notifications, outbox_to

_endpoints = NotifyEndpoint.__table__  # type: ignore[attr-defined]
_attempts = NotificationAttempt.__table__  # type: ignore[attr-defined]
FAST = Backoff(first=0.05, cap=0.4)
OTHER_SECRET = "whsec_" + base64.b64encode(b"another-application-secret-32byt").decode()


def endpoint(engine: Engine, endpoint_id: str) -> dict[str, Any]:
    with engine.connect() as conn:
        row = conn.execute(sa.select(_endpoints).where(_endpoints.c.id == endpoint_id)).one()
        return dict(row._mapping)


def attempts(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [
            dict(r._mapping) for r in conn.execute(sa.select(_attempts).order_by(_attempts.c.id))
        ]


def add(engine: Engine, url: str, *types: str, secret: str | None = None) -> dict[str, Any]:
    with engine.begin() as conn:
        return add_endpoint(
            conn, url, now=datetime.now(UTC), event_types=types or ("*",), secret=secret
        )


def notifier(engine: Engine, **options: Any) -> Notifier:
    values: dict[str, Any] = {"max_age": 3600.0, "backoff": FAST, "poll_interval": 0.02}
    values.update(options)
    return Notifier(engine, **values)


def quiet() -> Any:
    """An outbox without NOTIFY_URL: it announces to the endpoint records only."""
    return outbox_to()


class Recorder:
    """A local application that records headers and answers with a scripted status and body."""

    def __init__(self, status: int = 204, body: bytes = b"", hang: float = 0.0) -> None:
        self.status, self.body, self.hang = status, body, hang
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.release = threading.Event()
        recorder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                recorder.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                if recorder.hang:
                    recorder.release.wait(recorder.hang)
                self.send_response(recorder.status)
                self.send_header("Content-Length", str(len(recorder.body)))
                self.end_headers()
                self.wfile.write(recorder.body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/in"
        # shutdown() waits for the serving loop to look up (every 0.5 s by default).
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def __enter__(self) -> Recorder:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def cli(runner: FlaskCliRunner, *args: str) -> Any:
    return runner.invoke(args=list(args))


# -- 1. endpoints are records ------------------------------------------------------------------


def test_endpoint_commands_keep_records_and_show_the_secret_once(
    runner: FlaskCliRunner, engine: Engine, app: Flask
) -> None:
    result = cli(
        runner, "endpoints", "add", "https://app.example.com/in?key=k-9",
        "--events", "submission.succeeded,submission.failed", "--rate", "5",
        "--description", "the app", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    made = json.loads(result.stdout)
    assert made["id"].startswith("ep_") and made["status"] == "active"
    assert made["event_types"] == ["submission.succeeded", "submission.failed"]
    assert (made["rate"], made["description"]) == (5.0, "the app")
    assert len(base64.b64decode(made["secret"].removeprefix("whsec_"))) == 24
    assert endpoint(engine, made["id"])["secret"] == made["secret"]
    for args in (("list",), ("list", "--json"), ("show", made["id"])):
        shown = cli(runner, "endpoints", *args)
        assert shown.exit_code == 0 and made["id"] in shown.stdout
        assert made["secret"] not in shown.stdout + shown.stderr
        assert "k-9" not in shown.stdout or args[0] == "show" or "--json" in args

    given = cli(runner, "endpoints", "add", "https://b.example.com/in", "--secret", OTHER_SECRET)
    assert given.exit_code == 0 and OTHER_SECRET in given.stdout
    assert (
        cli(runner, "endpoints", "add", "https://c.example.com", "--events", "x.y").exit_code == 1
    )
    assert cli(runner, "endpoints", "add", "ftp://c.example.com").exit_code == 1
    assert cli(runner, "endpoints", "show", "ep_nope").exit_code == 1

    assert cli(runner, "endpoints", "disable", made["id"]).exit_code == 0
    assert endpoint(engine, made["id"])["status"] == "disabled"
    assert cli(runner, "endpoints", "enable", made["id"]).exit_code == 0
    assert endpoint(engine, made["id"])["status"] == "active"

    rotated = cli(runner, "endpoints", "rotate-secret", made["id"])
    assert rotated.exit_code == 0
    row = endpoint(engine, made["id"])
    assert row["secret"] in rotated.stdout and row["secret"] != made["secret"]
    assert row["previous_secret"] == made["secret"]
    overlap = row["previous_secret_expires_at"] - datetime.now(UTC)
    assert timedelta(hours=23, minutes=59) < overlap <= timedelta(hours=24)


def test_remove_drops_the_endpoints_pending_notifications_and_says_so(
    runner: FlaskCliRunner, engine: Engine
) -> None:
    kept = add(engine, "https://kept.example.com/in")
    gone = add(engine, "https://gone.example.com/in")
    for sid in add_submissions(engine, 2):
        change(engine, quiet(), sid, "succeeded")
    result = cli(runner, "endpoints", "remove", gone["id"])
    assert result.exit_code == 0
    assert "2 pending notification(s) dropped" in result.stdout
    assert {row["endpoint_id"] for row in notifications(engine)} == {kept["id"]}


def test_notify_url_makes_and_updates_the_default_endpoint(
    app_config: dict[str, Any], engine: Engine
) -> None:
    def start(**env: str) -> dict[str, Any]:
        made = create_app({**app_config, **env})
        get_engine(made).dispose()
        return endpoint(engine, "ep_default")

    first = start(NOTIFY_URL="https://app.example.com/in", NOTIFY_SECRET=NOTIFY_SECRET)
    assert (first["url"], first["secret"], first["status"]) == (
        "https://app.example.com/in", NOTIFY_SECRET, "active"
    )  # fmt: skip
    assert first["event_types"] == [
        "submission.succeeded", "submission.failed", "submission.cancelled", "submission.expired"
    ]  # fmt: skip
    again = start(
        NOTIFY_URL="https://app.example.com/v2", NOTIFY_SECRET=f"{OTHER_SECRET},{NOTIFY_SECRET}",
        NOTIFY_EVENTS="all",
    )  # fmt: skip
    assert (again["url"], again["secret"], again["previous_secret"]) == (
        "https://app.example.com/v2", OTHER_SECRET, NOTIFY_SECRET
    )  # fmt: skip
    assert again["event_types"] == ["*"]


# -- 2. fan-out and isolation ------------------------------------------------------------------


def test_each_change_writes_one_row_per_endpoint_taking_its_type(engine: Engine) -> None:
    every = add(engine, "https://every.example.com/in", "*")
    failed_only = add(engine, "https://failed.example.com/in", "submission.failed")
    ops_only = add(engine, "https://ops.example.com/in", "endpoint.disabled")
    held = add(engine, "https://held.example.com/in", "submission.succeeded")
    with engine.begin() as conn:
        disable_endpoint(conn, held["id"], reason="test", now=datetime.now(UTC))
    ok, bad = add_submissions(engine, 2)
    change(engine, quiet(), ok, "processing", "succeeded")
    change(engine, quiet(), bad, "failed")
    sent = sorted(
        (row["submission_id"], row["event_type"], row["endpoint_id"])
        for row in notifications(engine)
    )
    assert sent == sorted([
        (ok, "submission.updated", every["id"]),
        (ok, "submission.succeeded", every["id"]),
        (ok, "submission.succeeded", held["id"]),  # kept for it while it is disabled
        (bad, "submission.failed", every["id"]),
        (bad, "submission.failed", failed_only["id"]),
    ])  # fmt: skip
    assert ops_only["id"] not in {row["endpoint_id"] for row in notifications(engine)}


def test_workers_of_different_environments_sign_with_the_endpoints_secret(
    engine: Engine,
) -> None:
    """Two workers whose NOTIFY_SECRET differ (and differ from the endpoint's) sign alike."""
    environments = (NOTIFY_SECRET, "whsec_" + base64.b64encode(b"x" * 32).decode())
    with NotifyApp([OTHER_SECRET]) as application:
        add(engine, application.url, secret=OTHER_SECRET)
        for sid, environment_secret in zip(add_submissions(engine, 2), environments, strict=True):
            change(engine, quiet(), sid, "succeeded")
            settings = Settings.from_env(
                {
                    "APP_ENV": "test", "SECRET_KEY": "x",
                    "NOTIFY_URL": "https://elsewhere.example.com/in",
                    "NOTIFY_SECRET": environment_secret,
                }
            )  # fmt: skip
            with Notifier.from_settings(engine, settings, poll_interval=0.02) as worker:
                assert worker.run().delivered == 1
        assert [(item.verified, item.status) for item in application.received] == [
            (True, 204), (True, 204)
        ]  # fmt: skip


def test_a_rotated_secret_signs_beside_the_old_one_for_a_day(engine: Engine) -> None:
    with Recorder() as application:
        made = add(engine, application.url)
        with engine.begin() as conn:
            new = rotate_secret(conn, made["id"], now=datetime.now(UTC))
        first, second = add_submissions(engine, 2)
        change(engine, quiet(), first, "succeeded")
        with notifier(engine) as worker:
            assert worker.run().delivered == 1
        change(engine, quiet(), second, "succeeded")
        # A day on: the old secret's overlap has run out.
        with engine.begin() as conn:
            conn.execute(
                sa.update(_endpoints).values(
                    previous_secret_expires_at=datetime.now(UTC) - timedelta(seconds=1)
                )
            )
        with notifier(engine) as worker:
            assert worker.run().delivered == 1
    (during, during_body), (after, after_body) = application.requests
    assert during["webhook-signature"].count("v1,") == 2
    for secret in (made["secret"], new):
        Webhook(secret).verify(during_body, during)
    assert after["webhook-signature"].count("v1,") == 1
    Webhook(new).verify(after_body, after)


def test_one_hanging_endpoint_does_not_delay_the_others(engine: Engine) -> None:
    with (
        Recorder(hang=20) as hanging,
        NotifyApp([NOTIFY_SECRET]) as one,
        NotifyApp([NOTIFY_SECRET]) as two,
    ):
        for url in (hanging.url, one.url, two.url):
            add(engine, url, secret=NOTIFY_SECRET)
        ids = add_submissions(engine, 6)
        with notifier(engine, concurrency=4, timeout=15.0, lease_seconds=60.0) as worker:
            thread = threading.Thread(target=worker.run_forever)
            thread.start()
            try:
                started = time.monotonic()
                for sid in ids:
                    change(engine, quiet(), sid, "succeeded")
                assert one.wait_applied(6, timeout=5) and two.wait_applied(6, timeout=5)
                took = time.monotonic() - started
                # Its attempt may still be on its way into the recorder's thread on a busy
                # machine; it must arrive, but need not have by the time the others are done.
                assert wait_until(lambda: len(hanging.requests) >= 1, timeout=5)
            finally:
                hanging.release.set()
                worker.stop.set()
                thread.join(30)
    assert took < 2.0, took


def test_a_failing_endpoint_gets_one_attempt_at_a_time(engine: Engine) -> None:
    with Recorder(hang=20) as hanging, NotifyApp([NOTIFY_SECRET]) as healthy:
        hanging_id = add(engine, hanging.url, secret=NOTIFY_SECRET)["id"]
        add(engine, healthy.url, secret=NOTIFY_SECRET)
        with engine.begin() as conn:  # it failed a moment ago
            conn.execute(
                _endpoints.update()
                .where(_endpoints.c.id == hanging_id)
                .values(failing_since=datetime.now(UTC), last_failure="timed out")
            )
        ids = add_submissions(engine, 6)
        for sid in ids:
            change(engine, quiet(), sid, "succeeded")
        with notifier(engine, concurrency=8, timeout=15.0, lease_seconds=60.0) as worker:
            thread = threading.Thread(target=worker.run_forever)
            thread.start()
            try:
                assert healthy.wait_applied(6, timeout=5)
                time.sleep(0.3)  # more claims would have sent more to it by now
                assert len(hanging.requests) == 1  # a probe, not half the slots
            finally:
                hanging.release.set()
                worker.stop.set()
                thread.join(30)


# -- 3. attempts -------------------------------------------------------------------------------


def test_each_attempt_is_recorded_listed_and_pruned(runner: FlaskCliRunner, engine: Engine) -> None:
    with Recorder(status=500, body=b"e" * 3000) as application:
        add(engine, application.url)
        [sid] = add_submissions(engine, 1)
        change(engine, quiet(), sid, "succeeded")
        at = [datetime.now(UTC)]
        with notifier(engine, clock=lambda: at[0]) as worker:
            worker.run()
            application.status, application.body = 200, b'{"ok":true}'
            at[0] += timedelta(seconds=1)  # past the retry's backoff (at most 50 ms)
            worker.run()
    failed, delivered = attempts(engine)
    [row] = notifications(engine)
    assert failed["notification_id"] == delivered["notification_id"] == row["id"]
    assert (failed["status_code"], failed["error"], failed["response"]) == (
        500,
        "HTTP 500",
        "e" * 1024,
    )
    assert (delivered["status_code"], delivered["response"]) == (200, '{"ok":true}')
    assert 0 <= failed["seconds"] < 5 and failed["attempted_at"] <= delivered["attempted_at"]

    listed = cli(runner, "notify", "attempts", str(row["id"]))
    assert listed.exit_code == 0
    lines = listed.stdout.splitlines()
    assert len(lines) == 2 and "  500  " in lines[0] and "  200  " in lines[1]

    assert cli(runner, "events", "prune", "--older-than", "1d").exit_code == 0
    assert len(attempts(engine)) == 2
    with engine.begin() as conn:
        conn.execute(
            sa.update(_attempts).values(attempted_at=datetime.now(UTC) - timedelta(days=2))
        )
    pruned = cli(runner, "events", "prune", "--older-than", "1d")
    assert pruned.exit_code == 0 and "2 notification attempt(s)" in pruned.stdout
    assert attempts(engine) == []


# -- 4. health ---------------------------------------------------------------------------------


def told(caplog: pytest.LogCaptureFixture, event: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "data", {}).get("event") == event]


def test_410_gone_disables_at_once_holds_its_notifications_and_says_so(
    runner: FlaskCliRunner, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="reconcile.notifier")
    with (
        NotifyApp([NOTIFY_SECRET], answer=lambda *_: Answer(410)) as gone_app,
        NotifyApp([NOTIFY_SECRET]) as ops_app,
    ):
        gone = add(engine, gone_app.url, "*", "endpoint.disabled", secret=NOTIFY_SECRET)
        ops = add(engine, ops_app.url, "endpoint.disabled", secret=NOTIFY_SECRET)
        first, second = add_submissions(engine, 2)
        change(engine, quiet(), first, "succeeded")
        with notifier(engine) as worker:
            worker.run()
        row = endpoint(engine, gone["id"])
        assert (row["status"], row["disabled_reason"]) == ("disabled", "answered 410 Gone")
        [line] = told(caplog, "endpoint_disabled")
        assert line.levelno == logging.ERROR and line.data["endpoint_id"] == gone["id"]  # type: ignore[attr-defined]
        with notifier(engine) as worker:
            worker.run()
        # The others taking endpoint.disabled hear of it; never the endpoint it is about.
        assert [(item.type, item.body["data"]["endpoint_id"]) for item in ops_app.received] == [
            ("endpoint.disabled", gone["id"])
        ]
        assert ops["id"] != gone["id"] and len(gone_app.received) == 1

        # While disabled: kept, not sent, not dead, even long past NOTIFY_MAX_AGE.
        change(engine, quiet(), second, "succeeded")
        later = datetime.now(UTC) + timedelta(days=30)
        with notifier(engine, clock=lambda: later, max_age=60.0) as worker:
            worker.run()
        assert len(gone_app.received) == 1
        held = [r for r in notifications(engine) if r["endpoint_id"] == gone["id"]]
        assert [r["status"] for r in held] == ["pending", "pending"]

        # Enabled: the one older than NOTIFY_MAX_AGE (3 days) is dead and listed; the
        # other goes out.
        with engine.begin() as conn:
            conn.execute(
                sa.text("UPDATE notifications SET created_at = :t WHERE id = :id"),
                {"t": datetime.now(UTC) - timedelta(days=4), "id": held[0]["id"]},
            )
        gone_app.answer = None
        enabled = cli(runner, "endpoints", "enable", gone["id"])
        assert enabled.exit_code == 0 and "1 waiting notification(s) resume" in enabled.stdout
        assert "1 older than NOTIFY_MAX_AGE made dead" in enabled.stderr
        assert f"  {held[0]['id']}  " in enabled.stderr
        with notifier(engine) as worker:
            assert worker.run().delivered == 1
        statuses = {r["id"]: r["status"] for r in notifications(engine)}
        assert (statuses[held[0]["id"]], statuses[held[1]["id"]]) == ("dead", "delivered")
        assert [item.submission_id for item in gone_app.applied] == [second]


def test_failing_is_told_hourly_then_disables_after_notify_disable_after(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="reconcile.notifier")
    with NotifyApp([NOTIFY_SECRET], answer=lambda *_: Answer(500)) as application:
        made = add(engine, application.url, secret=NOTIFY_SECRET)
        [sid] = add_submissions(engine, 1)
        change(engine, quiet(), sid, "succeeded")
        start = datetime.now(UTC)
        at = [start]
        with notifier(engine, clock=lambda: at[0], max_age=30 * 86400.0) as worker:
            for offset, failing_lines in (
                (timedelta(0), 1),  # the first failure after a success
                (timedelta(minutes=30), 1),
                (timedelta(minutes=61), 2),  # once an hour while it lasts
                (timedelta(days=5, minutes=-1), 3),
            ):
                at[0] = start + offset
                worker.run()
                assert len(told(caplog, "endpoint_failing")) == failing_lines
                assert endpoint(engine, made["id"])["status"] == "active"
            at[0] = start + timedelta(days=5, seconds=1)
            worker.run()
            row = endpoint(engine, made["id"])
            assert row["status"] == "disabled"
            assert row["disabled_reason"].startswith("every attempt failed since ")
            assert len(told(caplog, "endpoint_disabled")) == 1
            at[0] = start + timedelta(days=6)
            worker.run()
    assert len(application.received) == 5
    failing = told(caplog, "endpoint_failing")
    assert {r.levelno for r in failing} == {logging.ERROR}
    assert failing[0].data["since"] == start.isoformat()  # type: ignore[attr-defined]
    [held] = notifications(engine)
    assert held["status"] == "pending"


def test_a_recovered_endpoint_is_told_and_the_others_hear_of_it(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="reconcile.notifier")
    ops_types = ("endpoint.failing", "endpoint.recovered")
    with (
        NotifyApp(
            [NOTIFY_SECRET], answer=lambda _id, attempt, _b: Answer(500 if attempt == 1 else 204)
        ) as flaky_app,
        NotifyApp([NOTIFY_SECRET]) as ops_app,
    ):
        flaky = add(engine, flaky_app.url, "*", *ops_types, secret=NOTIFY_SECRET)
        add(engine, ops_app.url, *ops_types, secret=NOTIFY_SECRET)
        [sid] = add_submissions(engine, 1)
        change(engine, quiet(), sid, "succeeded")
        at = [datetime.now(UTC)]
        with notifier(engine, clock=lambda: at[0]) as worker:
            worker.run()
            at[0] += timedelta(seconds=1)  # past the retry's backoff (at most 50 ms)
            worker.run()
            worker.run()
        assert [item.type for item in ops_app.applied] == list(ops_types)
        assert {item.body["data"]["endpoint_id"] for item in ops_app.applied} == {flaky["id"]}
        assert [item.type for item in flaky_app.applied] == ["submission.succeeded"]
    [line] = told(caplog, "endpoint_recovered")
    assert line.levelno == logging.INFO
    assert endpoint(engine, flaky["id"])["failing_since"] is None


def test_metrics_and_the_admin_overview_show_each_endpoints_health(
    app: Flask, engine: Engine, signed_in: FlaskClient
) -> None:
    healthy = add(engine, "https://up.example.com/in")
    failing = add(engine, "https://down.example.com/in")
    disabled = add(engine, "https://gone.example.com/in")
    since = datetime.now(UTC) - timedelta(minutes=10)
    with engine.begin() as conn:
        conn.execute(
            sa.update(_endpoints)
            .where(_endpoints.c.id == failing["id"])
            .values(failing_since=since, last_failure="HTTP 502")
        )
        disable_endpoint(conn, disabled["id"], reason="answered 410 Gone", now=since)
    [sid] = add_submissions(engine, 1)
    change(engine, quiet(), sid, "succeeded")

    families = {family.name: family for family in DatabaseCollector(engine).collect()}

    def value(name: str, endpoint_id: str) -> float:
        [sample] = [s for s in families[name].samples if s.labels["endpoint"] == endpoint_id]
        return float(sample.value)

    up = "jobhooks_notify_endpoint_up"
    assert [value(up, e["id"]) for e in (healthy, failing, disabled)] == [1, 0, 0]
    assert 590 < value("jobhooks_notify_endpoint_failing_seconds", failing["id"]) < 700
    assert value("jobhooks_notify_endpoint_failing_seconds", healthy["id"]) == 0
    assert value("jobhooks_notify_endpoint_notifications_pending", disabled["id"]) == 1
    assert value("jobhooks_notify_endpoint_oldest_waiting_age_seconds", disabled["id"]) >= 0

    html = signed_in.get("/admin/").text
    banners = re.findall(
        r'class="flash flash-error endpoint-banner"[^>]*data-endpoint="([^"]+)"', html
    )
    assert sorted(banners) == sorted([failing["id"], disabled["id"]])
    assert "answered 410 Gone" in html and "HTTP 502" in html


@pytest.fixture
def signed_in(client: FlaskClient, engine: Engine) -> FlaskClient:
    create_admin(engine, EMAIL, PASSWORD, now=datetime.now(UTC))
    assert sign_in(client).status_code == 302
    return client


# -- 5. replay ---------------------------------------------------------------------------------


def test_replay_resends_in_order_with_the_same_webhook_id(
    runner: FlaskCliRunner, engine: Engine
) -> None:
    with NotifyApp([NOTIFY_SECRET]) as application, NotifyApp([NOTIFY_SECRET]) as bystander:
        made = add(engine, application.url, secret=NOTIFY_SECRET)
        add(engine, bystander.url, secret=NOTIFY_SECRET)
        [sid] = add_submissions(engine, 1)
        change(engine, quiet(), sid, "processing", "succeeded")
        with notifier(engine) as worker:
            worker.run()
        first = [item.webhook_id for item in application.received]
        assert [item.type for item in application.received] == [
            "submission.updated", "submission.succeeded"
        ]  # fmt: skip
        result = cli(runner, "notify", "replay", "--endpoint", made["id"], "--since", "2h")
        assert result.exit_code == 0, result.output
        assert result.stdout.startswith("2 notification(s)")
        with notifier(engine) as worker:
            worker.run()
        assert [item.webhook_id for item in application.received] == first + first
        assert len(bystander.received) == 2  # another endpoint's are not sent again
        dead_only = cli(
            runner, "notify", "replay", "--endpoint", made["id"], "--since", "2h",
            "--status", "dead",
        )  # fmt: skip
        assert dead_only.stdout.startswith("0 notification(s)")
        missing = cli(runner, "notify", "replay", "--endpoint", "ep_no", "--since", "2h")
        assert missing.exit_code == 1


# -- 6. the API --------------------------------------------------------------------------------


def test_the_api_lists_creates_reads_updates_rotates_and_deletes_endpoints(
    app: Flask, client: FlaskClient, engine: Engine
) -> None:
    headers = bearer(app)
    assert client.get("/api/v1/endpoints").status_code == 401
    made = client.post(
        "/api/v1/endpoints",
        json={"url": "https://app.example.com/in", "event_types": ["submission.failed"]},
        headers=headers,
    )
    assert made.status_code == 201
    created = made.get_json()
    assert created["secret"].startswith("whsec_") and created["status"] == "active"
    endpoint_id = created["id"]
    listed = client.get("/api/v1/endpoints", headers=headers).get_json()
    assert [item["id"] for item in listed["data"]] == [endpoint_id]
    assert "secret" not in listed["data"][0]
    read = client.get(f"/api/v1/endpoints/{endpoint_id}", headers=headers)
    assert read.status_code == 200 and "secret" not in read.get_json()
    assert client.get("/api/v1/endpoints/ep_none", headers=headers).status_code == 404
    bad = client.post(
        "/api/v1/endpoints", json={"url": "https://a.example.com", "event_types": ["nope"]},
        headers=headers,
    )  # fmt: skip
    assert bad.status_code == 422 and bad.get_json()["error"] == "invalid_endpoint"

    changed = client.patch(
        f"/api/v1/endpoints/{endpoint_id}",
        json={"status": "disabled", "rate": 2.5, "event_types": ["*"]},
        headers=headers,
    )
    assert changed.status_code == 200
    assert (changed.get_json()["status"], changed.get_json()["rate"]) == ("disabled", 2.5)
    assert endpoint(engine, endpoint_id)["event_types"] == ["*"]
    enabled = client.patch(f"/api/v1/endpoints/{endpoint_id}", json={"status": "active"},
                           headers=headers)  # fmt: skip
    assert enabled.get_json()["status"] == "active"

    rotated = client.post(f"/api/v1/endpoints/{endpoint_id}/rotate", headers=headers)
    assert rotated.status_code == 200
    assert rotated.get_json()["secret"] == endpoint(engine, endpoint_id)["secret"]
    assert rotated.get_json()["secret"] != created["secret"]
    assert rotated.get_json()["rotating_until"] is not None

    assert client.delete(f"/api/v1/endpoints/{endpoint_id}", headers=headers).status_code == 204
    assert client.delete(f"/api/v1/endpoints/{endpoint_id}", headers=headers).status_code == 404
    document = client.get("/api/v1/openapi.json").get_json()
    assert {"get", "post"} <= set(document["paths"]["/api/v1/endpoints"])
    assert {"get", "patch", "delete"} <= set(document["paths"]["/api/v1/endpoints/{endpoint_id}"])
    assert "post" in document["paths"]["/api/v1/endpoints/{endpoint_id}/rotate"]


def test_the_admin_page_lists_endpoints_and_its_buttons_disable_enable_and_replay(
    engine: Engine, signed_in: FlaskClient
) -> None:
    made = add(engine, "https://app.example.com/in?key=never-shown")
    [sid] = add_submissions(engine, 1)
    change(engine, quiet(), sid, "succeeded")
    page = signed_in.get("/admin/endpoints")
    assert page.status_code == 200
    assert made["id"] in page.text and "never-shown" not in page.text
    assert made["secret"] not in page.text

    # Without the CSRF token, nothing happens.
    refused = signed_in.post("/admin/actions/endpoint-disable", data={"endpoint_id": made["id"]})
    assert refused.status_code == 400
    assert endpoint(engine, made["id"])["status"] == "active"

    done = post_form(
        signed_in, "/admin/endpoints", "/admin/actions/endpoint-disable", endpoint_id=made["id"]
    )
    assert done.status_code == 302 and endpoint(engine, made["id"])["status"] == "disabled"
    post_form(
        signed_in, "/admin/endpoints", "/admin/actions/endpoint-enable", endpoint_id=made["id"]
    )
    assert endpoint(engine, made["id"])["status"] == "active"
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE notifications SET status = 'delivered'"))
    replayed = post_form(
        signed_in, "/admin/endpoints", "/admin/actions/endpoint-replay", endpoint_id=made["id"]
    )
    assert replayed.status_code == 302
    assert [row["status"] for row in notifications(engine)] == ["pending"]
    assert "1 notification(s)" in signed_in.get("/admin/endpoints").text
    missing = post_form(
        signed_in, "/admin/endpoints", "/admin/actions/endpoint-replay", endpoint_id="ep_no"
    )
    assert missing.status_code == 404


def test_null_fields_of_an_endpoint_are_absent_or_refused_never_a_500(
    app: Flask, client: FlaskClient
) -> None:
    headers = bearer(app)
    made = client.post(
        "/api/v1/endpoints",
        json={"url": "https://app.example.com/in", "secret": None, "rate": None,
              "description": None},
        headers=headers,
    )  # fmt: skip
    assert made.status_code == 201, made.get_json()
    assert made.get_json()["rate"] is None and made.get_json()["secret"].startswith("whsec_")
    endpoint_id = made.get_json()["id"]
    for field in ("url", "event_types", "status"):
        refused = client.patch(f"/api/v1/endpoints/{endpoint_id}", json={field: None},
                               headers=headers)  # fmt: skip
        assert refused.status_code == 422, (field, refused.get_json())
        assert refused.get_json()["field"] == field
    read = client.get(f"/api/v1/endpoints/{endpoint_id}", headers=headers).get_json()
    assert (read["url"], read["status"]) == ("https://app.example.com/in", "active")


def test_an_unreadable_endpoint_url_is_refused_not_a_500(app: Flask, client: FlaskClient) -> None:
    headers = bearer(app)
    for url in ("http://[x", "https://[::1/in"):
        refused = client.post("/api/v1/endpoints", json={"url": url}, headers=headers)
        assert refused.status_code == 422, (url, refused.get_json())
        assert refused.get_json()["error"] == "invalid_endpoint"
