"""``jobhooks ittybit connect|endpoints|disconnect`` against the stand-in's endpoint resource."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskCliRunner
from pytest_httpserver import HTTPServer

from devtools.standin import DEFAULT_API_KEY, Standin, running

HOOK = "https://hooks.example.com/webhooks/ittybit"


@pytest.fixture
def standin() -> Iterator[Standin]:
    with running() as standin:
        yield standin


@pytest.fixture
def app_config(app_config: dict[str, Any], standin: Standin) -> dict[str, Any]:
    return {**app_config, "ITTYBIT_API_URL": standin.url, "ITTYBIT_API_KEY": DEFAULT_API_KEY}


def connect(runner: FlaskCliRunner, *args: str) -> Any:
    result = runner.invoke(args=["ittybit", "connect", "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_first_run_creates_then_finds_never_a_second(
    runner: FlaskCliRunner, standin: Standin
) -> None:
    first = connect(runner)
    assert first["action"] == "created"
    assert (first["url"], first["status"]) == (HOOK, "active")
    assert first["secret"].startswith("whsec_")
    second = connect(runner)
    assert (second["action"], second["id"]) == ("unchanged", first["id"])
    assert [item["url"] for item in standin.endpoints.listing()] == [HOOK]


def test_the_text_shows_the_secret_and_the_line_to_set_it(runner: FlaskCliRunner) -> None:
    result = runner.invoke(args=["ittybit", "connect", "--url", "https://other.example.com/"])
    assert result.exit_code == 0, result.output
    assert "created endpoint ep_" in result.output
    assert "https://other.example.com/webhooks/ittybit" in result.output
    [secret_line] = [line for line in result.output.splitlines() if "heroku config:set" in line]
    assert secret_line.split("ITTYBIT_WEBHOOK_SECRET=")[1].startswith("whsec_")


def test_topic_drift_is_patched(runner: FlaskCliRunner, standin: Standin) -> None:
    first = connect(runner)
    standin.endpoints.update(first["id"], {"topics": ["task.succeeded"]})
    patched = connect(runner)
    assert (patched["action"], patched["id"]) == ("updated", first["id"])
    assert sorted(patched["topics"]) == sorted(
        ["task.created", "task.updated", "task.succeeded", "task.failed"]
    )
    asked = connect(runner, "--topics", "task.succeeded,run.completed")
    assert asked["action"] == "updated"
    assert standin.endpoints.listing()[0]["topics"] == ["task.succeeded", "run.completed"]
    assert len(standin.endpoints.listing()) == 1


def test_endpoints_lists_and_disconnect_asks(runner: FlaskCliRunner, standin: Standin) -> None:
    made = connect(runner)
    listed = runner.invoke(args=["ittybit", "endpoints"])
    assert listed.exit_code == 0
    assert made["id"] in listed.output and "active" in listed.output
    assert "whsec_" not in listed.output
    kept = runner.invoke(args=["ittybit", "disconnect", made["id"]], input="n\n")
    assert kept.exit_code == 1
    assert len(standin.endpoints.listing()) == 1
    removed = runner.invoke(args=["ittybit", "disconnect", made["id"], "--yes"])
    assert removed.exit_code == 0, removed.output
    assert standin.endpoints.listing() == []


def test_a_wrong_key_says_so(app: Flask, standin: Standin) -> None:
    app.extensions["jobhooks.settings"] = app.extensions["jobhooks.settings"].model_copy(
        update={"ittybit_api_key": "wrong-key"}
    )
    result = app.test_cli_runner().invoke(args=["ittybit", "connect"])
    assert result.exit_code == 1
    assert "ittybit refused the API key (HTTP 401)" in result.output
    assert "ITTYBIT_API_KEY" in result.output
    assert standin.endpoints.listing() == []


@pytest.mark.parametrize("status", [404, 405])
def test_an_api_without_endpoints_says_per_job_urls_are_used(
    app: Flask, api_server: HTTPServer, status: int
) -> None:
    api_server.expect_request("/webhooks/endpoints").respond_with_json(
        {"error": "not_found"}, status=status
    )
    app.extensions["jobhooks.settings"] = app.extensions["jobhooks.settings"].model_copy(
        update={"ittybit_api_url": api_server.url_for("").rstrip("/")}
    )
    result = app.test_cli_runner().invoke(args=["ittybit", "connect"])
    assert result.exit_code == 0, result.output
    assert f"no webhook endpoint resource (HTTP {status})" in result.output
    assert "webhook_url" in result.output
