"""Ids longer than their columns: a signed webhook is kept or refused, never a 500.

PostgreSQL enforces ``VARCHAR(200)`` and SQLite does not; both must answer the same.
"""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient
from sqlalchemy.engine import Engine

from tests.helpers import job_payload
from tests.unit.web.test_webhooks import PROJECT_URL, events, post

LONG = "s" * 300


@pytest.mark.parametrize(
    "payload",
    [
        job_payload(submission_id=LONG),
        job_payload(job_id="job_" + LONG),
        job_payload(user_id=LONG),
        job_payload(job_id="job_" + LONG, submission_id=LONG, user_id=LONG),
    ],
    ids=["submission_id", "job_id", "user_id", "all"],
)
def test_an_id_longer_than_its_column_is_answered_4xx_or_kept_never_500(
    client: FlaskClient, engine: Engine, payload: dict[str, object]
) -> None:
    response = post(client, PROJECT_URL, payload)
    assert response.status_code in (202, 400, 403, 422), response.get_json()
    stored = events(engine)
    if response.status_code == 202:
        [row] = stored
        assert row["outcome"] == "unmatched"
        assert all(len(str(row[name] or "")) <= 200 for name in ("job_id", "submission_id"))
    else:
        assert response.get_json()["error"]
