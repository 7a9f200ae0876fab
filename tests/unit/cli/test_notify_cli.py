"""``jobhooks notify``: send once, list, retry, test; against a real local application."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import Result
from flask import Flask
from flask.testing import FlaskCliRunner
from sqlalchemy.engine import Engine

from devtools.notify_app import Answer, NotifyApp
from receiver import create_app
from receiver.flows.outbox import get_outbox
from tests.notify_helpers import (
    NOTIFY_SECRET,
    OLD_NOTIFY_SECRET,
    add_submissions,
    change,
    notifications,
)


@pytest.fixture
def application() -> Iterator[NotifyApp]:
    with NotifyApp([NOTIFY_SECRET]) as app:
        yield app


@pytest.fixture
def notify_config(app_config: dict[str, Any], application: NotifyApp) -> NotifyApp:
    """NOTIFY_URL names the local application; NOTIFY_SECRET is rotating (new, old)."""
    app_config.update(
        NOTIFY_URL=f"{application.url}?key=query-credential-31",
        NOTIFY_SECRET=f"{NOTIFY_SECRET},{OLD_NOTIFY_SECRET}",
    )
    return application


def notify(runner: FlaskCliRunner, *args: str) -> Result:
    return runner.invoke(args=["notify", *args])


def announce(app: Flask, engine: Engine, count: int) -> list[str]:
    """Make ``count`` submissions succeed through the write path, with the app's outbox."""
    ids = add_submissions(engine, count)
    for sid in ids:
        change(engine, get_outbox(app), sid, "succeeded")
    return ids


def test_notify_sends_what_is_due_once_and_says_so(
    notify_config: NotifyApp, app: Flask, runner: FlaskCliRunner, engine: Engine
) -> None:
    announce(app, engine, 3)
    result = notify(runner)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("notify: 3 delivered, 0 failed (retried later), 0 dead")
    assert [item.verified for item in notify_config.applied] == [True] * 3
    assert {row["status"] for row in notifications(engine)} == {"delivered"}

    again = notify(runner, "--json")
    assert again.exit_code == 0
    assert json.loads(again.stdout)["delivered"] == 0
    assert len(notify_config.received) == 3


def test_notify_exits_1_and_names_what_failed(
    notify_config: NotifyApp, app: Flask, runner: FlaskCliRunner, engine: Engine
) -> None:
    notify_config.answer = lambda _id, _n, body: Answer(
        500 if body["data"]["submission_id"] == "sub_1" else 204
    )
    announce(app, engine, 2)
    result = notify(runner, "--json")
    assert result.exit_code == 1
    tally = json.loads(result.stdout)
    assert (tally["delivered"], tally["failed"], tally["dead"]) == (1, 1, 0)
    [problem] = tally["problems"]
    assert (problem["submission_id"], problem["error"]) == ("sub_1", "HTTP 500")
    # The endpoint is named without its query string, which may hold a key.
    assert problem["endpoint"] == notify_config.url
    assert "query-credential-31" not in result.output
    # Retried later, not at once: a second run right away finds nothing due.
    assert json.loads(notify(runner, "--json").stdout)["failed"] == 0
    assert len(notify_config.received) == 2


def test_notify_list_filters_and_never_shows_bodies_or_keys(
    notify_config: NotifyApp, app: Flask, runner: FlaskCliRunner, engine: Engine
) -> None:
    announce(app, engine, 3)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE notifications SET status = 'dead' WHERE id = 2"))
    header, *lines = notify(runner, "list").stdout.splitlines()
    assert header.split()[:4] == ["ID", "CREATED", "(UTC)", "STATUS"]
    assert [line.split()[0] for line in lines] == ["3", "2", "1"]
    assert lines[1].split()[3:5] == ["dead", "submission.succeeded"]

    rows = [json.loads(line) for line in notify(runner, "list", "--json").stdout.splitlines()]
    assert [row["id"] for row in rows] == [3, 2, 1]
    assert all("payload" not in row for row in rows)
    assert datetime.fromisoformat(rows[0]["created_at"]).tzinfo is not None
    assert "T" in rows[0]["created_at"]  # ISO 8601, as `events list --json` prints times
    assert {row["endpoint"] for row in rows} == {notify_config.url}

    dead = notify(runner, "list", "--status", "dead", "--json").stdout.splitlines()
    assert [json.loads(line)["id"] for line in dead] == [2]
    only = notify(runner, "list", "--submission", "sub_2", "--json").stdout.splitlines()
    assert [json.loads(line)["submission_id"] for line in only] == ["sub_2"]
    assert notify(runner, "list", "--status", "delivered").stderr == "no notifications match\n"
    assert notify(runner, "list", "--status", "lost").exit_code == 2


def test_notify_retry_by_id_and_dead(
    notify_config: NotifyApp, app: Flask, runner: FlaskCliRunner, engine: Engine
) -> None:
    announce(app, engine, 3)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE notifications SET status = 'dead' WHERE id IN (1, 2)"))
        conn.execute(sa.text("UPDATE notifications SET status = 'delivered' WHERE id = 3"))

    named = notify(runner, "retry", "1", "3", "99")
    assert named.exit_code == 1
    assert named.stdout.startswith("1 notification(s) will be sent")
    assert "2 left alone: already delivered, or no such notification" in named.stderr
    assert [row["status"] for row in notifications(engine)] == ["pending", "dead", "delivered"]

    everything = notify(runner, "retry", "--dead")
    assert everything.exit_code == 0, everything.output
    assert everything.stdout.startswith("1 notification(s)")
    assert notify(runner).exit_code == 0
    assert sorted(item.submission_id or "" for item in notify_config.applied) == ["sub_0", "sub_1"]


def test_notify_retry_says_what_to_give(notify_config: NotifyApp, runner: FlaskCliRunner) -> None:
    bare = notify(runner, "retry")
    assert bare.exit_code == 2
    assert "give notification ids" in bare.stderr
    assert "or --dead for every dead one" in bare.stderr
    assert "not both" not in bare.stderr
    both = notify(runner, "retry", "1", "--dead")
    assert both.exit_code == 2
    assert "give notification ids or --dead, not both" in both.stderr


def test_notify_test_sends_a_signed_test_to_every_endpoint(
    app_config: dict[str, Any], runner: FlaskCliRunner, engine: Engine
) -> None:
    with NotifyApp([OLD_NOTIFY_SECRET]) as up, NotifyApp([NOTIFY_SECRET]) as down:
        down.stop()
        app_config.update(
            NOTIFY_URL=f"{up.url},{down.url}", NOTIFY_SECRET=f"{NOTIFY_SECRET},{OLD_NOTIFY_SECRET}"
        )
        app = create_app(app_config)
        try:
            result = app.test_cli_runner().invoke(args=["notify", "test"])
        finally:
            app.extensions["jobhooks.engine"].dispose()
    assert result.exit_code == 1
    first, second = result.stdout.splitlines()
    assert first.startswith(f"POST {up.url} (msg_") and ": 204 in " in first
    assert second.startswith(f"POST {down.url} (msg_") and "ConnectError" in second
    [received] = up.received
    assert received.verified  # with the old secret: NOTIFY_SECRET lists it second
    assert received.type == "notification.test"
    assert notifications(engine) == []  # nothing stored


def test_notify_needs_an_active_endpoint(runner: FlaskCliRunner) -> None:
    for args in ((), ("test",), ("--loop",)):
        result = notify(runner, *args)
        assert result.exit_code == 2
        assert "no active endpoint" in result.stderr
    assert notify(runner, "list").exit_code == 0


def test_notify_refuses_a_lease_shorter_than_an_attempt(
    notify_config: NotifyApp, runner: FlaskCliRunner
) -> None:
    result = notify(runner, "--lease", "5s")
    assert result.exit_code == 2
    assert "longer than an attempt may take (15s)" in result.stderr
