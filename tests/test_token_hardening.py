"""Issue 19's hardening of the per-submission URL token and what a delivery may do."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask.testing import FlaskClient, FlaskCliRunner
from sqlalchemy.engine import Engine

from receiver.store.models import Submission
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


# --- submissions import names what it skips ---------------------------------------------------


def import_file(tmp_path: Path, records: list[dict[str, Any]]) -> str:
    path = tmp_path / "subs.jsonl"
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return str(path)


def row(submission_id: str, job_id: str | None = None) -> dict[str, Any]:
    record = {
        "submission_id": submission_id,
        "user_id": "user_1",
        "input_url": f"https://uploads.example.com/{submission_id}.mp4",
    }
    if job_id is not None:
        record["job_id"] = job_id
    return record


def submission_ids(engine: Engine) -> list[str]:
    table = Submission.__table__  # type: ignore[attr-defined]
    with engine.connect() as conn:
        return list(
            conn.execute(sa.select(table.c.submission_id).order_by("submission_id")).scalars()
        )


def test_import_names_every_skipped_row_and_why(
    runner: FlaskCliRunner, engine: Engine, tmp_path: Path
) -> None:
    add_submission(engine, "sub_1", job_id="job_1")
    path = import_file(
        tmp_path,
        [
            row("sub_2"),
            row("sub_1"),  # exists
            row("sub_3", "job_1"),  # job held by sub_1 in the database
            row("sub_4", "job_4"),
            row("sub_5", "job_4"),  # job taken by line 4 of this file
        ],
    )
    result = runner.invoke(args=["submissions", "import", path])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"read": 5, "inserted": 2, "skipped": 3}
    assert result.stderr.splitlines() == [
        "line 2: sub_1 skipped: submission_id exists",
        "line 3: sub_3 skipped: job id belongs to sub_1 (the database)",
        "line 5: sub_5 skipped: job id belongs to sub_4 (this file)",
    ]
    assert submission_ids(engine) == ["sub_1", "sub_2", "sub_4"]


def test_strict_import_refuses_the_whole_file_on_any_skip(
    runner: FlaskCliRunner, engine: Engine, tmp_path: Path
) -> None:
    add_submission(engine, "sub_1", job_id="job_1")
    path = import_file(tmp_path, [row("sub_2"), row("sub_3", "job_1"), row("sub_4")])
    result = runner.invoke(args=["submissions", "import", "--strict", path])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "line 2: sub_3 skipped: job id belongs to sub_1 (the database)",
        "Error: 1 row(s) would be skipped (--strict); nothing was imported",
    ]
    assert submission_ids(engine) == ["sub_1"]

    clean = import_file(tmp_path, [row("sub_2"), row("sub_4")])
    result = runner.invoke(args=["submissions", "import", "--strict", clean])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"read": 2, "inserted": 2, "skipped": 0}
    assert result.stderr == ""
