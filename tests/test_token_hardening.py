"""Issue 19's hardening of the per-submission URL token and what a delivery may do."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy.engine import Engine

from tests.helpers import (
    add_submission,
    encode,
    job_payload,
    stored_events,
    stored_submission,
    token_url,
)


@pytest.fixture
def token_only(app_config: dict[str, Any]) -> None:
    """Deliveries on signed URLs checked by the URL token alone (no webhook secret)."""
    app_config.pop("ITTYBIT_WEBHOOK_SECRET")


def post_json(client: FlaskClient, url: str, payload: Any) -> Any:
    return client.post(url, data=encode(payload), headers={"Content-Type": "application/json"})


# --- deliveries that claim the same job -------------------------------------------------------


@pytest.mark.usefixtures("token_only")
def test_same_job_on_another_submissions_url_is_refused_and_recorded(
    client: FlaskClient, engine: Engine
) -> None:
    add_submission(engine, "sub_1")
    add_submission(engine, "sub_9182")
    payload = job_payload(submission_id=None, user_id=None, updated_at=1714564800)

    first = post_json(client, token_url("sub_1"), payload)
    assert first.status_code == 200
    assert first.get_json()["outcome"] == "applied"

    second = post_json(client, token_url("sub_9182"), payload)
    assert second.status_code == 403, second.get_json()
    assert second.get_json() == {
        "error": "rejected",
        "message": "job id belongs to another submission",
    }
    rows = stored_events(engine)
    assert [(row["submission_id"], row["outcome"], row["reason"]) for row in rows] == [
        ("sub_1", "applied", None),
        ("sub_9182", "rejected", "job id belongs to another submission"),
    ]
    assert rows[0]["dedupe_key"] != rows[1]["dedupe_key"]
    assert stored_submission(engine, "sub_9182")["status"] == "pending"
    assert stored_submission(engine, "sub_9182")["job_id"] is None
    assert stored_submission(engine, "sub_1")["status"] == "succeeded"

    # A retry of each is answered as before.
    assert post_json(client, token_url("sub_1"), payload).get_json()["outcome"] == "duplicate"
    assert post_json(client, token_url("sub_9182"), payload).status_code == 403
    assert stored_submission(engine, "sub_9182")["status"] == "pending"
