"""``jobhooks trigger``: a signed test webhook to a running receiver, over HTTP, about a test
submission of its own: never a real one."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskCliRunner
from pytest_httpserver import HTTPServer
from werkzeug.serving import WSGIRequestHandler, make_server

from config.settings import Settings
from devtools.processes import free_port
from receiver import create_app
from receiver.core.signing import verify_standard_webhook, verify_webhook_token
from receiver.flows.trigger import build_trigger
from receiver.store.engines import get_engine
from receiver.store.models import Submission, WebhookEvent
from tests.helpers import SECRET_KEY, WEBHOOK_KEY, WEBHOOK_SECRET, job_payload

_events = WebhookEvent.__table__  # type: ignore[attr-defined]


class _Quiet(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return


@contextmanager
def serving(app: Flask, port: int = 0) -> Iterator[str]:
    """Serve ``app`` over real HTTP on 127.0.0.1; yield its base URL."""
    server = make_server("127.0.0.1", port, app, threaded=True, request_handler=_Quiet)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.shutdown()
        thread.join()
        get_engine(app).dispose()


Setup = Callable[..., tuple[FlaskCliRunner, str]]


@pytest.fixture
def live(app_config: dict[str, Any]) -> Iterator[Setup]:
    """Return ``setup(**changes)``: a CLI runner and a receiver served on $PORT."""
    stack = ExitStack()

    def setup(**changes: str) -> tuple[FlaskCliRunner, str]:
        config = {**app_config, "PORT": str(free_port()), **changes}
        config = {key: value for key, value in config.items() if value != ""}
        cli_app = create_app(config)
        stack.callback(get_engine(cli_app).dispose)
        url = stack.enter_context(serving(create_app(config), int(config["PORT"])))
        runner = cli_app.test_cli_runner()
        added = runner.invoke(
            args=[
                "submissions",
                "add",
                "sub_1",
                "--user-id",
                "user_1",
                "--input",
                "https://example.com/in.mp4",
                "--job-id",
                "job_abc123",
                "--meta",
                "campaign=spring",
            ]
        )
        assert added.exit_code == 0, added.output
        return runner, url

    with stack:
        yield setup


def show(runner: FlaskCliRunner, submission_id: str = "sub_1") -> dict[str, Any]:
    result = runner.invoke(args=["submissions", "show", submission_id])
    assert result.exit_code == 0, result.output
    shown: dict[str, Any] = json.loads(result.output)
    return shown


def made(output: str) -> str:
    """Return the id of the test submission a trigger run made."""
    match = re.search(r"made test submission (test_[0-9a-f]+)", output)
    assert match is not None, output
    return match.group(1)


def test_trigger_makes_a_test_submission_and_reports_on_it(live: Setup) -> None:
    runner, _ = live()
    real_before = show(runner)
    result = runner.invoke(args=["trigger", "succeeded"])
    assert result.exit_code == 0, result.output
    test_id = made(result.output)
    assert "Standard Webhooks signed" in result.output
    assert '"outcome":"applied"' in result.output.replace(" ", "")
    assert test_id in result.output.split("\n")[-2]  # the answer names it too
    shown = show(runner, test_id)
    assert shown["test"] is True
    assert shown["status"] == "succeeded"
    assert shown["output_url"] == f"https://cdn.example.com/test/{shown['job_id']}.mp4"
    # The real submission is untouched, and the signed token never reaches the terminal.
    assert show(runner) == real_before
    url = runner.invoke(args=["webhook-url", test_id]).output.strip()
    token = url.rsplit("/", 1)[1]
    assert token not in result.output


def test_trigger_to_a_url_without_a_webhook_secret(live: Setup) -> None:
    runner, url = live(ITTYBIT_WEBHOOK_SECRET="", PORT=str(free_port()))
    result = runner.invoke(args=["trigger", "FAILED", "--url", url + "/"])
    assert result.exit_code == 0, result.output
    assert "signed URL only" in result.output
    shown = show(runner, made(result.output))
    assert shown["status"] == "failed"
    assert shown["error"] == "test webhook: job failed"


def test_trigger_again_on_the_same_test_submission(live: Setup) -> None:
    runner, url = live()
    done = runner.invoke(
        args=["trigger", "succeeded", "--output-url", "https://cdn.example.com/x.mp4"]
    )
    assert done.exit_code == 0, done.output
    test_id = made(done.output)
    late = runner.invoke(args=["trigger", "processing", "--submission", test_id, "--url", url])
    assert late.exit_code == 0, late.output
    assert '"outcome":"stale"' in late.output.replace(" ", "")
    shown = show(runner, test_id)
    assert (shown["status"], shown["output_url"]) == ("succeeded", "https://cdn.example.com/x.mp4")


def test_trigger_refuses_a_real_submission_and_sends_nothing(
    live: Setup, api_server: HTTPServer
) -> None:
    runner, _ = live()
    before = show(runner)
    api_server.expect_request("/webhooks/ittybit", method="POST").respond_with_json({})
    result = runner.invoke(
        args=["trigger", "failed", "--submission", "sub_1", "--url", api_server.url_for("/")]
    )
    assert result.exit_code == 1
    assert "sub_1 is a real submission" in result.output
    assert api_server.log == []
    assert show(runner) == before


def test_trigger_exits_non_zero_on_a_refusal(live: Setup, app_config: dict[str, Any]) -> None:
    runner, _ = live()
    # A receiver with other secret keys cannot verify the URL: 401.
    other = create_app({**app_config, "SECRET_KEY": "another-secret-key-0123456789"})
    with serving(other) as other_url:
        result = runner.invoke(args=["trigger", "succeeded", "--url", other_url])
    assert result.exit_code == 1
    assert "the receiver answered 401" in result.output
    assert show(runner, made(result.output))["status"] == "processing"


def test_trigger_reports_unreachable_and_unknown(live: Setup) -> None:
    runner, _ = live()
    closed = f"http://127.0.0.1:{free_port()}"
    unreachable = runner.invoke(args=["trigger", "succeeded", "--url", closed])
    assert unreachable.exit_code == 1
    assert f"could not reach {closed}" in unreachable.output
    unknown = runner.invoke(args=["trigger", "succeeded", "--submission", "test_404"])
    assert unknown.exit_code == 1
    assert "no submission 'test_404'" in unknown.output
    bad = runner.invoke(args=["trigger", "succeeded", "--url", "ftp://x"])
    assert bad.exit_code == 2
    wrong_status = runner.invoke(args=["trigger", "exploded"])
    assert wrong_status.exit_code == 2


def test_test_submissions_are_left_out_of_the_reconciler(
    live: Setup, ittybit_api: HTTPServer
) -> None:
    runner, _ = live()
    test_id = made(runner.invoke(args=["trigger", "processing"]).output)
    job = job_payload("job_abc123", "processing", submission_id="sub_1", user_id="user_1")
    ittybit_api.expect_request(re.compile("^/jobs/.*"), method="GET").respond_with_json(job)
    ittybit_api.expect_request("/events").respond_with_json({"data": [], "has_more": False})
    passed = runner.invoke(args=["reconcile", "--older-than", "0s", "--json"])
    named = runner.invoke(args=["reconcile", "--submission", test_id, "--json"])
    assert passed.exit_code == 0, passed.output
    assert named.exit_code == 0, named.output
    # sub_1 has a real job: it is asked about; the test submission never is.
    assert [entry[0].path for entry in ittybit_api.log] == ["/events", "/jobs/job_abc123"]
    assert json.loads(named.output.splitlines()[-1])["skipped"] == 1


def test_prune_tests_removes_test_submissions_and_their_deliveries(live: Setup) -> None:
    runner, _ = live()
    test_ids = {made(runner.invoke(args=["trigger", status]).output) for status in ("queued",) * 2}
    pruned = runner.invoke(args=["submissions", "prune-tests"])
    assert pruned.exit_code == 0, pruned.output
    assert pruned.output.strip() == "deleted 2 test submission(s)"
    for test_id in test_ids:
        gone = runner.invoke(args=["submissions", "show", test_id])
        assert gone.exit_code == 1
    engine = get_engine(runner.app)
    with engine.connect() as conn:
        kept = conn.execute(sa.select(_events.c.submission_id)).scalars().all()
    assert not set(kept) & test_ids
    assert show(runner)["submission_id"] == "sub_1"


def test_real_submissions_cannot_take_the_test_prefix(runner: FlaskCliRunner) -> None:
    result = runner.invoke(
        args=["submissions", "add", "test_1", "--user-id", "u", "--input", "https://e.com/a.mp4"]
    )
    assert result.exit_code == 1
    assert "must not start with 'test_'" in result.output


def test_build_trigger_signs_url_and_body() -> None:
    settings = Settings.from_env(
        {
            "APP_ENV": "test",
            "SECRET_KEY": SECRET_KEY,
            "ITTYBIT_WEBHOOK_SECRET": WEBHOOK_SECRET,
        }
    )
    submission = Submission(
        submission_id="test_9",
        user_id="test",
        input_url="https://example.com/in.mp4",
        job_id="job_test_9",
        meta={"campaign": "spring", "user_id": "spoofed"},
        is_test=True,
    )
    now = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    request = build_trigger(
        settings, submission, "succeeded", base_url="https://hooks.example.com/", now=now
    )
    payload = json.loads(request.body)
    assert payload["id"] == request.job_id == "job_test_9"
    assert payload["metadata"] == {
        "campaign": "spring",
        "submission_id": "test_9",
        "user_id": "test",
    }
    assert payload["updated_at"] == "2025-01-02T03:04:05Z"
    assert request.url.startswith("https://hooks.example.com/webhooks/ittybit/")
    claims = verify_webhook_token([SECRET_KEY], request.url.rsplit("/", 1)[1])
    assert (claims.submission_id, claims.user_id) == ("test_9", "test")
    msg_id = verify_standard_webhook(
        request.headers, request.body, keys=[WEBHOOK_KEY], now=now.timestamp(), tolerance=5
    )
    assert msg_id == request.headers["webhook-id"]
    assert request.shown_url == "https://hooks.example.com/webhooks/ittybit/…"


def test_build_trigger_refuses_a_real_submission() -> None:
    settings = Settings.from_env({"APP_ENV": "test", "SECRET_KEY": SECRET_KEY})
    real = Submission(submission_id="sub_9", user_id="u", input_url="https://e.com/a.mp4")
    with pytest.raises(ValueError, match="sub_9 is not a test submission"):
        build_trigger(
            settings, real, "failed", base_url="https://h.example.com", now=datetime.now(UTC)
        )
