"""A submission the API stored as pending gets its job from the worker, exactly once."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.engine import Engine

from config.settings import Settings
from devtools.processes import free_port
from devtools.standin import DEFAULT_API_KEY, Standin, StandinConfig
from receiver.flows.outbox import get_outbox
from receiver.ittybit.client import IttybitClient
from receiver.store.models import utcnow
from reconcile.passes import SUBMIT_GRACE, PassOptions, Reconciler
from tests.api_helpers import bearer, body, standin_job, stored


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def app_config_down(app_config: dict[str, Any], port: int, no_retry_waits: None) -> int:
    """Point the app at a port where the stand-in is not running yet."""
    app_config["ITTYBIT_API_URL"] = f"http://127.0.0.1:{port}"
    app_config["ITTYBIT_API_KEY"] = DEFAULT_API_KEY
    app_config["PUBLIC_URL"] = "http://127.0.0.1:9"
    return port


@pytest.fixture
def later_standin(port: int) -> Iterator[Standin]:
    with Standin(StandinConfig(step=3600)).start(port=port) as running:
        yield running


def reconciler(app: Flask, *, at: datetime, owner: str | None = None) -> Reconciler:
    settings: Settings = app.extensions["jobhooks.settings"]
    client = IttybitClient(base_url=settings.ittybit_api_url, api_key=DEFAULT_API_KEY)
    return Reconciler(
        app.extensions["jobhooks.engine"],
        client,
        PassOptions(stuck_after=3600),
        outbox=get_outbox(app),
        clock=lambda: at,
        owner=owner,
        settings=settings,
    )


def test_a_pending_submission_gets_exactly_one_job_from_the_next_pass(
    app_config_down: int, app: Flask, client: FlaskClient, engine: Engine, port: int
) -> None:
    headers = bearer(app)
    response = client.post(
        "/api/v1/submissions",
        json=body(kind="video", options={"width": 320}, metadata={"campaign": "c"}),
        headers=headers,
    )
    assert response.status_code == 202
    requested = stored(engine, "sub_1")["job_requested_at"]

    with Standin(StandinConfig(step=3600)).start(port=port) as standin:
        # Within the grace a web request for it could still run: the worker leaves it.
        early = reconciler(app, at=requested + timedelta(seconds=SUBMIT_GRACE - 1)).run_pass()
        assert early.submitted == 0
        assert standin.stats().jobs == 0

        summary = reconciler(app, at=requested + timedelta(seconds=SUBMIT_GRACE + 1)).run_pass()
        assert (summary.submitted, summary.errors) == (1, 0)
        row = stored(engine, "sub_1")
        assert row["job_id"] is not None
        assert (row["status"], row["lease_owner"]) == ("processing", None)
        job = standin_job(standin, row["job_id"])
        assert job["options"] == {"width": 320}
        assert job["metadata"] == {"campaign": "c", "submission_id": "sub_1", "user_id": "user_1"}

        again = reconciler(app, at=requested + timedelta(minutes=5)).run_pass()
        assert again.submitted == 0
        assert standin.stats().jobs == 1
        assert (
            sum(count for name, count in standin.request_counts().items() if name == "POST /jobs")
            == 1
        )

    shown = client.get("/api/v1/submissions/sub_1", headers=headers).get_json()
    assert shown["job_id"] == row["job_id"]


def test_a_failed_try_backs_off(
    app_config_down: int, app: Flask, client: FlaskClient, engine: Engine
) -> None:
    headers = bearer(app)
    assert client.post("/api/v1/submissions", json=body(), headers=headers).status_code == 202
    requested = stored(engine, "sub_1")["job_requested_at"]
    at = requested + timedelta(minutes=1)
    summary = reconciler(app, at=at).run_pass()  # the stand-in is still down
    assert (summary.submitted, summary.errors) == (0, 1)
    row = stored(engine, "sub_1")
    assert row["poll_attempts"] == 1
    assert row["next_poll_at"] == at + timedelta(seconds=60)
    assert row["lease_owner"] is None
    assert "connection failed" in row["poll_error"]
    assert reconciler(app, at=at + timedelta(seconds=30)).run_pass().errors == 0  # not due yet


def test_submissions_added_or_registered_without_a_job_are_left_alone(
    app_config_down: int,
    later_standin: Standin,
    app: Flask,
    client: FlaskClient,
    engine: Engine,
) -> None:
    headers = bearer(app)
    registration = {"user_id": "u", "input_url": "https://uploads.example.com/r.mp4"}
    assert (
        client.put("/api/v1/submissions/reg", json=registration, headers=headers).status_code == 201
    )
    runner = app.test_cli_runner()
    added = runner.invoke(
        args=["submissions", "add", "added", "--user-id", "u", "--input", "https://x.example/a"]
    )
    assert added.exit_code == 0, added.output
    summary = reconciler(app, at=utcnow() + timedelta(hours=1)).run_pass()
    assert (summary.submitted, summary.unsubmitted) == (0, 2)
    assert later_standin.stats().jobs == 0


def test_two_workers_at_once_create_one_job(
    app_config_down: int,
    later_standin: Standin,
    app: Flask,
    client: FlaskClient,
    engine: Engine,
) -> None:
    headers = bearer(app)
    # The stand-in is up now, but take the first create's answer away: fail it at the client.
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO submissions (submission_id, user_id, input_url, status, meta,"
                " created_at, updated_at, poll_attempts, is_test, job_kind, job_requested_at)"
                " VALUES ('sub_w', 'u', 'https://x.example/w.mp4', 'pending', '{}', :t, :t, 0,"
                " false, 'video', :t)"
            ),
            {"t": _bind(engine, utcnow() - timedelta(minutes=5))},
        )
    at = utcnow()
    workers = [reconciler(app, at=at, owner=f"worker-{n}") for n in range(4)]
    barrier = threading.Barrier(len(workers))
    results: list[int] = []

    def run(worker: Reconciler) -> None:
        barrier.wait()
        results.append(worker.run_pass().submitted)

    threads = [threading.Thread(target=run, args=(worker,)) for worker in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(results) == [0, 0, 0, 1]
    assert later_standin.stats().jobs == 1
    assert client.get("/api/v1/submissions/sub_w", headers=headers).get_json()["job_id"]


def _bind(engine: Engine, moment: datetime) -> Any:
    # Raw SQL skips the model's UTC type: SQLite stores naive UTC text, PostgreSQL timestamptz.
    return moment.replace(tzinfo=None) if engine.dialect.name == "sqlite" else moment
