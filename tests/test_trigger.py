"""``flask --app wsgi trigger``: a signed test webhook to a running receiver, over HTTP."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskCliRunner
from werkzeug.serving import WSGIRequestHandler, make_server

from config.settings import Settings
from devtools.processes import free_port
from receiver import create_app
from receiver.db import get_engine
from receiver.models import Submission
from receiver.signing import verify_standard_webhook, verify_webhook_token
from receiver.trigger import build_trigger
from tests.helpers import SECRET_KEY, WEBHOOK_KEY, WEBHOOK_SECRET


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


def test_trigger_sends_a_signed_webhook_to_the_local_receiver(live: Setup) -> None:
    runner, _ = live()
    result = runner.invoke(args=["trigger", "sub_1", "succeeded"])
    assert result.exit_code == 0, result.output
    assert "Standard Webhooks signed" in result.output
    assert '"outcome":"applied"' in result.output.replace(" ", "")
    shown = show(runner)
    assert shown["status"] == "succeeded"
    assert shown["output_url"] == "https://cdn.example.com/test/job_abc123.mp4"
    # The signed token never reaches the terminal.
    token = shown["webhook_url"].rsplit("/", 1)[1]
    assert token not in result.output


def test_trigger_to_a_url_without_a_webhook_secret(live: Setup) -> None:
    runner, url = live(ITTYBIT_WEBHOOK_SECRET="", PORT=str(free_port()))
    result = runner.invoke(args=["trigger", "sub_1", "FAILED", "--url", url + "/"])
    assert result.exit_code == 0, result.output
    assert "signed URL only" in result.output
    shown = show(runner)
    assert shown["status"] == "failed"
    assert shown["error"] == "test webhook: job failed"


def test_trigger_output_url_and_a_stale_running_state(live: Setup) -> None:
    runner, url = live()
    done = runner.invoke(
        args=["trigger", "sub_1", "succeeded", "--output-url", "https://cdn.example.com/x.mp4"]
    )
    assert done.exit_code == 0, done.output
    late = runner.invoke(args=["trigger", "sub_1", "processing", "--url", url])
    assert late.exit_code == 0, late.output
    assert '"outcome":"stale"' in late.output.replace(" ", "")
    shown = show(runner)
    assert (shown["status"], shown["output_url"]) == ("succeeded", "https://cdn.example.com/x.mp4")


def test_trigger_exits_non_zero_on_a_refusal(live: Setup, app_config: dict[str, Any]) -> None:
    runner, _ = live()
    # A receiver with other secret keys cannot verify the URL: 401.
    other = create_app({**app_config, "SECRET_KEY": "another-secret-key-0123456789"})
    with serving(other) as other_url:
        result = runner.invoke(args=["trigger", "sub_1", "succeeded", "--url", other_url])
    assert result.exit_code == 1
    assert "401" in result.output
    assert "the receiver answered 401" in result.output
    assert show(runner)["status"] == "pending"


def test_trigger_reports_unreachable_and_unknown(live: Setup) -> None:
    runner, _ = live()
    closed = f"http://127.0.0.1:{free_port()}"
    unreachable = runner.invoke(args=["trigger", "sub_1", "succeeded", "--url", closed])
    assert unreachable.exit_code == 1
    assert f"could not reach {closed}" in unreachable.output
    unknown = runner.invoke(args=["trigger", "sub_404", "succeeded"])
    assert unknown.exit_code == 1
    assert "no submission 'sub_404'" in unknown.output
    bad = runner.invoke(args=["trigger", "sub_1", "succeeded", "--url", "ftp://x"])
    assert bad.exit_code == 2
    wrong_status = runner.invoke(args=["trigger", "sub_1", "exploded"])
    assert wrong_status.exit_code == 2


def test_build_trigger_signs_url_and_body() -> None:
    settings = Settings.from_env(
        {
            "APP_ENV": "test",
            "SECRET_KEY": SECRET_KEY,
            "ITTYBIT_WEBHOOK_SECRET": WEBHOOK_SECRET,
        }
    )
    submission = Submission(
        submission_id="sub_9",
        user_id="user_9",
        input_url="https://example.com/in.mp4",
        meta={"campaign": "spring", "user_id": "spoofed"},
    )
    now = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    request = build_trigger(
        settings, submission, "succeeded", base_url="https://hooks.example.com/", now=now
    )
    payload = json.loads(request.body)
    assert payload["id"] == request.job_id
    assert request.job_id.startswith("job_test_")
    assert payload["metadata"] == {
        "campaign": "spring",
        "submission_id": "sub_9",
        "user_id": "user_9",
    }
    assert payload["updated_at"] == "2025-01-02T03:04:05Z"
    assert request.url.startswith("https://hooks.example.com/webhooks/ittybit/")
    claims = verify_webhook_token([SECRET_KEY], request.url.rsplit("/", 1)[1])
    assert (claims.submission_id, claims.user_id) == ("sub_9", "user_9")
    msg_id = verify_standard_webhook(
        request.headers, request.body, keys=[WEBHOOK_KEY], now=now.timestamp(), tolerance=5
    )
    assert msg_id == request.headers["webhook-id"]
    assert request.shown_url == "https://hooks.example.com/webhooks/ittybit/…"
