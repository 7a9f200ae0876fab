"""Faults: the database dying mid-request or restarting between requests, SQLite's disk
filling up, and an ittybit API too slow to answer during a reconcile pass."""

from __future__ import annotations

import http.server
import json
import logging
import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from sqlalchemy import event
from sqlalchemy.engine import Engine

from receiver.ittybit.client import RetryPolicy
from tests.helpers import add_submission, encode, job_payload, signed_headers, token_url
from tests.reconcile_helpers import add_submissions, rows

SUBMISSION_COLUMNS = ("status", "provider_status", "output_url", "job_id", "updated_at")


def state(engine: Engine) -> tuple[dict[str, Any], int]:
    """sub_1's stored fields and how many deliveries the inbox holds."""
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT * FROM submissions WHERE submission_id = 'sub_1'"))
        stored = dict(row.one()._mapping)
        count = conn.execute(sa.text("SELECT count(*) FROM webhook_events")).scalar_one()
    return {name: stored[name] for name in SUBMISSION_COLUMNS}, count


@pytest.fixture
def admin(database_url: str) -> Iterator[Engine]:
    """A connection of the test's own, to do to the app's connections what a fault would."""
    engine = sa.create_engine(sa.make_url(database_url).set(drivername=_driver(database_url)))
    yield engine
    engine.dispose()


def _driver(database_url: str) -> str:
    return "sqlite" if database_url.startswith("sqlite") else "postgresql+psycopg"


@contextmanager
def dies_after_first_write(engine: Engine, admin: Engine) -> Iterator[list[str]]:
    """Kill the app's database connection right after its first INSERT or UPDATE ran.

    PostgreSQL: the server terminates the backend (as a crash or failover would).
    SQLite: the file's connection is closed under the open transaction.
    """
    fired: list[str] = []

    def after(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        # WITH: PostgreSQL writes a change and its inbox row in one WITH … UPDATE statement.
        if fired or not statement.lstrip().upper().startswith(("INSERT", "UPDATE", "WITH")):
            return
        if engine.dialect.name == "sqlite" and "RETURNING" in statement.upper():
            # sqlite3 cannot close a connection while a RETURNING statement is still being
            # read: the file stays locked. The next write (the change) is killed instead.
            return
        fired.append(" ".join(statement.split()[:3]))
        driver = conn.connection.driver_connection
        if engine.dialect.name == "sqlite":
            driver.close()
        else:
            with admin.connect() as other:
                other.execute(
                    sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": driver.info.backend_pid}
                )

    event.listen(engine, "after_cursor_execute", after)
    try:
        yield fired
    finally:
        event.remove(engine, "after_cursor_execute", after)


def test_database_dying_mid_request_answers_503_writes_nothing_and_the_retry_applies(
    client: FlaskClient, engine: Engine, admin: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    add_submission(engine)
    before = state(engine)
    body = encode(job_payload())
    headers = signed_headers(body, msg_id="msg_fault")

    with dies_after_first_write(engine, admin) as fired:
        response = client.post(token_url(), data=body, headers=headers)
    assert fired, "the fault never fired: no write reached the database"
    assert response.status_code == 503, response.get_json()
    assert response.get_json()["error"] == "database_unavailable"
    assert response.headers["Retry-After"] == "5"
    assert state(engine) == before  # the first write went with the connection
    assert "database unavailable; delivery not stored" in caplog.text

    retry = client.post(token_url(), data=body, headers=headers)
    assert retry.status_code == 200
    assert retry.get_json()["outcome"] == "applied"
    stored, count = state(engine)
    assert (stored["status"], stored["job_id"], count) == ("succeeded", "job_abc123", 1)


@pytest.mark.postgres
def test_postgresql_restart_between_requests_the_pool_recovers(
    client: FlaskClient, engine: Engine, admin: Engine, database_url: str
) -> None:
    if database_url.startswith("sqlite"):
        pytest.skip("a server restart is a PostgreSQL scenario")
    add_submission(engine)
    first = encode(job_payload(status="processing"))
    assert client.post(token_url(), data=first, headers=signed_headers(first)).status_code == 200

    # Every connection to this database is cut, as a restart or failover would.
    with admin.connect() as conn:
        cut = conn.execute(
            sa.text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ).scalar_one()
    assert cut >= 1

    second = encode(job_payload())
    response = client.post(token_url(), data=second, headers=signed_headers(second, msg_id="m2"))
    assert response.status_code == 200
    assert response.get_json() == {
        "outcome": "applied",
        "status": "succeeded",
        "submission_id": "sub_1",
    }
    assert client.get("/readyz").status_code == 200
    assert b"jobhooks_database_up 1.0" in client.get("/metrics").data


def _cut_every_connection(admin: Engine) -> None:
    with admin.connect() as conn:
        conn.execute(
            sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )


@pytest.mark.postgres
def test_postgresql_a_connection_idle_past_the_limit_is_pinged_and_replaced(
    client: FlaskClient,
    engine: Engine,
    admin: Engine,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Not a webhook: a probe finds the pool working after a restart it slept through."""
    if database_url.startswith("sqlite"):
        pytest.skip("a server restart is a PostgreSQL scenario")
    from receiver.store import engines

    pings: list[object] = []
    ping = engine.dialect.do_ping
    monkeypatch.setattr(engines, "PING_AFTER_IDLE", 0.2)
    monkeypatch.setattr(engine.dialect, "do_ping", lambda conn: pings.append(conn) or ping(conn))
    assert client.get("/readyz").status_code == 200
    assert client.get("/readyz").status_code == 200
    assert pings == []  # in steady use: no round trip spent on checking
    _cut_every_connection(admin)
    time.sleep(0.3)
    assert client.get("/readyz").status_code == 200
    assert len(pings) >= 1


@pytest.mark.postgres
def test_postgresql_a_cut_connection_in_steady_use_costs_a_webhook_nothing(
    client: FlaskClient, engine: Engine, admin: Engine, database_url: str
) -> None:
    """Cut while in use, no ping catches it: the webhook's first read fails, and it is
    retried once on a new connection; the delivery is stored once."""
    if database_url.startswith("sqlite"):
        pytest.skip("a server restart is a PostgreSQL scenario")
    add_submission(engine)
    for n in range(3):
        body = encode(job_payload(status="processing"))
        headers = signed_headers(body, msg_id=f"warm_{n}")
        assert client.post(token_url(), data=body, headers=headers).status_code == 200
    _cut_every_connection(admin)
    body = encode(job_payload())
    response = client.post(token_url(), data=body, headers=signed_headers(body, msg_id="m2"))
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["outcome"] == "applied"
    stored, count = state(engine)
    assert (stored["status"], count) == ("succeeded", 4)


def test_sqlite_disk_full_answers_a_json_5xx_and_writes_nothing(
    client: FlaskClient, engine: Engine, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    if not database_url.startswith("sqlite"):
        pytest.skip("a full disk under SQLite's file")
    add_submission(engine)
    before = state(engine)
    with engine.connect() as conn:
        pages = conn.exec_driver_sql("PRAGMA page_count").scalar_one()

    def full_disk(dbapi_connection: Any, _record: Any) -> None:
        # The file may not grow past two more pages: a full disk, as SQLite sees it.
        dbapi_connection.execute(f"PRAGMA max_page_count = {pages + 2}")

    event.listen(engine, "connect", full_disk)
    engine.dispose()
    body = encode(job_payload(padding="x" * 200_000))
    headers = signed_headers(body, msg_id="msg_big")
    try:
        response = client.post(token_url(), data=body, headers=headers)
    finally:
        event.remove(engine, "connect", full_disk)
        engine.dispose()

    assert response.status_code == 503
    assert response.mimetype == "application/json"
    assert response.get_json()["error"] == "database_unavailable"
    assert "database or disk is full" in caplog.text
    assert state(engine) == before

    # Space again: ittybit's retry of the same delivery goes through.
    retry = client.post(token_url(), data=body, headers=headers)
    assert retry.status_code == 200
    assert state(engine)[1] == 1


# --- a slow ittybit API during reconcile ---------------------------------------------------


class _SlowApi(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.released = threading.Event()
        self.requests = 0
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _SlowHandler)


class _SlowHandler(http.server.BaseHTTPRequestHandler):
    server: _SlowApi
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        with self.server.lock:
            self.server.requests += 1
        self.server.released.wait(self.server.delay)
        job_id = self.path.rsplit("/", 1)[-1]
        body = json.dumps({"id": job_id, "status": "succeeded"}).encode()
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass  # the client gave up long ago

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def slow_api(app_config: dict[str, Any]) -> Iterator[_SlowApi]:
    """An ittybit API that takes 30 s to answer anything."""
    server = _SlowApi(delay=30)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    app_config.update(
        ITTYBIT_API_URL=f"http://{host!s}:{port}",
        ITTYBIT_TIMEOUT="300ms",
        RECONCILE_CONCURRENCY="6",
    )
    yield server
    server.released.set()
    server.shutdown()
    server.server_close()


@pytest.mark.slow
def test_a_slow_api_times_out_and_the_pass_ends_in_bounded_time(
    slow_api: _SlowApi,
    app: Flask,
    runner: FlaskCliRunner,
    engine: Engine,
    caplog: pytest.LogCaptureFixture,
) -> None:
    started_at = datetime.now(UTC)
    add_submissions(
        engine, range(1, 7), changed_at=started_at - timedelta(hours=1), provider_status="queued"
    )
    settings = app.extensions["jobhooks.settings"]
    policy = RetryPolicy()
    # Each job: every attempt waits one timeout, and the waits between them are capped.
    per_job = policy.attempts * settings.ittybit_timeout + sum(
        min(policy.max_backoff, policy.backoff * 2 ** (n - 1)) for n in range(1, policy.attempts)
    )
    # The event list is asked first, as slowly, then the jobs.
    rounds = 1 + math.ceil(6 / settings.reconcile_concurrency)
    bound = rounds * per_job + 5.0  # room for a loaded machine; far below the API's 30 s

    began = time.monotonic()
    with caplog.at_level(logging.INFO):
        result = runner.invoke(args=["reconcile", "--json"])
    elapsed = time.monotonic() - began

    assert result.exit_code == 1, result.output
    assert elapsed < bound, f"the pass took {elapsed:.1f}s, bound {bound:.1f}s"
    summary = json.loads(result.stdout)
    assert (summary["checked"], summary["errors"], summary["updated"]) == (6, 6, 0)
    assert summary["events_note"].endswith("timed out")
    assert slow_api.requests == (1 + 6) * policy.attempts
    for stored in rows(engine).values():
        # Nothing applied, the lease given back, and a later poll scheduled.
        assert stored["status"] == "processing"
        assert stored["lease_owner"] is None
        assert "timed out" in stored["poll_error"]
        assert stored["next_poll_at"] > started_at
    # One line per job says which timed out.
    logged = [getattr(record, "data", {}) for record in caplog.records]
    timed_out = sorted(data["submission_id"] for data in logged if data.get("result") == "errors")
    assert timed_out == [f"sub_{n}" for n in range(1, 7)]

    # The next pass does not hammer the slow API: it asks for the list again, and every
    # job waits for its backoff.
    again = runner.invoke(args=["reconcile", "--json"])
    assert json.loads(again.stdout)["checked"] == 0
    assert slow_api.requests == (2 + 6) * policy.attempts
