"""The seed's example: a signed URL and one succeeded job update the submission."""

from __future__ import annotations

import json

from flask.testing import FlaskClient, FlaskCliRunner

from tests.helpers import encode, job_payload, signed_headers


def test_seed_example_updates_submission(client: FlaskClient, runner: FlaskCliRunner) -> None:
    added = runner.invoke(
        args=[
            "submissions",
            "add",
            "sub_1",
            "--user-id",
            "user_1",
            "--input",
            "https://example.com/in.mp4",
        ]
    )
    assert added.exit_code == 0, added.output
    url = runner.invoke(args=["webhook-url", "sub_1"]).output.strip()
    url = url.removeprefix("https://hooks.example.com")
    body = encode(job_payload())
    response = client.post(url, data=body, headers=signed_headers(body))
    assert response.status_code == 200, response.json
    assert response.json == {"outcome": "applied", "submission_id": "sub_1", "status": "succeeded"}
    shown = json.loads(runner.invoke(args=["submissions", "show", "sub_1"]).output)
    assert shown["status"] == "succeeded"
    assert shown["job_id"] == "job_abc123"
    assert shown["output_url"] == "https://cdn.example.com/job_abc123.mp4"
