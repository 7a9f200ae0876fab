"""``jobhooks submit``: one job per submission, with its metadata and signed webhook URL."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from pytest_httpserver import HTTPServer
from sqlalchemy.engine import Engine
from werkzeug.wrappers import Request, Response

from receiver.core.signing import verify_webhook_token
from receiver.ittybit.client import idempotency_key
from tests.helpers import SECRET_KEY, encode, job_payload, signed_headers
from tests.reconcile_helpers import API_KEY, rows

INPUT = "https://example.com/uploads/sub_1.mp4"


pytestmark = pytest.mark.usefixtures("ittybit_api")


class JobsEndpoint:
    """``POST /jobs``: answers scripted statuses first, then creates the job (once per key)."""

    def __init__(self, server: HTTPServer, *failures: int) -> None:
        self.failures = list(failures)
        self.requests: list[Request] = []
        self.jobs_by_key: dict[str, str] = {}
        self.status = "queued"
        self.before_answer: Any = None
        server.expect_request("/jobs", method="POST").respond_with_handler(self)

    def __call__(self, request: Request) -> Response:
        self.requests.append(request)
        if self.failures:
            status = self.failures.pop(0)
            body = json.dumps({"error": {"message": f"scripted {status}"}})
            return Response(body, status, content_type="application/json")
        key = request.headers.get("Idempotency-Key", "")
        job_id = self.jobs_by_key.setdefault(key, f"job_{len(self.jobs_by_key) + 1}")
        body = json.loads(request.get_data())
        if self.before_answer is not None:
            self.before_answer(job_id, body)
        answer = {"id": job_id, "object": "job", "status": self.status, **body}
        return Response(json.dumps(answer), 201, content_type="application/json")

    def body(self, index: int = -1) -> dict[str, Any]:
        payload: dict[str, Any] = json.loads(self.requests[index].get_data())
        return payload


def submit(runner: FlaskCliRunner, *extra: str, submission_id: str | None = "sub_1") -> Any:
    args = ["submit", "--input", INPUT, "--user-id", "user_1", *extra]
    if submission_id is not None:
        args += ["--submission-id", submission_id]
    return runner.invoke(args=args)


def test_submit_sends_the_job_with_metadata_and_signed_webhook_url(
    runner: FlaskCliRunner, api_server: HTTPServer, engine: Engine
) -> None:
    jobs = JobsEndpoint(api_server)
    result = submit(
        runner,
        "--meta",
        "campaign=spring",
        "--option",
        "width=1280",
        "--option",
        "format=mp4",
        "--kind",
        "video",
    )
    assert result.exit_code == 0, result.output
    (request,) = jobs.requests
    assert request.headers["Authorization"] == f"Bearer {API_KEY}"
    assert request.headers["Idempotency-Key"] == idempotency_key("sub_1")
    body = jobs.body()
    assert body["input"] == INPUT
    assert body["kind"] == "video"
    assert body["options"] == {"width": 1280, "format": "mp4"}
    assert body["metadata"] == {"submission_id": "sub_1", "user_id": "user_1", "campaign": "spring"}
    token = body["webhook_url"].removeprefix("https://hooks.example.com/webhooks/ittybit/")
    claims = verify_webhook_token([SECRET_KEY], token)
    assert (claims.submission_id, claims.user_id) == ("sub_1", "user_1")

    printed = json.loads(result.stdout)
    assert printed["submission_id"] == "sub_1"
    assert printed["job_id"] == "job_1"
    assert printed["status"] == "processing"
    assert "webhook_url" not in printed  # a bearer credential: only ittybit gets it
    stored = rows(engine)["sub_1"]
    assert stored["job_id"] == "job_1"
    assert stored["status"] == "processing"
    assert stored["provider_status"] == "queued"
    assert stored["submitted_at"] is not None
    assert stored["meta"] == {"campaign": "spring"}


def test_submit_survives_a_500_then_200_with_the_same_idempotency_key(
    runner: FlaskCliRunner, api_server: HTTPServer, engine: Engine
) -> None:
    jobs = JobsEndpoint(api_server, 500)
    result = submit(runner)
    assert result.exit_code == 0, result.output
    assert len(jobs.requests) == 2
    keys = {request.headers["Idempotency-Key"] for request in jobs.requests}
    assert keys == {idempotency_key("sub_1")}
    assert len(jobs.jobs_by_key) == 1
    stored = rows(engine)["sub_1"]
    assert (stored["job_id"], stored["status"], stored["error"]) == ("job_1", "processing", None)


def test_api_failure_leaves_it_pending_and_a_rerun_completes_it(
    runner: FlaskCliRunner, api_server: HTTPServer, engine: Engine
) -> None:
    jobs = JobsEndpoint(api_server, 503, 503, 503)
    failed = submit(runner, "--meta", "campaign=spring")
    assert failed.exit_code == 1
    assert "submit failed" in failed.stderr
    assert "scripted 503" in failed.stderr
    assert json.loads(failed.stdout)["status"] == "pending"
    stored = rows(engine)["sub_1"]
    assert stored["status"] == "pending"
    assert stored["job_id"] is None
    assert stored["error"].startswith("submit failed:")

    again = submit(runner)
    assert again.exit_code == 0, again.output
    stored = rows(engine)["sub_1"]
    assert (stored["job_id"], stored["status"], stored["error"]) == ("job_1", "processing", None)
    # The rerun sent the metadata kept from the first attempt, under the same key.
    assert jobs.body()["metadata"]["campaign"] == "spring"
    assert {r.headers["Idempotency-Key"] for r in jobs.requests} == {idempotency_key("sub_1")}


def test_rejected_create_is_not_retried(
    runner: FlaskCliRunner, api_server: HTTPServer, engine: Engine
) -> None:
    jobs = JobsEndpoint(api_server, 422)
    result = submit(runner)
    assert result.exit_code == 1
    assert len(jobs.requests) == 1
    assert "HTTP 422" in rows(engine)["sub_1"]["error"]


def test_a_submitted_submission_is_not_sent_again(
    runner: FlaskCliRunner, api_server: HTTPServer
) -> None:
    jobs = JobsEndpoint(api_server)
    first = submit(runner)
    again = submit(runner)
    assert again.exit_code == 0, again.output
    assert len(jobs.requests) == 1
    assert json.loads(again.stdout)["job_id"] == json.loads(first.stdout)["job_id"]


def test_submit_reuses_a_submission_added_before(
    runner: FlaskCliRunner, api_server: HTTPServer, engine: Engine
) -> None:
    jobs = JobsEndpoint(api_server)
    added = runner.invoke(
        args=["submissions", "add", "sub_1", "--user-id", "user_1", "--input", INPUT]
    )
    assert added.exit_code == 0, added.output
    result = submit(runner, "--meta", "campaign=autumn")
    assert result.exit_code == 0, result.output
    assert jobs.body()["metadata"] == {
        "submission_id": "sub_1",
        "user_id": "user_1",
        "campaign": "autumn",
    }
    assert len(rows(engine)) == 1


def test_submit_without_an_id_makes_a_new_submission(
    runner: FlaskCliRunner, api_server: HTTPServer, engine: Engine
) -> None:
    jobs = JobsEndpoint(api_server)
    result = submit(runner, submission_id=None)
    assert result.exit_code == 0, result.output
    submission_id = json.loads(result.stdout)["submission_id"]
    assert submission_id.startswith("sub_")
    assert jobs.body()["metadata"]["submission_id"] == submission_id
    assert rows(engine)[submission_id]["job_id"] == "job_1"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--user-id", "user_2"], "belongs to another user"),
        (["--input", "https://example.com/other.mp4"], "has another input"),
    ],
)
def test_submit_refuses_to_change_an_existing_submission(
    runner: FlaskCliRunner, api_server: HTTPServer, args: list[str], message: str
) -> None:
    jobs = JobsEndpoint(api_server)
    runner.invoke(args=["submissions", "add", "sub_1", "--user-id", "user_1", "--input", INPUT])
    values = {"--input": INPUT, "--user-id": "user_1", "--submission-id": "sub_1"}
    values.update(dict(zip(args[::2], args[1::2], strict=True)))
    result = runner.invoke(args=["submit", *[part for pair in values.items() for part in pair]])
    assert result.exit_code == 1
    assert message in result.stderr
    assert jobs.requests == []


@pytest.mark.parametrize("pair", ["user_id=someone", "submission_id=sub_2", "novalue"])
def test_bad_metadata_is_a_usage_error(
    runner: FlaskCliRunner, api_server: HTTPServer, engine: Engine, pair: str
) -> None:
    jobs = JobsEndpoint(api_server)
    result = submit(runner, "--meta", pair)
    assert result.exit_code == 2
    assert jobs.requests == []
    assert rows(engine) == {}


def test_bad_input_url_is_refused(runner: FlaskCliRunner, api_server: HTTPServer) -> None:
    jobs = JobsEndpoint(api_server)
    result = runner.invoke(
        args=["submit", "--input", "ftp://example.com/x", "--user-id", "u", "--submission-id", "s"]
    )
    assert result.exit_code == 1
    assert "input_url must be an http(s) URL" in result.stderr
    assert jobs.requests == []


@pytest.mark.parametrize("command", [["submit", "--input", INPUT, "--user-id", "u"], ["reconcile"]])
def test_missing_api_key_is_a_configuration_error(
    app_config: dict[str, Any], command: list[str]
) -> None:
    from receiver import create_app
    from receiver.store.engines import get_engine

    del app_config["ITTYBIT_API_KEY"]
    app = create_app(app_config)
    try:
        result = app.test_cli_runner().invoke(args=command)
    finally:
        get_engine(app).dispose()
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "jobhooks: configuration error: ITTYBIT_API_KEY: required by submit and reconcile"
    ]


def test_a_webhook_that_beats_the_create_answer_is_kept(
    app: Flask, client: FlaskClient, runner: FlaskCliRunner, api_server: HTTPServer, engine: Engine
) -> None:
    jobs = JobsEndpoint(api_server)
    deliveries: list[int] = []

    def deliver_first(job_id: str, body: dict[str, Any]) -> None:
        # ittybit finishes the job and delivers before answering the create.
        payload = encode(job_payload(job_id, "succeeded", updated_at="2026-11-28T12:00:00Z"))
        url = body["webhook_url"].removeprefix("https://hooks.example.com")
        response = client.post(url, data=payload, headers=signed_headers(payload))
        deliveries.append(response.status_code)

    jobs.before_answer = deliver_first
    result = submit(runner)
    assert result.exit_code == 0, result.output
    assert deliveries == [200]
    stored = rows(engine)["sub_1"]
    assert stored["status"] == "succeeded"
    assert stored["job_id"] == "job_1"
    assert stored["output_url"] == "https://cdn.example.com/job_1.mp4"
