"""``POST /submissions/<id>/reconcile`` on a submission without a job says what to do."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.engine import Engine

from devtools.standin import Standin, StandinConfig
from receiver.flows.submit import request_job
from receiver.store.models import Submission, utcnow
from tests.api_helpers import INPUT, bearer, use_standin

_submissions = Submission.__table__  # type: ignore[attr-defined]


@pytest.fixture
def standin(app_config: dict[str, Any], no_retry_waits: None) -> Iterator[Standin]:
    # Jobs stay queued for the test's length: no delivery is attempted.
    with Standin(StandinConfig(step=3600)).start() as running:
        use_standin(app_config, running)
        yield running


@pytest.fixture
def headers(app: Flask) -> dict[str, str]:
    return bearer(app)


def no_job(client: FlaskClient, headers: dict[str, str], submission_id: str) -> str:
    """Ask to reconcile a submission without a job; return the 409's message."""
    response = client.post(f"/api/v1/submissions/{submission_id}/reconcile", headers=headers)
    payload = response.get_json()
    assert (response.status_code, payload["error"]) == (409, "no_job"), payload
    message: str = payload["message"]
    assert message.startswith(f"submission {submission_id!r} has no ittybit job: ")
    return message


def test_registered_without_a_job_names_the_ways_to_make_it(
    standin: Standin, client: FlaskClient, headers: dict[str, str]
) -> None:
    registration = {"user_id": "user 1", "input_url": f"{INPUT}?token=upload-secret-7"}
    put = client.put("/api/v1/submissions/s", json=registration, headers=headers)
    assert put.status_code == 201
    message = no_job(client, headers, "s")
    assert "no job was asked for (it was added or registered without one)" in message
    assert "`jobhooks submit --submission-id s --user-id 'user 1' --input URL`" in message
    assert "POST /api/v1/submissions with the same submission_id, user_id and input_url" in message
    assert "attached by its first webhook" in message
    assert "upload-secret-7" not in message  # the input URL may carry a token: not repeated

    # The advice works: the create with the same data makes its job, and reconcile asks.
    create = client.post(
        "/api/v1/submissions", json={"submission_id": "s", **registration}, headers=headers
    )
    assert create.status_code == 201, create.get_json()
    assert client.post("/api/v1/submissions/s/reconcile", headers=headers).status_code == 200


def test_a_job_asked_for_is_the_workers_to_make(
    client: FlaskClient, headers: dict[str, str], engine: Engine
) -> None:
    request_job(engine, submission_id="asked", user_id="u", input_url=INPUT, now=utcnow())
    message = no_job(client, headers, "asked")
    assert "its job is asked for and not made yet: the worker creates it" in message
    assert "jobhooks submit" not in message


def test_a_refused_job_says_so_and_a_final_one_has_nothing_to_ask(
    client: FlaskClient, headers: dict[str, str], engine: Engine
) -> None:
    refused = {"user_id": "u", "input_url": INPUT}
    client.put("/api/v1/submissions/refused", json=refused, headers=headers)
    client.put("/api/v1/submissions/done", json=refused, headers=headers)
    with engine.begin() as conn:
        conn.execute(
            sa.update(_submissions)
            .where(_submissions.c.submission_id == "refused")
            .values(error="submit failed: input is not a video")
        )
        conn.execute(
            sa.update(_submissions)
            .where(_submissions.c.submission_id == "done")
            .values(status="failed")
        )
    assert "or ittybit refused it: see its error" in no_job(client, headers, "refused")
    assert no_job(client, headers, "done").endswith(
        ": it is failed, so there is nothing to ask ittybit"
    )
