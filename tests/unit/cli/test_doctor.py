"""``jobhooks doctor``: one line per check, each failing on its own cause; exit 1 on a fail."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from flask import Flask
from sqlalchemy.engine import Engine

from devtools.standin import DEFAULT_API_KEY, Standin, running
from receiver import create_app
from receiver.cli import cli as jobhooks_cli
from receiver.flows.endpoints import disable_endpoint, list_endpoints
from receiver.store.engines import get_engine
from receiver.store.models import Notification, NotifyEndpoint, WebhookEvent, utcnow
from tests.event_feed_helpers import create_jobs
from tests.notify_helpers import NOTIFY_SECRET

HOOK = "https://hooks.example.com/webhooks/ittybit"


@pytest.fixture
def standin() -> Iterator[Standin]:
    with running() as standin:
        yield standin


@pytest.fixture
def app_config(app_config: dict[str, Any], standin: Standin) -> dict[str, Any]:
    return {**app_config, "ITTYBIT_API_URL": standin.url, "ITTYBIT_API_KEY": DEFAULT_API_KEY}


@pytest.fixture
def make_app(app_config: dict[str, Any]) -> Iterator[Callable[..., Flask]]:
    """Build apps from the test's configuration with changes; their pools closed after."""
    made: list[Flask] = []

    def make(**changes: str) -> Flask:
        app = create_app({**app_config, **changes})
        made.append(app)
        return app

    yield make
    for app in made:
        get_engine(app).dispose()


def doctor(app: Flask) -> tuple[int, dict[str, str]]:
    """Run doctor on ``app``; return its exit code and each check's line by name."""
    result = app.test_cli_runner().invoke(args=["doctor"])
    lines = {line.split()[1]: line for line in result.output.splitlines() if line.strip()}
    return result.exit_code, lines


def level(lines: dict[str, str], name: str) -> str:
    return lines[name].split()[0]


def healthy(standin: Standin) -> None:
    standin.endpoints.create(HOOK, ["task.succeeded"])


def test_all_ok_exits_0(app: Flask, standin: Standin) -> None:
    healthy(standin)
    code, lines = doctor(app)
    assert code == 0, lines
    assert list(lines) == [
        "settings",
        "database",
        "migrations",
        "connections",
        "ittybit",
        "endpoint",
        "webhooks",
        "notifications",
    ]
    assert all(level(lines, name) == "ok" for name in lines), lines


def test_bad_settings_fail_first() -> None:
    env = {"APP_ENV": "production", "SECRET_KEY": "", "DATABASE_URL": "sqlite:///:memory:"}
    result = CliRunner().invoke(jobhooks_cli, ["doctor"], env=env)
    assert result.exit_code == 1
    [line] = result.output.splitlines()
    assert line.startswith("fail  settings") and "SECRET_KEY" in line


def test_an_unreachable_database_fails(make_app: Callable[..., Flask]) -> None:
    app = make_app(DATABASE_URL="postgresql://nobody@127.0.0.1:9/none")
    code, lines = doctor(app)
    assert code == 1
    assert level(lines, "database") == "fail" and "DATABASE_URL" in lines["database"]
    assert "webhooks" not in lines


def test_an_unmigrated_database_fails(make_app: Callable[..., Flask], tmp_path: Any) -> None:
    app = make_app(DATABASE_URL=f"sqlite:///{tmp_path / 'new.db'}")
    code, lines = doctor(app)
    assert code == 1
    assert level(lines, "migrations") == "fail" and "jobhooks db upgrade" in lines["migrations"]


def test_too_many_connections_fail(make_app: Callable[..., Flask], database_url: str) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("max_connections is a PostgreSQL limit")
    code, lines = doctor(make_app(WEB_CONCURRENCY="64"))
    assert code == 1
    assert level(lines, "connections") == "fail" and "max_connections" in lines["connections"]
    # Threads share their process's pool: one thread each is a quarter of four.
    one = doctor(make_app(WEB_CONCURRENCY="20", WEB_THREADS="1"))[1]["connections"]
    four = doctor(make_app(WEB_CONCURRENCY="20", WEB_THREADS="4"))[1]["connections"]
    assert "up to 30 (20 web x 1" in one and "up to 90 (20 web x 4" in four


def test_a_wrong_key_fails(make_app: Callable[..., Flask]) -> None:
    code, lines = doctor(make_app(ITTYBIT_API_KEY="wrong"))
    assert code == 1
    assert level(lines, "ittybit") == "fail" and "ITTYBIT_API_KEY" in lines["ittybit"]


def test_no_endpoint_or_a_paused_one_fails(app: Flask, standin: Standin) -> None:
    code, lines = doctor(app)
    assert code == 1
    assert level(lines, "endpoint") == "fail" and "jobhooks ittybit connect" in lines["endpoint"]
    made = standin.endpoints.create(HOOK, [])
    standin.endpoints.update(made["id"], {"status": "paused"})
    code, lines = doctor(app)
    assert code == 1
    assert "is paused" in lines["endpoint"]


def test_webhooks_behind_the_list_warn(app: Flask, standin: Standin, engine: Engine) -> None:
    healthy(standin)
    create_jobs(standin, 1)
    code, lines = doctor(app)
    assert code == 0  # a warning, not a failure
    assert level(lines, "webhooks") == "warn" and "last webhook never" in lines["webhooks"]
    with engine.begin() as conn:
        conn.execute(
            sa.insert(WebhookEvent.__table__),  # type: ignore[attr-defined]
            [
                {
                    "dedupe_key": "wh:1",
                    "source": "endpoint",
                    "body": "{}",
                    "outcome": "applied",
                    "headers": {},
                }
            ],
        )
    assert level(doctor(app)[1], "webhooks") == "ok"


def test_dead_notifications_warn(
    make_app: Callable[..., Flask], standin: Standin, engine: Engine
) -> None:
    healthy(standin)
    app = make_app(NOTIFY_URL="https://app.example.com/n", NOTIFY_SECRET=NOTIFY_SECRET)
    assert level(doctor(app)[1], "notifications") == "ok"
    row = {
        "message_id": "msg_dead",
        "submission_id": "sub_1",
        "endpoint": "https://app.example.com/n",
        "event_type": "submission.succeeded",
        "payload": "{}",
        "status": "dead",
        "created_at": utcnow(),
        "next_attempt_at": utcnow(),
    }
    with engine.begin() as conn:
        conn.execute(sa.insert(Notification.__table__), [row])  # type: ignore[attr-defined]
    code, lines = doctor(app)
    assert code == 0
    assert (
        level(lines, "notifications") == "warn" and "notify retry --dead" in lines["notifications"]
    )


def test_a_disabled_endpoint_fails_and_a_failing_one_warns(
    make_app: Callable[..., Flask], standin: Standin, engine: Engine
) -> None:
    healthy(standin)
    app = make_app(NOTIFY_URL="https://app.example.com/n", NOTIFY_SECRET=NOTIFY_SECRET)
    with engine.begin() as conn:
        [endpoint] = list_endpoints(conn)
        conn.execute(
            sa.update(NotifyEndpoint.__table__)  # type: ignore[attr-defined]
            .where(NotifyEndpoint.__table__.c.id == endpoint.id)  # type: ignore[attr-defined]
            .values(failing_since=utcnow())
        )
    code, lines = doctor(app)
    assert (code, level(lines, "notifications")) == (0, "warn")
    assert endpoint.id in lines["notifications"]
    with engine.begin() as conn:
        disable_endpoint(conn, endpoint.id, reason="410 Gone", now=utcnow())
    code, lines = doctor(app)
    assert (code, level(lines, "notifications")) == (1, "fail")
    assert "endpoints enable" in lines["notifications"]
